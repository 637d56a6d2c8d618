"""The ELF section reader against files real toolchains wrote, checked against GNU objcopy."""

from __future__ import annotations

import io
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from symbolon.symbols.elf_sections import NotElf, find_section, sections

SOURCE = "int leaf(int n) { return n * 3 + 1; }\nint mid(int n) { return leaf(n) + 2; }\n"


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=120)


def dumped(path: Path, name: str, bfd: str, into: Path) -> bytes:
    """The section's bytes as objcopy extracts them."""
    out = into / f"dump{name}"
    # With no output file objcopy would rewrite its input.
    run("objcopy", "-I", bfd, "--dump-section", f"{name}={out}", path, into / "objcopy-output")
    return out.read_bytes()


def cut(path: Path, name: str) -> bytes | None:
    with path.open("rb") as f:
        section = find_section(f, name)
        if section is None:
            return None
        assert section.has_bytes
        f.seek(section.offset)
        return f.read(section.size)


@pytest.mark.parametrize(
    "target, bfd",
    [
        ("x86_64-linux-gnu", "elf64-little"),
        ("i386-linux-gnu", "elf32-little"),
        ("mips-linux-gnu", "elf32-big"),
        ("powerpc64-linux-gnu", "elf64-big"),
    ],
)
def test_sections_of_both_classes_and_byte_orders(tmp_path, target, bfd):
    source = tmp_path / "plain.c"
    source.write_text(SOURCE)
    obj = tmp_path / "plain.o"
    run("clang", f"--target={target}", "-g", "-c", "-o", obj, source)
    for name in (".text", ".debug_info", ".debug_line"):
        assert cut(obj, name) == dumped(obj, name, bfd, tmp_path), name
    assert cut(obj, ".no_such_section") is None


def test_a_split_debug_file_keeps_no_bytes_of_code(tmp_path):
    source = tmp_path / "plain.c"
    source.write_text(SOURCE + "int main(void) { return mid(1); }\n")
    program, debug = tmp_path / "plain", tmp_path / "plain.debug"
    run("gcc", "-g", "-O1", "-o", program, source)
    run("objcopy", "--only-keep-debug", program, debug)
    with debug.open("rb") as f:
        text = find_section(f, ".text")
    assert text is not None and not text.has_bytes
    assert cut(debug, ".debug_info") == dumped(debug, ".debug_info", "elf64-little", tmp_path)


def test_extended_section_numbering(tmp_path):
    """Past 65279 sections the count and the name table's index live in section 0."""
    count = 70_000
    assembly = tmp_path / "many.s"
    assembly.write_text("".join(f'.section .s{i},"a"\n.byte {i % 256}\n' for i in range(count)))
    obj = tmp_path / "many.o"
    run("as", "-o", obj, assembly)
    with obj.open("rb") as f:
        assert f.read(64)[60:64] == b"\x00\x00\xff\xff"  # e_shnum 0, e_shstrndx SHN_XINDEX
        assert len([s for s in sections(f) if s.name.startswith(".s")]) >= count
    assert cut(obj, f".s{count - 1}") == bytes([(count - 1) % 256])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"MZ\x90\x00" + b"\x00" * 60,
        b"\x7fELF\x03\x01\x01" + b"\x00" * 57,  # unknown class
        b"\x7fELF\x02\x01\x01",  # truncated header
    ],
)
def test_what_is_not_elf_says_so(data):
    with pytest.raises(NotElf):
        sections(io.BytesIO(data))


def test_headers_pointing_past_the_end_are_refused(tmp_path):
    source = tmp_path / "plain.c"
    source.write_text(SOURCE)
    obj = tmp_path / "plain.o"
    run("clang", "--target=x86_64-linux-gnu", "-c", "-o", obj, source)
    truncated = obj.read_bytes()[: obj.stat().st_size // 2]
    with pytest.raises(NotElf):
        sections(io.BytesIO(truncated))


ELF64_HEADER = struct.Struct("<HHIQQQIHHHHHH")  # e_type … e_shstrndx, after e_ident


def plain_object(tmp_path: Path) -> bytearray:
    source = tmp_path / "plain.c"
    source.write_text(SOURCE)
    obj = tmp_path / "plain.o"
    run("gcc", "-c", "-o", obj, source)
    return bytearray(obj.read_bytes())


def test_an_entry_size_other_than_the_classes_is_refused(tmp_path):
    data = plain_object(tmp_path)
    fields = list(ELF64_HEADER.unpack_from(data, 16))
    fields[10] = 65535  # e_shentsize: each entry would be read with 65 KiB of padding
    ELF64_HEADER.pack_into(data, 16, *fields)
    data += bytes(65535 * fields[11])  # so the table itself would fit in the file
    with pytest.raises(NotElf, match="entries of 65535 bytes"):
        sections(io.BytesIO(bytes(data)))


def test_a_million_declared_sections_are_read_a_batch_at_a_time(tmp_path):
    data = plain_object(tmp_path)
    fields = list(ELF64_HEADER.unpack_from(data, 16))
    count = 1_000_000
    # A table of null sections at the end, counted by extended numbering (e_shnum 0).
    fields[5], fields[11], fields[12] = len(data), 0, 0
    ELF64_HEADER.pack_into(data, 16, *fields)
    data += struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, count, 0, 0, 0, 0)
    data += bytes(count * 64 - 64)
    f = io.BytesIO(bytes(data))
    del data
    tracemalloc.start()
    try:
        assert find_section(f, ".text") is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
