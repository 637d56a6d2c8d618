"""Archive validation and member preparation (docs/upload.md, "What happens").

Every archive here is a real zip written with the zipfile module; hostile ones are patched
byte by byte where zipfile refuses to write them.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from symbolon.symbols import archive
from symbolon.symbols.archive import ArchiveError, Limits, Member, SymHeader
from tests.uploads import overlapping_zip

DEBUG_ID = "44E4EC8C2F41492B9369D6B9A059577C2"
WINDOWS_SYM = (
    f"MODULE windows x86_64 {DEBUG_ID} xul.pdb\n"
    "INFO CODE_ID 651C9AF99241000 xul.dll\n"
    "INFO GENERATOR mozilla/dump_syms 2.3.3\n"
    "FILE 0 hg:hg.mozilla.org/mozilla-central:dom/base/Element.cpp\n"
    "FUNC 1000 10 0 Element::Element()\n"
).encode()
LINUX_SYM = (
    b"MODULE Linux x86_64 0B2B3A0F1C2E6F8A6A3B3F0C1D2E3F400 libxul.so\n"
    b"INFO CODE_ID 0F3A2B0B2E1C8A6F6A3B3F0C1D2E3F40A1B2C3D4\n"
    b"FILE 0 /build/foo.c\n"
)
UNRECOGNIZED = (
    "Unrecognized file pattern. Should only be <module>/<hex>/<file> or <name>-symbols.txt "
    "and nothing else. (First unrecognized pattern was {})"
)
MiB = 1 << 20

# Offsets in the zip headers (APPNOTE.TXT 4.3.7 and 4.3.12).
CENTRAL, LOCAL = b"PK\x01\x02", b"PK\x03\x04"
CENTRAL_FLAGS, CENTRAL_SIZE, LOCAL_SIZE = 8, 24, 22
CENTRAL_CRC, CENTRAL_COMPRESSED_SIZE = 16, 20


def make_zip(tmp_path: Path, entries, compression=zipfile.ZIP_DEFLATED, name="symbols.zip"):
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some tests want duplicate names
        with zipfile.ZipFile(path, "w", compression) as zf:
            for entry_name, data in entries:
                zf.writestr(entry_name, data)
    return path


def members_of(path: Path, **kwargs) -> list[Member]:
    with archive.open_archive(path) as zf:
        return archive.inspect(zf, **kwargs)


def rejection(path: Path, **kwargs) -> str:
    with pytest.raises(ArchiveError) as info:
        members_of(path, **kwargs)
    return str(info.value)


def patch(path: Path, signature: bytes, offset: int, fmt: str, value: int) -> None:
    """Overwrite a field of the (only) local or central header."""
    data = bytearray(path.read_bytes())
    assert data.count(signature) == 1
    struct.pack_into(fmt, data, data.index(signature) + offset, value)
    path.write_bytes(bytes(data))


# --- open_archive ---------------------------------------------------------------------------


def test_open_archive_opens_a_zip(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"x")])
    with archive.open_archive(path) as zf:
        assert zf.namelist() == ["xul.pdb/ABC/xul.sym"]


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a zip file\n" * 100, b"PK\x03\x04 truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_open_archive_rejects_what_is_not_a_zip(tmp_path, content):
    path = tmp_path / "symbols.zip"
    path.write_bytes(content)
    with pytest.raises(ArchiveError) as info:
        archive.open_archive(path)
    assert str(info.value) == "File is not a zip file"
    assert isinstance(info.value, ValueError)


def test_open_archive_does_not_blame_the_client_for_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        archive.open_archive(tmp_path / "nowhere.zip")


# --- inspect: accepted archives -------------------------------------------------------------


def test_accepted_shapes_and_upper_cased_debug_id(tmp_path):
    path = make_zip(
        tmp_path,
        [
            ("xul.pdb/44e4ec8c2f41492b9369d6b9a059577c2/xul.sym", b"MODULE"),
            ("libfoo-1.2-1~bpo12.so/ABC/libfoo-1.2-1~bpo12.so.sym", b"tilde"),
            ("firefox-symbols.txt", b"listing"),
        ],
    )
    assert members_of(path) == [
        Member(
            "xul.pdb/44e4ec8c2f41492b9369d6b9a059577c2/xul.sym",
            "xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym",
            6,
            False,
        ),
        Member(
            "libfoo-1.2-1~bpo12.so/ABC/libfoo-1.2-1~bpo12.so.sym",
            "libfoo-1.2-1~bpo12.so/ABC/libfoo-1.2-1~bpo12.so.sym",
            5,
            False,
        ),
        Member("firefox-symbols.txt", "firefox-symbols.txt", 7, True),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "firefox-symbols.txt",
        "Firefox-SYMBOLS.TXT",
        ".DS_Store",
        "a/b/c/d/.DS_Store",
        "xul.pdb/ABC/build-symbols.txt",
    ],
)
def test_ignored_members_are_flagged(tmp_path, name):
    path = make_zip(tmp_path, [(name, b"junk"), ("xul.pdb/ABC/xul.sym", b"x")])
    first, second = members_of(path)
    assert first == Member(name, name, 4, True)
    assert second.ignored is False


def test_directory_entries_are_skipped(tmp_path):
    path = make_zip(
        tmp_path, [("xul.pdb/", b""), ("xul.pdb/ABC/", b""), ("xul.pdb/ABC/xul.sym", b"x")]
    )
    assert [m.name for m in members_of(path)] == ["xul.pdb/ABC/xul.sym"]


def test_duplicates_of_equal_size_collapse(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"one"), ("xul.pdb/ABC/xul.sym", b"two")])
    assert members_of(path) == [Member("xul.pdb/ABC/xul.sym", "xul.pdb/ABC/xul.sym", 3, False)]


# --- inspect: the validation rules ------------------------------------------------------------


def test_duplicates_of_different_size(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"abc"), ("xul.pdb/ABC/xul.sym", b"abcde")])
    assert rejection(path) == (
        "The zipfile buffer contains two files both called xul.pdb/ABC/xul.sym and they have "
        "difference sizes (5 != 3)"
    )


def test_disallowed_snippet(tmp_path):
    # The snippet rule comes first: this path would otherwise be an unrecognized pattern.
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"x"), ("qcom/proprietary/x.sym", b"x")])
    assert rejection(path) == (
        "Content of archive file contains the snippet 'qcom/proprietary' which is not allowed"
    )


def test_disallowed_snippets_are_configurable(tmp_path):
    path = make_zip(tmp_path, [("secret.pdb/ABC/xul.sym", b"x")])
    assert rejection(path, disallowed_snippets=["secret"]) == (
        "Content of archive file contains the snippet 'secret' which is not allowed"
    )
    assert members_of(path, disallowed_snippets=[])[0].name == "secret.pdb/ABC/xul.sym"


@pytest.mark.parametrize(
    "name",
    [
        "xul<.pdb/ABC/xul.sym",
        "xul.pdb/ABC/xul%.sym",
        "x\x01ul.pdb/ABC/xul.sym",
        "xül.pdb/ABC/xul.sym",
        "xul.pdb/ABC/xul'.sym",
    ],
)
def test_invalid_characters(tmp_path, name):
    path = make_zip(tmp_path, [(name, b"x")])
    assert rejection(path) == f"Invalid character in filename '{name}'"


@pytest.mark.parametrize(
    "name",
    [
        "xpcshell.sym",
        "symbols.txt",
        "xul.pdb/xul.sym",
        "a/b/c/d.sym",
        "xul.pdb/XYZ/xul.sym",
        "xul.pdb//xul.sym",
        "xul.pdb/ABC\n/xul.sym",
    ],
)
def test_unrecognized_pattern(tmp_path, name):
    path = make_zip(tmp_path, [(name, b"x")])
    assert rejection(path) == UNRECOGNIZED.format(name)


@pytest.mark.parametrize("name", ["lib/libfoo[1].so", "libfoo%.so.debug"])
def test_a_native_file_with_an_invalid_character_says_so(tmp_path, name):
    path = make_zip(tmp_path, [(name, b"\x7fELF" + bytes(60))])
    assert rejection(path) == f"Invalid character in filename '{name}'"
    # The same name on a file that is no native file is an unrecognized pattern, as ever.
    other = make_zip(tmp_path, [(name, b"x")], name="other.zip")
    assert rejection(other) == UNRECOGNIZED.format(name)


# --- inspect: hostile archives --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../ABC/xul.sym", "contains a '..' path segment"),
        ("xul.pdb/../xul.sym", "contains a '..' path segment"),
        ("/xul.pdb/ABC/xul.sym", "is an absolute path"),
        ("xul.pdb\\ABC\\xul.sym", "contains a backslash"),
    ],
)
def test_unsafe_member_names(tmp_path, name, reason):
    path = make_zip(tmp_path, [(name, b"x")])
    message = rejection(path)
    assert message.startswith(f"Archive member '{name}' {reason}")


def test_nul_in_a_member_name(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xulX.sym", b"x")])
    path.write_bytes(path.read_bytes().replace(b"xulX.sym", b"xul\x00.sym"))
    # zipfile would cut the name to "xul.pdb/ABC/xul", which looks like a fine member.
    assert rejection(path) == (
        "Archive member name 'xul.pdb/ABC/xul\\x00.sym' contains a NUL character"
    )


@pytest.mark.parametrize("entries", [[], [("xul.pdb/", b""), ("xul.pdb/ABC/", b"")]])
def test_archive_without_files(tmp_path, entries):
    path = make_zip(tmp_path, entries)
    assert rejection(path) == "Archive contains no files"


def test_member_count_limit(tmp_path):
    files = [(f"m{i}.pdb/ABC/m{i}.sym", b"x") for i in range(3)]
    path = make_zip(tmp_path, files)
    message = rejection(path, limits=Limits(max_members=2))
    assert message.startswith("Archive contains more than 2 files")
    assert len(members_of(path, limits=Limits(max_members=3))) == 3


def test_total_size_limit(tmp_path):
    path = make_zip(tmp_path, [("a.pdb/ABC/a.sym", b"x" * 60), ("b.pdb/ABC/b.sym", b"x" * 60)])
    message = rejection(path, limits=Limits(max_total_size=100))
    assert message.startswith("Archive contents are too large: more than 100 bytes uncompressed")
    assert len(members_of(path, limits=Limits(max_total_size=120))) == 2


def test_total_size_counts_duplicates_once(tmp_path):
    path = make_zip(tmp_path, [("a.pdb/ABC/a.sym", b"x" * 60), ("a.pdb/ABC/a.sym", b"y" * 60)])
    assert len(members_of(path, limits=Limits(max_total_size=100))) == 1


def test_compression_ratio_limit(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", bytes(5 * MiB))])
    message = rejection(path)
    assert message.startswith("Archive member 'xul.pdb/ABC/xul.sym' inflates")
    assert message.endswith("(the limit is 200); it looks like a zip bomb")
    assert len(members_of(path, limits=Limits(max_ratio=10_000))) == 1


def test_compression_ratio_is_not_checked_up_to_one_mib(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", bytes(MiB))])
    assert members_of(path, limits=Limits(max_ratio=2))[0].size == MiB


def test_encrypted_member(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"secret")])
    patch(path, CENTRAL, CENTRAL_FLAGS, "<H", 0x1)  # zipfile can't write encrypted members
    assert rejection(path) == (
        "Archive member 'xul.pdb/ABC/xul.sym' is encrypted; upload an unencrypted zip"
    )


def test_unsupported_compression_method(tmp_path):
    # bzip2 is inflated without an output bound by zipfile, so it is not accepted.
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"x" * 100)], zipfile.ZIP_BZIP2)
    assert rejection(path) == (
        "Archive member 'xul.pdb/ABC/xul.sym' uses compression method 12; "
        "only stored and deflated members are accepted"
    )


def test_members_that_would_share_a_key(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/abc/xul.sym", b"one"), ("xul.pdb/ABC/xul.sym", b"two")])
    assert rejection(path) == (
        "Archive members 'xul.pdb/abc/xul.sym' and 'xul.pdb/ABC/xul.sym' would both be stored "
        "as 'xul.pdb/ABC/xul.sym'"
    )


# --- content_hash ---------------------------------------------------------------------------


def test_content_hash(tmp_path):
    path = make_zip(
        tmp_path, [("z.pdb/ABC/z.sym", b"zz"), ("a-symbols.txt", b"aaa"), ("b.pdb/ab/b.sym", b"b")]
    )
    members = members_of(path)
    listing = "a-symbols.txt:3\nb.pdb/ab/b.sym:1\nz.pdb/ABC/z.sym:2"  # ignored ones too
    expected = hashlib.md5(listing.encode()).hexdigest()[:30]
    assert archive.content_hash(members) == expected
    assert archive.content_hash(list(reversed(members))) == expected
    resized = [dataclasses.replace(members[0], size=3), *members[1:]]
    assert archive.content_hash(resized) != expected


# --- parse_sym_header -----------------------------------------------------------------------


def test_sym_header_windows():
    assert archive.parse_sym_header(WINDOWS_SYM) == SymHeader(
        debug_filename="xul.pdb",
        debug_id=DEBUG_ID,
        code_file="xul.dll",
        code_id="651C9AF99241000",
        generator="mozilla/dump_syms 2.3.3",
    )


def test_sym_header_linux_has_no_code_file():
    assert archive.parse_sym_header(LINUX_SYM) == SymHeader(
        debug_filename="libxul.so",
        debug_id="0B2B3A0F1C2E6F8A6A3B3F0C1D2E3F400",
        code_file=None,
        code_id="0F3A2B0B2E1C8A6F6A3B3F0C1D2E3F40A1B2C3D4",
        generator=None,
    )


def test_sym_header_upper_cases_ids_and_keeps_names():
    head = (
        b"MODULE windows x86 44e4ec8c2f41492b9369d6b9a059577c2 My App.pdb\r\n"
        b"INFO CODE_ID 651c9af99241000 My App.exe\r\n"
    )
    header = archive.parse_sym_header(head)
    assert (header.debug_id, header.code_id) == (DEBUG_ID, "651C9AF99241000")
    assert (header.debug_filename, header.code_file) == ("My App.pdb", "My App.exe")


def test_sym_header_skips_other_info_lines_and_stops_at_the_first_other_line():
    head = (
        f"MODULE windows x86_64 {DEBUG_ID} xul.pdb\n"
        "INFO URL https://example.com/\n"
        "INFO GENERATOR dump_syms\n"
        "FILE 0 foo.c\n"
        "INFO CODE_ID 651C9AF99241000 xul.dll\n"
    ).encode()
    header = archive.parse_sym_header(head)
    assert header.generator == "dump_syms"
    assert header.code_id is None


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"MODULE windows x86_64\n",
        b"MODULE windows x86_64 ABC xul\xff.pdb\n",
        b"MODULE windows x86_64 ABC xul\x00.pdb\n",
        f"MODULE windows x86_64 ABC {'x' * 5000}.pdb\n".encode(),
        b"FILE 0 foo.c\n" + WINDOWS_SYM,
    ],
    ids=["empty", "binary", "short", "not-utf8", "nul", "huge", "late"],
)
def test_sym_header_garbage(head):
    assert archive.parse_sym_header(head) == SymHeader(None, None, None, None, None)


# --- prepare --------------------------------------------------------------------------------


def prepared(tmp_path: Path, entries, member_index=0, **kwargs):
    path = make_zip(tmp_path, entries)
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    with archive.open_archive(path) as zf:
        member = archive.inspect(zf)[member_index]
        return archive.prepare(zf, member, tmpdir=staging, **kwargs)


def test_prepare_gzips_a_sym_file(tmp_path):
    content = WINDOWS_SYM + b"FUNC 2000 10 0 f()\n" * 20_000  # well past the 64 KiB head
    result = prepared(tmp_path, [("xul.pdb/ABC/xul.sym", content)], chunk_size=4096)
    assert result.path.parent == tmp_path / "staging"
    assert result.compressed is True
    assert gzip.decompress(result.path.read_bytes()) == content
    assert result.size == result.path.stat().st_size < len(content)
    assert result.original_size == len(content)
    assert result.original_md5 == hashlib.md5(content).hexdigest()
    assert result.header == archive.parse_sym_header(WINDOWS_SYM)
    assert result.header.debug_id == DEBUG_ID


def test_prepare_is_reproducible(tmp_path):
    entries = [("xul.pdb/ABC/xul.sym", WINDOWS_SYM)]
    first = prepared(tmp_path, entries)
    second = prepared(tmp_path, entries)
    assert first.path != second.path
    assert first.path.read_bytes() == second.path.read_bytes()
    flags, mtime = struct.unpack_from("<BI", first.path.read_bytes(), 3)
    assert (flags, mtime) == (0, 0)  # no file name, no timestamp in the gzip header


def test_prepare_leaves_other_files_alone(tmp_path):
    content = bytes(range(256)) * 100
    result = prepared(tmp_path, [("xul.pdb/ABC/xul.dl_", content)])
    assert (result.compressed, result.header) == (False, None)
    assert result.path.read_bytes() == content
    assert (result.size, result.original_size) == (len(content), len(content))
    assert result.original_md5 == hashlib.md5(content).hexdigest()


def test_prepare_compresses_by_lower_cased_extension(tmp_path):
    result = prepared(tmp_path, [("XUL.PDB/ABC/XUL.SYM", WINDOWS_SYM)])
    assert result.compressed is True
    assert gzip.decompress(result.path.read_bytes()) == WINDOWS_SYM
    assert result.header.debug_filename == "xul.pdb"


def test_prepare_compress_extensions_are_configurable(tmp_path):
    result = prepared(tmp_path, [("xul.pdb/ABC/xul.sym", WINDOWS_SYM)], compress_extensions=())
    assert result.compressed is False
    assert result.path.read_bytes() == WINDOWS_SYM
    assert result.header.code_file == "xul.dll"  # parsed whether compressed or not


def test_prepare_parses_only_complete_lines_of_the_head(tmp_path):
    module = f"MODULE windows x86_64 {DEBUG_ID} xul.pdb\n".encode()
    # One long INFO line, sized so that the 64 KiB head ends just before ".pdb\n".
    filler_size = 64 * 1024 - (len(module) - len(b".pdb\n"))
    filler = b"INFO URL " + b"x" * (filler_size - 10) + b"\n"
    content = filler + module + b"FILE 0 a.c\n"
    assert content[: 64 * 1024].endswith(f"{DEBUG_ID} xul".encode())
    result = prepared(tmp_path, [("xul.pdb/ABC/xul.sym", content)])
    # The head ends inside the MODULE line: better no name than the wrong one ("xul").
    assert result.header.debug_filename is None
    assert gzip.decompress(result.path.read_bytes()) == content


def record_reads(monkeypatch, zf: zipfile.ZipFile) -> list[int]:
    """The sizes prepare asks for when it reads a member of zf."""
    requested: list[int] = []
    open_member = zf.open

    def recording_open(*args, **kwargs):
        src = open_member(*args, **kwargs)
        read = src.read

        def recording_read(n=-1):
            requested.append(n)
            return read(n)

        src.read = recording_read
        return src

    monkeypatch.setattr(zf, "open", recording_open)
    return requested


def test_prepare_streams_in_chunks(tmp_path, monkeypatch):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", bytes(300_000))])
    with archive.open_archive(path) as zf:
        member = archive.inspect(zf)[0]
        requested = record_reads(monkeypatch, zf)
        result = archive.prepare(zf, member, tmpdir=tmp_path, chunk_size=65536)
    assert result.original_size == 300_000
    assert len(requested) >= 5
    assert all(0 < n <= 65536 for n in requested)


def staging_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "staging").iterdir())


def test_prepare_rejects_a_lying_header(tmp_path):
    # The directory says 10 bytes, the data holds 1000. zipfile stops at the declared size
    # and then reports a bad CRC, so what we see is a corrupt member.
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"A" * 1000)], zipfile.ZIP_STORED)
    patch(path, CENTRAL, CENTRAL_SIZE, "<I", 10)
    patch(path, LOCAL, LOCAL_SIZE, "<I", 10)
    (tmp_path / "staging").mkdir()
    with archive.open_archive(path) as zf:
        member = archive.inspect(zf)[0]
        assert member.size == 10
        with pytest.raises(ArchiveError) as info:
            archive.prepare(zf, member, tmpdir=tmp_path / "staging")
    assert str(info.value).startswith("Archive member 'xul.pdb/ABC/xul.sym' is corrupt: Bad CRC")
    assert staging_files(tmp_path) == []


def test_prepare_never_inflates_past_the_declared_size(tmp_path, monkeypatch):
    # zipfile itself truncates at the size in the directory, so a member larger than declared
    # can't be made with a real zip: give prepare a Member that claims less than the data.
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"A" * 1000)])
    (tmp_path / "staging").mkdir()
    with archive.open_archive(path) as zf:
        member = dataclasses.replace(archive.inspect(zf)[0], size=10)
        requested = record_reads(monkeypatch, zf)
        with pytest.raises(ArchiveError) as info:
            archive.prepare(zf, member, tmpdir=tmp_path / "staging")
    assert sum(requested) == 11  # the declared size, plus one byte to see the lie
    assert str(info.value) == (
        "Archive member 'xul.pdb/ABC/xul.sym' is larger than its declared size (10 bytes); "
        "it looks like a zip bomb"
    )
    assert staging_files(tmp_path) == []


def test_prepare_rejects_a_member_shorter_than_declared(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.dl_", b"A" * 1000)], zipfile.ZIP_STORED)
    patch(path, CENTRAL, CENTRAL_SIZE, "<I", 2000)
    (tmp_path / "staging").mkdir()
    with archive.open_archive(path) as zf:
        member = archive.inspect(zf)[0]
        with pytest.raises(ArchiveError) as info:
            archive.prepare(zf, member, tmpdir=tmp_path / "staging")
    assert str(info.value) == (
        "Archive member 'xul.pdb/ABC/xul.dl_' is shorter than its declared size (2000 bytes); "
        "the archive is corrupt"
    )
    assert staging_files(tmp_path) == []


def test_prepare_rejects_corrupt_data(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"ABCDEFGH" * 100)], zipfile.ZIP_STORED)
    path.write_bytes(path.read_bytes().replace(b"ABCDEFGH", b"ABCDEFGX", 1))
    (tmp_path / "staging").mkdir()
    with archive.open_archive(path) as zf:
        member = archive.inspect(zf)[0]
        with pytest.raises(ArchiveError) as info:
            archive.prepare(zf, member, tmpdir=tmp_path / "staging")
    assert str(info.value).startswith("Archive member 'xul.pdb/ABC/xul.sym' is corrupt: Bad CRC")
    assert staging_files(tmp_path) == []


# --- inspect: whole-archive bounds ----------------------------------------------------------


def overlapping(tmp_path: Path, count: int, kernel: bytes) -> Path:
    path = tmp_path / "overlapping.zip"
    path.write_bytes(overlapping_zip([f"m{i}.pdb/ABC/m{i}.sym" for i in range(count)], kernel))
    return path


def test_overlapping_members_are_refused(tmp_path):
    path = overlapping(tmp_path, 5, b"x" * 1000)
    with archive.open_archive(path) as zf:  # a valid zip: every member inflates, CRC and all
        assert [len(zf.read(n)) for n in zf.namelist()] == [1188, 1141, 1094, 1047, 1000]
    assert rejection(path) == (
        "Archive members 'm0.pdb/ABC/m0.sym' and 'm1.pdb/ABC/m1.sym' overlap (they share bytes "
        "of the archive); it looks like a zip bomb"
    )


def test_an_overlapping_zip_bomb_is_refused(tmp_path):
    # 100 MB from 13 KB, no member over the per-member floor.
    path = overlapping(tmp_path, 100, bytes(1_000_000))
    assert path.stat().st_size < 13_000
    with archive.open_archive(path) as zf:
        assert sum(i.file_size for i in zf.infolist()) > 100_000_000
    assert "overlap" in rejection(path, limits=Limits(max_ratio=1e9))


def test_total_compression_ratio_limit(tmp_path):
    # Each member is at the per-member floor; together they inflate 1000 times the archive.
    files = [(f"m{i}.pdb/ABC/m{i}.sym", bytes(MiB)) for i in range(20)]
    path = make_zip(tmp_path, files)
    message = rejection(path)
    assert message.startswith("Archive contents inflate ")
    assert message.endswith(
        " times the archive's size (the limit is 200); it looks like a zip bomb"
    )
    assert len(members_of(path, limits=Limits(max_ratio=10_000))) == 20


def test_total_compression_ratio_is_not_checked_up_to_16_mib(tmp_path):
    path = make_zip(tmp_path, [(f"m{i}.pdb/ABC/m{i}.sym", bytes(MiB)) for i in range(16)])
    assert len(members_of(path, limits=Limits(max_ratio=2))) == 16


def test_total_compression_ratio_counts_duplicates_once(tmp_path):
    same = [("m.pdb/ABC/m.sym", bytes(MiB)) for _ in range(20)]
    assert len(members_of(make_zip(tmp_path, same))) == 1


def test_member_data_past_the_end_of_the_archive(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"A" * 1000)], zipfile.ZIP_STORED)
    patch(path, CENTRAL, CENTRAL_COMPRESSED_SIZE, "<I", 100_000)
    assert rejection(path) == (
        "Archive member 'xul.pdb/ABC/xul.sym' is corrupt: its data runs past the end of the archive"
    )


def test_member_without_a_local_header(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"A" * 1000)])
    path.write_bytes(path.read_bytes().replace(LOCAL, b"PK\x00\x00"))
    assert rejection(path) == (
        "Archive member 'xul.pdb/ABC/xul.sym' is corrupt: its local header is missing"
    )


def test_archives_with_prepended_data_are_still_laid_out_correctly(tmp_path):
    path = make_zip(tmp_path, [("a.pdb/ABC/a.sym", b"a" * 100), ("b.pdb/ABC/b.sym", b"b")])
    path.write_bytes(b"#!/bin/sh\nexit 0\n" + path.read_bytes())  # zipfile finds the offsets
    assert [m.name for m in members_of(path)] == ["a.pdb/ABC/a.sym", "b.pdb/ABC/b.sym"]


# --- verify ---------------------------------------------------------------------------------


def break_crc(path: Path, index: int) -> None:
    """Flip a bit of the CRC the central directory holds for the index-th member."""
    data = bytearray(path.read_bytes())
    at = [i for i in range(len(data)) if data.startswith(CENTRAL, i)][index] + CENTRAL_CRC
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("workers", [1, 4])
def test_verify_inflates_every_member_and_keeps_nothing(tmp_path, workers):
    files = [(f"m{i}.pdb/ABC/m{i}.sym", bytes([i]) * 100_000) for i in range(8)]
    path = make_zip(tmp_path, files)
    before = set(tmp_path.iterdir())
    with archive.open_archive(path) as zf:
        archive.verify(zf, archive.inspect(zf), workers=workers, chunk_size=4096)
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize("workers", [1, 4])
def test_verify_finds_a_bad_crc_after_good_members(tmp_path, workers):
    files = [(f"m{i}.pdb/ABC/m{i}.sym", bytes([i]) * 100_000) for i in range(8)]
    path = make_zip(tmp_path, files)
    break_crc(path, 5)
    with archive.open_archive(path) as zf:
        members = archive.inspect(zf)  # the central directory is fine: found only by inflating
        with pytest.raises(ArchiveError) as info:
            archive.verify(zf, members, workers=workers, chunk_size=4096)
    assert str(info.value).startswith("Archive member 'm5.pdb/ABC/m5.sym' is corrupt: Bad CRC")


def test_verify_finds_a_lying_size(tmp_path):
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.dl_", b"A" * 1000)], zipfile.ZIP_STORED)
    patch(path, CENTRAL, CENTRAL_SIZE, "<I", 2000)
    with archive.open_archive(path) as zf, pytest.raises(ArchiveError) as info:
        archive.verify(zf, archive.inspect(zf))
    assert "is shorter than its declared size" in str(info.value)


def test_a_central_directory_that_lies_about_its_place_is_refused(tmp_path):
    # Overstating the directory's offset makes the zip library shift every member's header
    # offset below zero.
    path = make_zip(tmp_path, [("xul.pdb/ABC/xul.sym", b"MODULE")])
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    offset = struct.unpack_from("<I", data, end + 16)[0]
    struct.pack_into("<I", data, end + 16, offset + 10_000)
    path.write_bytes(bytes(data + bytes(10_000)))
    assert "its local header is missing" in rejection(path)
