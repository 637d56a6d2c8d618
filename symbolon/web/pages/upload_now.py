"""``/uploads/upload``: upload an archive (or a URL to fetch one from) from the browser.

The form posts to this page, which is ``POST /upload/``'s own handler (handlers/upload.py) with
HTML answers: the body is streamed to staging within ``UPLOAD_MAX_SIZE``, checked and recorded by
the same domain code, and processed by the same task. Two things differ for a browser form: the
CSRF token comes as the form's first field, inside the streamed body, so it is checked once that
field has arrived (and before any file is kept); and the archive is named after the chosen file,
as a browser's file input cannot name its field after it.
"""

from __future__ import annotations

import re
import shlex
import urllib.parse
from pathlib import Path
from typing import Any

from python_multipart.multipart import parse_options_header

from symbolon.accounts import csrf
from symbolon.accounts.auth import authenticate_session
from symbolon.accounts.permissions import Permission
from symbolon.handlers.upload import UploadHandler
from symbolon.uploads.multipart import UploadForm
from symbolon.web.page import TOKEN_PLACEHOLDER, CurlCommand, PageError, PageHandler
from symbolon.web.pages.uploads import UPLOAD_NOW, UPLOAD_PERMISSIONS, UPLOADS

FILE_FIELD = "archive"
NEEDS = "Uploading needs the “Upload symbols” or “Upload try symbols” permission."


class BrowserUploadForm(UploadForm):
    """The upload form of a browser: the archive is named after the chosen file, a file input
    left empty is no file at all (the URL field is used instead), and with ``csrf_expected`` the
    form's CSRF field must have come, and match, before the file: else nothing of it is kept."""

    def __init__(self, content_type: str, path: Path, csrf_expected: str | None):
        super().__init__(content_type, path)
        self.csrf_expected = csrf_expected
        self.csrf_refused = False

    def check_csrf(self) -> None:
        """Compare the CSRF field received so far, once."""
        expected, self.csrf_expected = self.csrf_expected, None
        if expected is not None and not csrf.verify(expected, self.fields.get(csrf.FIELD)):
            self.csrf_refused = True

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        chosen = params.get(b"filename")
        if chosen is None:
            return super()._headers_finished()
        self.check_csrf()
        if self.csrf_refused or self.file_field is not None:
            self._part = "skip"
            return None
        # Some browsers send a path; only its last part names the file.
        name = re.split(r"[\\/]", chosen.decode("utf-8", "replace"))[-1].strip()
        if not name:
            self._part = "skip"
            return None
        super()._headers_finished()
        self.file_field = name
        return None


class UploadNowPage(UploadHandler, PageHandler):
    """``GET``: the form; ``POST``: the upload, answered with the upload's page (303) or the
    form again with the server's message."""

    title = "Upload now"
    nav = UPLOADS
    # The session's CSRF token, while the form's field that must match it has not arrived.
    csrf_expected: str | None = None

    async def prepare(self) -> None:
        if self.request.method != "POST":
            return await PageHandler.prepare(self)
        await super().prepare()
        if self.form is not None and not self._finished:
            # Nothing is parsed yet: the same place, read the browser's way.
            content_type = self.request.headers.get("Content-Type", "")
            self.form = BrowserUploadForm(content_type, self.form.path, self.csrf_expected)

    async def _authenticate_session(self, cookie: str) -> None:
        if self.request.method != "POST" or self.request.headers.get(csrf.HEADER) is not None:
            return await super()._authenticate_session(cookie)
        principal = await authenticate_session(self.runtime.db, self.runtime.sessions, cookie)
        if principal is None or principal.session is None:
            return None
        await self._refuse_blocked(principal)
        self.principal = principal
        self.csrf_expected = principal.session.csrf_token
        return None

    def data_received(self, chunk: bytes) -> None:
        super().data_received(chunk)
        form = self.form
        if isinstance(form, BrowserUploadForm) and form.csrf_refused and self.rejection is None:
            self.rejection = (403, csrf.FAILURE)
            self._discard()

    async def post(self) -> None:
        if self.csrf_expected is not None and not self._finished and self.rejection is None:
            # A form without a file part, or one sent urlencoded: its fields decide.
            if isinstance(self.form, BrowserUploadForm):
                self.form.check_csrf()
                refused = self.form.csrf_refused
            else:
                fields = dict(_pairs(bytes(self.urlencoded or b"")))
                refused = not csrf.verify(self.csrf_expected, fields.get(csrf.FIELD))
            if refused:
                self.rejection = (403, csrf.FAILURE)
        await super().post()

    async def get(self) -> None:
        self.require(*UPLOAD_PERMISSIONS)
        self.show()

    def show(self, status: int = 200, error: str | None = None, values: dict | None = None) -> None:
        site = f"{self.request.protocol}://{self.request.host}"
        self.curl_commands.append(
            CurlCommand(
                "Upload an archive (the form field's name is the archive's name; add -F try=1 "
                "for try symbols):",
                shlex.join(
                    [
                        "curl",
                        "-H",
                        f"Auth-Token: {TOKEN_PLACEHOLDER}",
                        "-F",
                        "symbols.zip=@symbols.zip",
                        f"{site}/upload/",
                    ]
                ),
            )
        )
        self.curl(
            "/upload/",
            "Upload by URL (the server fetches the archive):",
            auth=True,
            method="POST",
            form={"url": "https://example.com/symbols.zip"},
        )
        self.page(
            "upload_now.html",
            status=status,
            error=error,
            values=values or {},
            max_size=self.runtime.settings.upload_max_size,
            file_field=FILE_FIELD,
            try_only=self.principal is not None
            and not self.principal.has(Permission.UPLOAD_SYMBOLS),
        )

    # -- the upload handler's answers, for a browser

    def write_json(self, data: Any, status: int = 200) -> None:
        for header in ("Location", "Preference-Applied"):
            self.clear_header(header)
        upload = data.get("upload") if isinstance(data, dict) else None
        if status in (201, 202) and isinstance(upload, dict):
            if status == 201:
                self.flash("Uploaded and processed.", "success")
            else:
                self.flash("Uploaded. It is still being processed: reload to see how it goes.")
            return self.redirect(f"{UPLOADS}upload/{upload['id']}", status=303)
        message = data.get("error") if isinstance(data, dict) else None
        message = str(message or "The upload did not succeed.")
        if status == 403 and (self.principal is None or message == csrf.FAILURE):
            if message != csrf.FAILURE:
                message = "Sign in first."
            return self.send_error(403, exc_info=(PageError, PageError(403, message), None))
        if status == 403 and message == "Forbidden":
            return self.send_error(403, exc_info=(PageError, PageError(403, NEEDS), None))
        fields = self.form.fields if self.form is not None else {}
        if self.urlencoded is not None:
            fields = dict(_pairs(bytes(self.urlencoded)))
        values = {"url": fields.get("url", ""), "try": bool(fields.get("try"))}
        self.show(status=status, error=message, values=values)

    def allowed_methods(self) -> list[str]:
        return ["GET", "POST"]


def _pairs(body: bytes) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


ROUTES = [(UPLOAD_NOW, UploadNowPage)]
