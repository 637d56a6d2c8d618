"""What ``POST /upload/`` checks before it records an archive, in the order the client learns of
a problem (see docs/upload.md, "What happens" and "Upload by URL")."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from symbolon.accounts.auth import Principal
from symbolon.symbols import archive
from symbolon.uploads import by_url, process, records
from symbolon.uploads.services import UploadServices


class Refused(Exception):
    """The request is answered ``status`` with ``{"error": message}``; nothing is recorded."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Accepted:
    filename: str
    place: records.Placement
    content_hash: str | None  # None for an upload by URL: known once the task has fetched it
    download_url: str | None


async def accept(
    services: UploadServices,
    principal: Principal,
    fields: dict[str, str],
    file_field: str | None,
    staged: Path,
) -> Accepted:
    """Check the received archive (``file_field`` names it, at ``staged``) or the ``url`` field to
    fetch one from, and decide where it goes; Refused with the answer otherwise."""
    texts = [*fields, *fields.values(), file_field or ""]
    if any("\x00" in text for text in texts):
        raise Refused(400, "Form field names and values must not contain NUL characters")
    url = fields.get("url", "").strip()
    if file_field is None and not url:
        raise Refused(400, "Must be multipart form data with at least one file")
    if file_field is None:
        try:
            by_url.FetchPolicy.from_settings(services.settings).check_url(url)
        except by_url.FetchError as exc:
            raise Refused(exc.status, exc.message) from None
    name = file_field if file_field is not None else by_url.archive_name(url)
    if not name.lower().endswith(".zip"):
        extension = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        raise Refused(400, f'Unrecognized archive file extension "{extension}"')
    asked_try = bool(fields.get("try", ""))
    content_hash = None
    if file_field is not None:
        try:
            zf, members = await asyncio.to_thread(process.inspect_file, services, staged)
            zf.close()
        except archive.ArchiveError as exc:
            raise Refused(400, str(exc)) from None
        content_hash = archive.content_hash(members)
    try:
        place = records.placement(
            services.storage, principal, asked_try, fields.get("bucket_name") or None
        )
    except records.NoValidBucket:
        raise Refused(403, "No valid bucket") from None
    return Accepted(
        filename=name,
        place=place,
        content_hash=content_hash,
        download_url=None if file_field is not None else url,
    )
