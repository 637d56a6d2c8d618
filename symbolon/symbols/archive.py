"""Validating an uploaded symbol archive and preparing its members for storage.

See docs/upload.md, "What happens": validation and its messages, compression, metadata, ``.sym``
headers and ``content_hash``. Archives come from anyone holding an upload token, so on top of
Tecken's rules this refuses what could hurt us: path tricks, encrypted or exotic members,
and zip bombs (declared sizes are checked up front, per member and for the whole archive, member
data may not overlap, and sizes are never trusted while inflating).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import itertools
import os
import posixpath
import re
import struct
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Collection, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from symbolon.symbols import native
from symbolon.symbols.keys import has_invalid_characters

BAD_ZIP = "File is not a zip file"  # the zip library's message, which clients have seen for years
UNRECOGNIZED = (
    "Unrecognized file pattern. Should only be <module>/<hex>/<file> or <name>-symbols.txt "
    "and nothing else. (First unrecognized pattern was {})"
)
HEX = re.compile(r"[0-9A-Fa-f]+")
RATIO_FLOOR = 1 << 20  # small members can't hurt, whatever their ratio
TOTAL_RATIO_FLOOR = 16 << 20  # nor can small archives: inflating this much is cheap
# A member's local header (APPNOTE 4.3.7): signature … file name length, extra field length.
LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
LOCAL_SIGNATURE = b"PK\x03\x04"
HEAD_SIZE = 64 << 10  # .sym headers are a few hundred bytes; this is plenty
MAX_HEADER_FIELD = 1024  # longer values are garbage, and would not fit a database index
# bzip2 and LZMA are inflated by zipfile without an output bound (one small read can expand
# to gigabytes), and symbol upload tools only ever write stored or deflated members.
SUPPORTED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# What a broken or hostile member raises while being inflated (bad CRC, bad deflate data…).
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


class ArchiveError(ValueError):
    """A 400 for the uploader; str(exc) is the exact message the client gets."""


@dataclass(frozen=True)
class Limits:
    max_members: int = 100_000  # regular-file members
    max_total_size: int = 20 * 1024**3  # sum of declared uncompressed sizes, bytes
    # Declared uncompressed / compressed size, per member over RATIO_FLOOR, and the distinct
    # members' total / the archive's size, for archives inflating over TOTAL_RATIO_FLOOR.
    max_ratio: float = 200.0


@dataclass(frozen=True)
class Member:
    name: str  # path exactly as in the zip
    key: str  # the key to store under: the debug id directory upper-cased
    size: int  # declared uncompressed size
    ignored: bool  # a -symbols.txt or a .DS_Store: not stored, reported in ignored_keys
    # Not at <module>/<hex>/<file> but starting like a native file: stored only if its content
    # turns out to be one, under the keys that content gives (key is then its name).
    candidate: bool = False


@dataclass(frozen=True)
class SymHeader:
    debug_filename: str | None = None
    debug_id: str | None = None
    code_file: str | None = None
    code_id: str | None = None
    generator: str | None = None


@dataclass(frozen=True)
class Prepared:
    path: Path  # temp file holding the bytes to PUT; the caller deletes it
    size: int  # bytes in path
    compressed: bool
    original_size: int
    original_md5: str  # hex md5 of the uncompressed bytes
    header: SymHeader | None  # parsed for .sym members, else None


def open_archive(path: str | os.PathLike[str]) -> zipfile.ZipFile:
    """Open an uploaded archive; anything the zip library can't read is the client's fault."""
    try:
        return zipfile.ZipFile(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # our own staging went wrong: a 500, not a 400
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as exc:
        raise ArchiveError(BAD_ZIP) from exc  # a truncated or hand-made file can raise any of these


def inspect(
    zf: zipfile.ZipFile,
    disallowed_snippets: Sequence[str] = ("qcom/proprietary",),
    limits: Limits = Limits(),
) -> list[Member]:
    """The regular-file members of an archive, or ArchiveError for the first rule broken.

    Safety checks run over all entries first (names, encryption, method, duplicates, limits),
    then Tecken's per-member rules (snippets, invalid characters, accepted shapes).
    """
    sizes: dict[str, int] = {}
    entries = total = 0
    for info in zf.infolist():
        if info.is_dir():
            continue
        entries += 1
        if entries > limits.max_members:
            raise ArchiveError(
                f"Archive contains more than {limits.max_members} files; "
                "split it into several uploads"
            )
        name = info.filename
        _check_entry(info, limits)
        if name in sizes:
            if info.file_size != sizes[name]:
                raise ArchiveError(
                    f"The zipfile buffer contains two files both called {name} and they have "
                    f"difference sizes ({info.file_size} != {sizes[name]})"
                )
            continue
        sizes[name] = info.file_size
        total += info.file_size  # only distinct members are inflated: duplicates count once
        if total > limits.max_total_size:
            raise ArchiveError(
                f"Archive contents are too large: more than {limits.max_total_size} bytes "
                "uncompressed; split it into several uploads"
            )
    if not sizes:
        raise ArchiveError("Archive contains no files")
    size = _check_layout(zf)
    # Many members under the per-member floor add up: bound the whole against the archive too.
    if total > max(TOTAL_RATIO_FLOOR, limits.max_ratio * size):
        raise ArchiveError(
            f"Archive contents inflate {total / max(size, 1):.0f} times the archive's size "
            f"(the limit is {limits.max_ratio:g}); it looks like a zip bomb"
        )

    members: list[Member] = []
    keys: dict[str, str] = {}
    for name, size in sizes.items():
        member = _member(name, size, disallowed_snippets)
        if member.candidate:
            # Only a native file may lie elsewhere: its first bytes must say it may be one.
            if not native.looks_native(_peek(zf, name, native.HEAD_BYTES)):
                raise ArchiveError(UNRECOGNIZED.format(name))
            if has_invalid_characters(name.rsplit("/", 1)[-1]):
                raise ArchiveError(f"Invalid character in filename '{name}'")
            members.append(member)
            continue
        other = keys.setdefault(member.key, name)
        if other != name:  # e.g. xul.pdb/abc/… and xul.pdb/ABC/…: one would overwrite the other
            raise ArchiveError(
                f"Archive members '{other}' and '{name}' would both be stored as '{member.key}'"
            )
        members.append(member)
    return members


def _check_entry(info: zipfile.ZipInfo, limits: Limits) -> None:
    """Rules Tecken lacks: names that are tricks, members we can't or won't inflate."""
    name = info.filename
    if "\x00" in info.orig_filename:  # zipfile silently cuts the name at the NUL
        shown = info.orig_filename.replace("\x00", "\\x00")
        raise ArchiveError(f"Archive member name '{shown}' contains a NUL character")
    if "\\" in name:
        raise ArchiveError(f"Archive member '{name}' contains a backslash; use '/' in paths")
    if name.startswith("/"):
        raise ArchiveError(f"Archive member '{name}' is an absolute path; use relative paths")
    if ".." in name.split("/"):
        raise ArchiveError(f"Archive member '{name}' contains a '..' path segment")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"Archive member '{name}' is encrypted; upload an unencrypted zip")
    if info.compress_type not in SUPPORTED_METHODS:
        raise ArchiveError(
            f"Archive member '{name}' uses compression method {info.compress_type}; "
            "only stored and deflated members are accepted"
        )
    if info.file_size > RATIO_FLOOR:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise ArchiveError(
                f"Archive member '{name}' inflates {ratio:.0f} times (the limit is "
                f"{limits.max_ratio:g}); it looks like a zip bomb"
            )


def _check_layout(zf: zipfile.ZipFile) -> int:
    """The archive's size, once every entry's local header and data are found to lie inside it
    and apart from all others.

    An overlapping zip bomb points many entries at the same bytes (each one's data quoting the
    next ones' headers), so a small archive inflates many times over with innocent ratios.
    """
    fp = zf.fp
    assert fp is not None  # an open archive, read mode
    size = fp.seek(0, os.SEEK_END)
    spans: list[tuple[int, int, str]] = []
    for info in zf.infolist():
        raw = b""
        if info.header_offset >= 0:  # a central directory that lies about its place gives < 0
            fp.seek(info.header_offset)
            raw = fp.read(LOCAL_HEADER.size)
        if len(raw) < LOCAL_HEADER.size or raw[:4] != LOCAL_SIGNATURE:
            raise ArchiveError(
                f"Archive member '{info.filename}' is corrupt: its local header is missing"
            )
        fields = LOCAL_HEADER.unpack(raw)
        end = info.header_offset + LOCAL_HEADER.size + fields[10] + fields[11] + info.compress_size
        if end > size:
            raise ArchiveError(
                f"Archive member '{info.filename}' is corrupt: its data runs past the end of the "
                "archive"
            )
        spans.append((info.header_offset, end, info.filename))
    spans.sort()
    # Sorted by start, any overlap shows between neighbours.
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise ArchiveError(
                f"Archive members '{first}' and '{second}' overlap (they share bytes of the "
                "archive); it looks like a zip bomb"
            )
    return size


def _member(name: str, size: int, disallowed_snippets: Sequence[str]) -> Member:
    """Tecken's rules for member paths (snippets, characters, shape) and the storage key."""
    for snippet in disallowed_snippets:
        if snippet in name:
            raise ArchiveError(
                f"Content of archive file contains the snippet '{snippet}' which is not allowed"
            )
    parts = name.split("/")
    # These are listed in ignored_keys; -symbols.txt wherever it is, as Tecken does.
    ignored = parts[-1] == ".DS_Store" or name.lower().endswith("-symbols.txt")
    if parts[-1] == ".DS_Store":
        return Member(name, name, size, ignored)
    if len(parts) == 3:
        if has_invalid_characters(parts[0], parts[2]):
            raise ArchiveError(f"Invalid character in filename '{name}'")
        # fullmatch: "ABC\n" must not pass, as it did with $. Else a native file may lie there.
        if HEX.fullmatch(parts[1]):
            key = name if ignored else f"{parts[0]}/{parts[1].upper()}/{parts[2]}"
            return Member(name, key, size, ignored)
    if len(parts) == 1 and ignored:
        return Member(name, name, size, ignored)
    if ignored:
        raise ArchiveError(UNRECOGNIZED.format(name))
    return Member(name, name, size, ignored, candidate=True)


def _peek(zf: zipfile.ZipFile, name: str, size: int) -> bytes:
    """The first ``size`` bytes of a member (inflating no more than that)."""
    try:
        with zf.open(name) as src:
            return src.read(size)
    except READ_ERRORS as exc:
        raise ArchiveError(f"Archive member '{name}' is corrupt: {exc}") from exc


def content_hash(members: Sequence[Member]) -> str:
    """Finds re-uploads of the same archive; covers every member, ignored ones too."""
    listing = "\n".join(f"{m.name}:{m.size}" for m in sorted(members, key=lambda m: m.name))
    return hashlib.md5(listing.encode("utf-8")).hexdigest()[:30]


def parse_sym_header(head: bytes) -> SymHeader:
    """The MODULE and INFO lines at the top of a Breakpad .sym file.

    Stops at the first other line. Anything malformed yields an empty header: the file is
    still stored, only the code-file lookup (docs/download.md) won't find it.
    """
    fields: dict[str, str | None] = {}
    try:
        for raw in head.split(b"\n"):
            line = raw.decode("utf-8").strip()
            if line.startswith("MODULE "):
                # The debug file is the rest of the line: Windows names may contain spaces.
                _, _os, _arch, debug_id, debug_filename = line.split(maxsplit=4)
                fields.update(debug_filename=debug_filename, debug_id=debug_id.upper())
            elif line.startswith("INFO CODE_ID "):
                parts = line.split(maxsplit=3)
                code_file = parts[3] if len(parts) == 4 else None  # only Windows has one
                fields.update(code_id=parts[2].upper(), code_file=code_file)
            elif line.startswith("INFO GENERATOR "):
                fields["generator"] = line.split(maxsplit=2)[2]
            elif not line.startswith("INFO "):
                break
    except (UnicodeDecodeError, ValueError, IndexError):
        return SymHeader()
    if any(v is not None and (len(v) > MAX_HEADER_FIELD or "\x00" in v) for v in fields.values()):
        return SymHeader()  # a database can't store a NUL; huge values are not real names
    return SymHeader(**fields)


def prepare(
    zf: zipfile.ZipFile,
    member: Member,
    compress_extensions: Collection[str] = ("sym",),
    tmpdir: str | os.PathLike[str] | None = None,
    chunk_size: int = 1 << 20,
    compress: bool | None = None,
) -> Prepared:
    """Inflate one member into a temp file, gzipped when its extension says so (or when
    ``compress`` says so, whatever its extension: native files).

    Streams chunk_size bytes at a time; safe to call from several threads on one ZipFile.
    """
    extension = posixpath.splitext(member.name)[1].lower()[1:]
    compressed = extension in compress_extensions if compress is None else compress
    md5 = hashlib.md5()
    head = bytearray()
    original_size = 0
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept past this function on success
        dir=tmpdir, prefix="symbolon-", suffix=".gz" if compressed else "", delete=False
    )
    try:
        with tmp:
            # filename="" and mtime=0: the same input always gives the same bytes.
            gz = None
            if compressed:
                gz = gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=tmp, mtime=0)
            out = gz if gz is not None else tmp
            for chunk in _inflate(zf, member, chunk_size):
                md5.update(chunk)
                original_size += len(chunk)
                if len(head) < HEAD_SIZE:
                    head += chunk[: HEAD_SIZE - len(head)]
                out.write(chunk)
            if gz is not None:
                gz.close()  # writes the trailer; leaves tmp open
            size = tmp.tell()
    except BaseException:
        os.unlink(tmp.name)
        raise
    header = None
    if extension == "sym":
        if original_size > HEAD_SIZE:  # don't parse a line cut in half
            head = head[: head.rfind(b"\n") + 1]
        header = parse_sym_header(bytes(head))
    return Prepared(Path(tmp.name), size, compressed, original_size, md5.hexdigest(), header)


def gzip_file(
    path: str | os.PathLike[str], tmpdir: str | os.PathLike[str] | None = None
) -> Prepared:
    """A local file gzipped into a temp file, as :func:`prepare` gzips a member."""
    md5 = hashlib.md5()
    original_size = 0
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept past this function on success
        dir=tmpdir, prefix="symbolon-", suffix=".gz", delete=False
    )
    try:
        with tmp, open(path, "rb") as src:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=tmp, mtime=0) as gz:
                while chunk := src.read(1 << 20):
                    md5.update(chunk)
                    original_size += len(chunk)
                    gz.write(chunk)
            size = tmp.tell()
    except BaseException:
        os.unlink(tmp.name)
        raise
    return Prepared(Path(tmp.name), size, True, original_size, md5.hexdigest(), None)


def verify(
    zf: zipfile.ZipFile,
    members: Sequence[Member],
    workers: int = 1,
    chunk_size: int = 1 << 20,
    tmpdir: str | os.PathLike[str] | None = None,
) -> dict[str, list[native.NativeObject]]:
    """Inflate every member, its CRC checked; ArchiveError for a corrupt one. Returns the native
    files found, by member name: a member starting like one is inflated into a temp file in
    ``tmpdir`` for symbolic to read, then deleted.

    Run before anything is stored, so that a corrupt member, or one outside the known shape that
    is no native file, found late refuses the whole archive instead of leaving the members before
    it stored. Once one fails, the others stop.
    """
    failed = threading.Event()
    errors: dict[int, Exception] = {}
    found: dict[str, list[native.NativeObject]] = {}
    queue = iter(enumerate(members))
    lock = threading.Lock()

    # A few threads taking members in turn: a task per member costs more than a small member.
    def run() -> None:
        while not failed.is_set():
            with lock:
                index, member = next(queue, (-1, None))
            if member is None:
                return
            try:
                objects = _verify_one(zf, member, chunk_size, tmpdir, failed)
                if objects:
                    found[member.name] = objects
            except Exception as exc:
                errors[index] = exc
                failed.set()

    count = max(1, min(workers, len(members)))
    with ThreadPoolExecutor(count, thread_name_prefix="symbolon-verify") as pool:
        for future in [pool.submit(run) for _ in range(count)]:
            future.result()
    if errors:
        raise errors[min(errors)]  # the first in the archive's order of those found
    return found


def _verify_one(
    zf: zipfile.ZipFile,
    member: Member,
    chunk_size: int,
    tmpdir: str | os.PathLike[str] | None,
    failed: threading.Event,
) -> list[native.NativeObject] | None:
    """One member inflated and checked; its objects if it is a native file."""
    tmp = None
    try:
        with contextlib.closing(_inflate(zf, member, chunk_size)) as chunks:
            for chunk in chunks:
                if failed.is_set():
                    return None
                if tmp is None and member.size and native.looks_native(chunk):
                    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
                        dir=tmpdir, prefix="symbolon-native-", delete=False
                    )
                if tmp is not None:
                    tmp.write(chunk)
        if tmp is None:
            if member.candidate:
                raise ArchiveError(UNRECOGNIZED.format(member.name))
            return None
        tmp.close()
        try:
            return native.identify(tmp.name, member.name)
        except native.NotNative as exc:
            if member.candidate:
                raise ArchiveError(
                    f"Archive member '{member.name}' is neither at <module>/<hex>/<file> nor a "
                    f"native debug file (ELF, PE, PDB, Mach-O): {exc}"
                ) from None
            return None  # stored as it is, as any other file at <module>/<hex>/<file>
    finally:
        if tmp is not None:
            tmp.close()
            os.unlink(tmp.name)


def _inflate(zf: zipfile.ZipFile, member: Member, chunk_size: int) -> Generator[bytes, None, None]:
    """The member's bytes, never more than its declared size (zipfile trusts that header)."""
    left = member.size
    try:
        with zf.open(member.name) as src:
            while True:
                # One byte past the declared end is enough to catch a lie.
                chunk = src.read(min(chunk_size, left + 1))
                if not chunk:
                    break
                if len(chunk) > left:
                    raise ArchiveError(
                        f"Archive member '{member.name}' is larger than its declared size "
                        f"({member.size} bytes); it looks like a zip bomb"
                    )
                left -= len(chunk)
                yield chunk
    except READ_ERRORS as exc:
        raise ArchiveError(f"Archive member '{member.name}' is corrupt: {exc}") from exc
    if left:
        raise ArchiveError(
            f"Archive member '{member.name}' is shorter than its declared size "
            f"({member.size} bytes); the archive is corrupt"
        )


def native_keys(
    members: Sequence[Member], natives: Mapping[str, list[native.NativeObject]]
) -> dict[str, list[native.NativeObject]]:
    """The native members' objects, with the keys each is stored under; ArchiveError when two
    members would be stored under one key.

    A native file at ``<module>/<hex>/<file>`` is also kept there, where its uploader put it, when
    its content gives other keys.
    """
    owners: dict[str, str] = {}
    placed: dict[str, list[native.NativeObject]] = {}
    for member in members:
        objects = natives.get(member.name)
        if objects is None:
            keys = [member.key]
        else:
            given = {key for obj in objects for key in obj.keys}
            if not member.candidate and member.key not in given:
                first = objects[0]
                objects = [dataclasses.replace(first, keys=(*first.keys, member.key)), *objects[1:]]
            placed[member.name] = objects
            keys = list(dict.fromkeys(key for obj in objects for key in obj.keys))
        for key in keys:
            other = owners.setdefault(key, member.name)
            if other != member.name:
                raise ArchiveError(
                    f"Archive members '{other}' and '{member.name}' would both be stored as '{key}'"
                )
    return placed
