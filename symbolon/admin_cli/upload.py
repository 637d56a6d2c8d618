"""``symbolon upload PATH``: send a symbol archive to ``POST /upload/`` (docs/upload.md).

PATH is a ``.zip`` file, or a directory in the Breakpad layout (``<module>/<debug_id>/<file>``)
that is zipped into a temporary file first. The archive is streamed from disk as a
``multipart/form-data`` body with a known ``Content-Length``, so memory stays small whatever its
size. Only the standard library is used, so the client needs nothing beyond Symbolon's own
dependencies.

Connection errors and 408, 429 and every 5xx answer are retried with exponential back-off;
other 4xx answers are final (docs/upload.md, "The client").
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT = 600.0  # the server waits up to UPLOAD_WAIT_SECONDS (300 s) before a 202
DEFAULT_RETRY_DELAY = 2.0
MAX_RETRY_DELAY = 60.0
RETRY_4XX = frozenset({408, 429})
CHUNK_SIZE = 256 * 1024
DIRECTORY_FIELD = "symbols.zip"
TEMP_PREFIX = "symbolon-upload-"


def retryable(status: int) -> bool:
    """408, 429 and any 5xx: the server may well take the same archive later (507 included)."""
    return status in RETRY_4XX or 500 <= status <= 599


class UploadError(Exception):
    """A problem on the client's side (bad PATH, bad URL): reported without contacting anyone."""


# -- the archive --------------------------------------------------------------------------------


def build_archive(directory: str | os.PathLike[str], tmp_dir: str | None = None) -> Path:
    """Zip ``directory`` (``<module>/<debug_id>/<file>``) into a new temporary file; return it.

    Members are written from disk one at a time (ZIP_DEFLATED), never held in memory. The caller
    deletes the file. Member names are the POSIX paths relative to ``directory``; the server
    decides what is acceptable, but a directory with no file three levels deep is refused here.
    """
    root = Path(directory)
    files: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file():
                files.append((path, path.relative_to(root).as_posix()))
    if not any(arcname.count("/") == 2 for _, arcname in files):
        raise UploadError(
            f"{root} holds no <module>/<debug_id>/<file> files (e.g. xul.pdb/44E4…/xul.sym)"
        )
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".zip", dir=tmp_dir)
    target = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, arcname in files:
                zf.write(path, arcname)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


# -- the multipart body -------------------------------------------------------------------------


def _quote(value: str) -> str:
    """A form-data parameter value: quotes and line breaks escaped as browsers do (WHATWG)."""
    return value.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


class MultipartBody:
    """``multipart/form-data`` framing around one file on disk, produced in chunks.

    Plain fields come first, then the file part, whose form field name is ``field_name`` (the
    archive name the server uses). ``length`` is known up front for ``Content-Length``.
    """

    def __init__(
        self, path: str | os.PathLike[str], field_name: str, fields: dict[str, str] | None = None
    ):
        self.path = Path(path)
        self.boundary = uuid.uuid4().hex
        head = bytearray()
        for name, value in (fields or {}).items():
            head += (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
            ).encode()
            head += value.encode() + b"\r\n"
        quoted = _quote(field_name)
        head += (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{quoted}"; filename="{quoted}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        self.head = bytes(head)
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.file_size = self.path.stat().st_size
        self.length = len(self.head) + self.file_size + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        yield self.head
        with self.path.open("rb") as f:
            while chunk := f.read(size):
                yield chunk
        yield self.tail


# -- progress -----------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Bytes sent / total on ``stream``: a redrawn bar on a terminal, else a line per 10%."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None):
        self.total = max(total, 1)
        self.stream = stream
        self.sent = 0
        self.tty = bool(stream is not None and stream.isatty())
        self._decile = 0
        self._drawn = -1.0

    def update(self, n: int) -> None:
        self.sent += n
        if self.stream is None:
            return
        fraction = min(self.sent / self.total, 1.0)
        if self.tty:
            now = time.monotonic()
            if fraction < 1.0 and now - self._drawn < 0.1:
                return
            self._drawn = now
            filled = int(self.WIDTH * fraction)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {_size(self.sent)} / {_size(self.total)} {fraction:4.0%}")
            if fraction >= 1.0:
                self.stream.write("\n")
        else:
            decile = int(fraction * 10)
            if decile > self._decile:
                self._decile = decile
                self.stream.write(f"sent {decile * 10}% ({self.sent} / {self.total} bytes)\n")
        self.stream.flush()

    def abort(self) -> None:
        if self.stream is not None and self.tty and self.sent < self.total:
            self.stream.write("\n")
            self.stream.flush()


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def error(self) -> str:
        """The server's ``error`` message, or the start of whatever it sent instead."""
        data = self.json()
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
        text = self.body.decode("utf-8", "replace").strip()
        return text[:300] or self.reason or f"HTTP {self.status}"


@dataclass
class Outcome:
    """What ``post_with_retries`` ended with: the last response (if any) and how it got there."""

    response: Response | None
    attempts: int
    errors: list[str] = field(default_factory=list)

    @property
    def retries_exhausted(self) -> bool:
        return self.response is None or retryable(self.response.status)


def upload_url(base_url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadError(f"not an http(s) URL: {base_url!r}")
    return parts._replace(path=parts.path.rstrip("/") + "/upload/", query="", fragment="")


def post_once(
    url: str,
    token: str,
    body: MultipartBody,
    timeout: float = DEFAULT_TIMEOUT,
    progress_stream: TextIO | None = None,
) -> Response:
    """One ``POST <url>/upload/`` streaming ``body``; raises OSError/HTTPException on failure."""
    target = upload_url(url)
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(
            target.hostname or "",
            target.port,
            timeout=timeout,
            context=ssl.create_default_context(),
        )
    else:
        conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=timeout)
    progress = Progress(body.length, progress_stream)
    try:
        conn.putrequest("POST", target.path)
        conn.putheader("Auth-Token", token)
        conn.putheader("Content-Type", body.content_type)
        conn.putheader("Content-Length", str(body.length))
        conn.putheader("Accept", "application/json")
        conn.putheader("User-Agent", "symbolon-upload")
        conn.endheaders()
        try:
            for chunk in body.chunks():
                conn.send(chunk)
                progress.update(len(chunk))
        except OSError as send_error:
            # The server may answer before reading everything (a 413 from the headers alone)
            # and close: its answer, when it can still be read, says more than a broken pipe.
            progress.abort()
            try:
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException):
                raise send_error from None
        else:
            raw = conn.getresponse()
        return Response(
            status=raw.status,
            reason=raw.reason,
            headers={k.lower(): v for k, v in raw.getheaders()},
            body=raw.read(),
        )
    finally:
        conn.close()


def _retry_after(response: Response | None) -> float | None:
    value = (response.headers.get("retry-after") if response else None) or ""
    return float(value) if value.strip().isdigit() else None


def post_with_retries(
    url: str,
    token: str,
    archive: str | os.PathLike[str],
    field_name: str,
    *,
    try_symbols: bool = False,
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    max_delay: float = MAX_RETRY_DELAY,
    progress_stream: TextIO | None = None,
    log: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """POST ``archive`` as ``field_name``; retry connection errors and 408/429/5xx.

    Makes at most ``retries + 1`` attempts, waiting ``retry_delay``, twice that, four times
    that… (at most ``max_delay``, or longer if the server's ``Retry-After`` asks for it, within
    ``max_delay``) between them. Any other answer (201, 202, 4xx) ends it at once.
    """
    upload_url(url)  # a bad URL is the caller's mistake, not something to retry
    body = MultipartBody(archive, field_name, {"try": "1"} if try_symbols else None)
    outcome = Outcome(response=None, attempts=0)
    for attempt in range(retries + 1):
        outcome.attempts = attempt + 1
        try:
            response = post_once(url, token, body, timeout, progress_stream)
        except (OSError, http.client.HTTPException) as exc:
            outcome.response = None
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            outcome.response = response
            if not retryable(response.status):
                return outcome
            problem = f"HTTP {response.status} {response.reason}: {response.error}"
        outcome.errors.append(problem)
        if attempt == retries:
            break
        delay = min(retry_delay * 2**attempt, max_delay)
        asked = _retry_after(outcome.response)
        if asked is not None:
            delay = max(delay, min(asked, max_delay))
        if log is not None:
            left = retries - attempt
            log(f"attempt {attempt + 1} failed ({problem}); retrying in {delay:g} s, {left} left")
        sleep(delay)
    return outcome


def upload_path(
    path: str | os.PathLike[str],
    url: str,
    token: str,
    *,
    tmp_dir: str | None = None,
    **options: Any,
) -> Outcome:
    """Upload a ``.zip`` file, or a directory zipped on the fly (temporary file, then deleted).

    ``options`` are those of :func:`post_with_retries`.
    """
    source = Path(path)
    upload_url(url)
    if source.is_dir():
        archive = build_archive(source, tmp_dir)
        try:
            return post_with_retries(url, token, archive, DIRECTORY_FIELD, **options)
        finally:
            archive.unlink(missing_ok=True)
    if not source.is_file():
        raise UploadError(f"{source} is neither a .zip file nor a directory")
    if not source.name.lower().endswith(".zip"):
        raise UploadError(f"{source} is not a .zip file (or a directory to zip)")
    return post_with_retries(url, token, source, source.name, **options)


# -- the command --------------------------------------------------------------------------------


def _report(outcome: Outcome, url: str) -> int:
    """Print what happened; return the exit code (0 done, 1 refused, 2 retries exhausted)."""
    response = outcome.response
    if outcome.retries_exhausted:
        last = outcome.errors[-1] if outcome.errors else "no answer"
        click.echo(f"error: giving up after {outcome.attempts} attempt(s); last: {last}", err=True)
        return 2
    assert response is not None
    data = response.json()
    if response.status == 201 and isinstance(data, dict):
        upload = data.get("upload") or {}
        skipped = upload.get("skipped_keys") or []
        kind = "try " if upload.get("try_symbols") else ""
        click.echo(f"upload id: {upload.get('id')}")
        click.echo(f"skipped: {len(skipped)} file(s) already stored")
        click.echo(
            f"uploaded {upload.get('filename')} ({upload.get('size')} bytes) as {kind}symbols "
            f"to bucket {upload.get('bucket')} for {upload.get('user')}"
        )
        return 0
    if response.status == 202:
        body = data if isinstance(data, dict) else {}
        location = response.headers.get("location") or body.get("status_url") or ""
        click.echo(f"upload id: {(body.get('upload') or {}).get('id')}")
        status_url = urllib.parse.urljoin(url.rstrip("/") + "/", location) if location else "-"
        click.echo(f"accepted, still processing; status: {status_url}")
        return 0
    click.echo(f"error: HTTP {response.status}: {response.error}", err=True)
    return 1


@click.command("upload")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--url",
    envvar="SYMBOLON_URL",
    default=DEFAULT_URL,
    help="Server base URL (default SYMBOLON_URL, else http://127.0.0.1:8000).",
)
@click.option("--token", envvar="SYMBOLON_TOKEN", help="API token (default SYMBOLON_TOKEN).")
@click.option("--try", "try_symbols", is_flag=True, help="Upload as try symbols (try=1).")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=DEFAULT_RETRIES,
    show_default=True,
    help="Retries after connection errors and 408, 429 and 5xx answers.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait on the network before an attempt fails.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=DEFAULT_RETRY_DELAY,
    show_default=True,
    help="First back-off in seconds; doubled after each failure, at most 60.",
)
def upload_command(
    path: Path,
    url: str,
    token: str | None,
    try_symbols: bool,
    retries: int,
    timeout: float,
    retry_delay: float,
) -> None:
    """Upload symbols: PATH is a .zip, or a directory of <module>/<debug_id>/<file> to zip.

    Exits 0 when the server stored the archive (201) or is still processing it (202), 1 when it
    refused it (4xx, its message printed), 2 when retries are exhausted.
    """
    if not token:
        raise click.ClickException("no upload token: pass --token or set SYMBOLON_TOKEN")
    try:
        outcome = upload_path(
            path,
            url,
            token,
            try_symbols=try_symbols,
            retries=retries,
            timeout=timeout,
            retry_delay=retry_delay,
            progress_stream=sys.stderr,
            log=lambda line: click.echo(line, err=True),
        )
    except UploadError as exc:
        raise click.ClickException(str(exc)) from exc
    code = _report(outcome, url)
    if code:
        click.get_current_context().exit(code)
