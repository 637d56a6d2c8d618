"""A crash report's body: header checks and the multipart parse (docs/crashes.md).

The outcomes are the reference's (Falcon's parser), not a lenient streaming parser's: CRLF line
breaks only, the closing delimiter required, at most 8 KiB of headers per part. The parse runs on
the whole received body (bytes, or a memory-mapped spool file), so dumps are views, not copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("symbolon.crashes")

MEDIA_TYPES = ("multipart/form-data", "multipart/mixed")
MAX_BOUNDARY = 70
MAX_PART_HEADERS = 8 * 1024
MAX_TEXT_VALUE = 20 * 1024 * 1024
MAX_DUMP_NAME = 30
RESERVED_DUMP_NAMES = {"dump_names", "processed_crash", "raw_crash"}
# The names stored under v1/dump/<id>: a report with two of them would lose one.
MAIN_DUMP_ALIASES = frozenset({"upload_file_minidump", "dump", ""})
_NOT_DUMP_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


class Malformed(Exception):
    """The report is discarded with ``400 Discarded=malformed_<reason>``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


def boundary_of(content_type: str | None) -> str:
    """The multipart boundary of a request's Content-Type, checked as the reference does."""
    if not content_type:
        raise Malformed("no_content_type")
    media, _, params = content_type.partition(";")
    if media.strip() not in MEDIA_TYPES:
        raise Malformed("wrong_content_type")
    params = params.strip()
    if not params.startswith("boundary="):
        raise Malformed("no_boundary")
    boundary = params[len("boundary=") :].split(";", 1)[0].strip()
    if len(boundary) >= 2 and boundary[0] == boundary[-1] == '"':
        boundary = boundary[1:-1]
    if not boundary or len(boundary) > MAX_BOUNDARY:
        raise Malformed("no_boundary")
    return boundary


def dump_key_segment(name: str) -> str:
    """The key segment of a dump in S3: the reference stores the main minidump as ``dump``."""
    return "dump" if name in MAIN_DUMP_ALIASES else name


def sanitize_dump_name(name: str) -> str:
    return _NOT_DUMP_NAME_CHARS.sub("", name)[:MAX_DUMP_NAME]


def is_dump_name(name: str) -> bool:
    """Whether ``name`` is one a dump can be stored under."""
    return name == sanitize_dump_name(name) and name not in RESERVED_DUMP_NAMES


_HEADER_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_QUOTED_PAIR = re.compile(r"\\(.)")


def split_header_params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="a;b"; filename=x`` → ("form-data", {...}); quotes may hide ``;``."""
    kind = value.partition(";")[0]
    params: dict[str, str] = {}
    for match in _HEADER_PARAM.finditer(value, len(kind)):
        raw = match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
            if "\\" in raw:
                raw = _QUOTED_PAIR.sub(r"\1", raw)
        params[match.group(1).lower()] = raw
    return kind.strip(), params


@dataclass
class Payload:
    """What a report carried: annotations, dumps (views into the body) and parse notes."""

    annotations: dict[str, Any] = field(default_factory=dict)
    dumps: dict[str, memoryview] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    has_json: bool = False
    _checksums: dict[str, str] | None = field(default=None, repr=False)

    def checksums(self) -> dict[str, str]:
        """SHA-256 of each dump (the reference's docs say MD5; its code uses SHA-256)."""
        if self._checksums is None:
            self._checksums = {
                name: hashlib.sha256(data).hexdigest() for name, data in self.dumps.items()
            }
        return self._checksums


@dataclass(frozen=True)
class PartInfo:
    """What a part's headers say: its name, whether it has a file name, its content type."""

    name: str | None
    has_filename: bool
    content_type: str
    charset: str


# A client sends the same part headers every time: parsing each distinct block once makes the
# parse of a 20-field report several times cheaper. Bounded, so odd clients cannot grow it.
@functools.lru_cache(maxsize=4096)
def part_info(blob: bytes) -> PartInfo:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        text = blob.decode("latin-1")
    headers: dict[str, str] = {}
    for line in text.split("\r\n") if text else ():
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise Malformed("invalid_payload_structure", f"bad part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    _, disposition = split_header_params(headers.get("content-disposition", ""))
    content_type = headers.get("content-type") or "text/plain"
    return PartInfo(
        name=disposition.get("name"),
        has_filename=bool(disposition.get("filename")),
        content_type=content_type,
        charset=split_header_params(content_type)[1].get("charset") or "utf-8",
    )


def iter_parts(body: Any, boundary: str) -> Iterator[tuple[bytes, memoryview]]:
    """Yield (header block, value view) for each part; Malformed when the structure is wrong."""
    view = memoryview(body)
    delimiter = b"--" + boundary.encode("latin-1")
    next_delimiter = b"\r\n" + delimiter
    pos = body.find(delimiter)  # anything before it is preamble
    if pos < 0:
        raise Malformed("invalid_payload_structure", "no boundary delimiter in the body")
    while True:
        pos += len(delimiter)
        after = body[pos : pos + 2]
        if after == b"--":
            return  # the closing delimiter: the epilogue is ignored
        if after != b"\r\n":
            raise Malformed("invalid_payload_structure", "delimiter not followed by CRLF")
        pos += 2
        if body[pos : pos + 2] == b"\r\n":
            headers_blob, value_start = b"", pos + 2
        else:
            end = body.find(b"\r\n\r\n", pos, pos + MAX_PART_HEADERS + 4)
            if end < 0:
                raise Malformed("invalid_payload_structure", "part headers too long or unended")
            headers_blob, value_start = bytes(body[pos:end]), end + 4
        value_end = body.find(next_delimiter, value_start)
        if value_end < 0:
            raise Malformed("invalid_payload_structure", "part not ended by a delimiter")
        yield headers_blob, view[value_start:value_end]
        pos = value_end + 2


def parse(body: Any, boundary: str, query: Mapping[str, str] | None = None) -> Payload:
    """Classify the parts of a report; the first problem in body order decides.

    ``query`` holds annotations from the URL's query string, which Crashpad clients use
    (``?product=...&version=...``): they count as text fields placed before the body's."""
    payload = Payload(annotations=dict(query or {}))
    text_annotations = 0  # in the body: a JSON part replaces the query's fields anyway
    for headers_blob, value in iter_parts(body, boundary):
        part = part_info(headers_blob)
        name = part.name
        if not name:
            continue
        content_type = part.content_type
        if content_type.startswith("application/json"):
            payload.annotations = _json_annotations(value)
            payload.has_json = True
        elif content_type.startswith("text/plain") and not part.has_filename:
            text = _text_value(value, part.charset, payload.notes)
            if text is not None:
                payload.annotations[name] = text
                text_annotations += 1
        else:
            _add_dump(payload, name, content_type, value)
    if payload.has_json and text_annotations:
        note = "includes annotations in both json-encoded extra and formdata parts"
        logger.info(note)
        payload.notes.append(note)
    return payload


def _json_annotations(value: memoryview) -> dict[str, Any]:
    try:
        parsed = json.loads(bytes(value).decode("utf-8"))
    # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting is a RecursionError.
    except (ValueError, RecursionError):
        raise Malformed("invalid_json") from None
    if not isinstance(parsed, dict):
        raise Malformed("invalid_json_value")
    return parsed


def _text_value(value: memoryview, charset: str, notes: list[str]) -> str | None:
    if len(value) > MAX_TEXT_VALUE:
        problem = "body part is too large"
    else:
        try:
            # bytes.decode refuses bytes-to-bytes codecs such as charset=base64.
            return bytes(value).decode(charset)
        except (LookupError, ValueError):
            problem = f"invalid text or charset: {charset}"
    note = f"extract payload text part exception: {problem}"
    logger.error(note)
    notes.append(note)
    return None


def _add_dump(payload: Payload, name: str, content_type: str, value: memoryview) -> None:
    clean = sanitize_dump_name(name)
    if clean in RESERVED_DUMP_NAMES:
        raise Malformed("invalid_dump_name", f"reserved dump name {clean!r}")
    if clean in MAIN_DUMP_ALIASES and any(
        other in payload.dumps for other in MAIN_DUMP_ALIASES - {clean}
    ):
        raise Malformed("invalid_dump_name", "two dumps would be stored as v1/dump/<id>")
    if content_type != "application/octet-stream":
        note = f"unknown content type: {name} {content_type}"
        logger.info(note)
        payload.notes.append(note)
    payload.dumps.pop(clean, None)  # the last one wins, in the order of the body
    payload.dumps[clean] = value
