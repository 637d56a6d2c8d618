"""A streaming reader for upload forms: the first file part goes to disk, fields stay small.

The body of ``POST /upload/`` can be gigabytes; it is parsed chunk by chunk as Tornado receives
it (python-multipart), so memory stays bounded whatever the archive size.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELDS_BYTES = 64 * 1024


class FormError(ValueError):
    """The body is not the multipart form it claims to be."""


class UploadForm:
    """Feed it the body; afterwards ``file_field`` names the first file part, saved at ``path``."""

    def __init__(self, content_type: str, path: Path):
        kind, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise FormError("Must be multipart form data with at least one file")
        self.path = path
        self.fields: dict[str, str] = {}
        self.file_field: str | None = None
        self.file_size = 0
        self._out: BinaryIO | None = None
        self._closed = False
        self._fields_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._part: str | None = None  # "file", "field", or "skip"
        self._name = ""
        self._value = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_val,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormError:
            raise
        except Exception as exc:  # python-multipart raises several kinds
            raise FormError(f"Malformed multipart body: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._parser.finalize()
        finally:
            if self._out is not None:
                self._out.close()
                self._out = None

    # -- parser callbacks --------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        is_file = b"filename" in params
        if is_file and self.file_field is None:
            # The form field name, not the file name, is the archive name (docs/upload.md).
            self.file_field = self._name
            self._out = open(self.path, "wb")  # noqa: SIM115 - closed in _part_end/close
            self._part = "file"
        elif is_file:
            self._part = "skip"  # only the first file part is used
        else:
            self._part = "field"
            self._value = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file" and self._out is not None:
            self._out.write(data[start:end])
            self.file_size += end - start
        elif self._part == "field":
            self._fields_bytes += end - start
            if self._fields_bytes > MAX_FIELDS_BYTES:
                raise FormError("Form fields are too large")
            self._value += data[start:end]

    def _part_end(self) -> None:
        if self._part == "file" and self._out is not None:
            self._out.close()
            self._out = None
        elif self._part == "field":
            self.fields.setdefault(self._name, self._value.decode("utf-8", "replace"))
        self._part = None
