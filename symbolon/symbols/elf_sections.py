"""Finding one section of an ELF file by name (debuginfod's ``/buildid/<id>/section/<name>``,
docs/download.md): the ELF header, the section header table and the section-name string table
are read, nothing else. 32- and 64-bit, either byte order, extended section numbering.

Pure functions over a seekable binary file: the caller decides where the file comes from.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
SHT_NOBITS = 8
SHN_UNDEF = 0
SHN_XINDEX = 0xFFFF
# e_type … e_shstrndx, after the 16 bytes of e_ident.
HEADER_FIELDS = {ELFCLASS32: "HHIIIIIHHHHHH", ELFCLASS64: "HHIQQQIHHHHHH"}
# sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, …
SECTION_FIELDS = {ELFCLASS32: "IIIIIIIIII", ELFCLASS64: "IIQQQQIIQQ"}
# Far more than any real file has (a large C++ library has tens of thousands with
# -ffunction-sections); bounds what a hostile file makes us read.
MAX_SECTIONS = 1_000_000
MAX_NAMES_SIZE = 64 * 1024 * 1024
BATCH = 4096  # section header entries read at once


class NotElf(ValueError):
    """The file is not an ELF file, or its headers point outside it; the message says what."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int

    @property
    def has_bytes(self) -> bool:
        """False for ``SHT_NOBITS`` (``.bss``, and every section a split debug file only keeps
        the header of): the file holds none of its bytes."""
        return self.type != SHT_NOBITS


def find_section(f: BinaryIO, name: str) -> Section | None:
    """The section called ``name``, or None if the file has none by that name."""
    for section in _iter_sections(f):
        if section.name == name:
            return section
    return None


def sections(f: BinaryIO) -> list[Section]:
    """Every section of the file, in table order (the null section 0 left out)."""
    return list(_iter_sections(f))


def _iter_sections(f: BinaryIO) -> Iterator[Section]:
    """The sections in table order, the table read a batch of entries at a time: a hostile file
    may declare a million of them."""
    file_size = f.seek(0, 2)
    f.seek(0)
    ident = f.read(16)
    if len(ident) < 16 or ident[:4] != MAGIC:
        raise NotElf("not an ELF file")
    elf_class, data = ident[4], ident[5]
    if elf_class not in HEADER_FIELDS:
        raise NotElf(f"unknown ELF class {elf_class}")
    if data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise NotElf(f"unknown ELF data encoding {data}")
    order = "<" if data == ELFDATA2LSB else ">"
    header = struct.Struct(order + HEADER_FIELDS[elf_class])
    raw = f.read(header.size)
    if len(raw) < header.size:
        raise NotElf("truncated ELF header")
    fields = header.unpack(raw)
    shoff, shentsize, shnum, shstrndx = fields[5], fields[10], fields[11], fields[12]
    entry = struct.Struct(order + SECTION_FIELDS[elf_class])
    if shoff == 0:
        return  # no section header table
    # The entry size is fixed per class: any other would only make us read padding.
    if shentsize != entry.size:
        raise NotElf(f"section header entries of {shentsize} bytes, not {entry.size}")

    def read_entries(index: int, count: int) -> list[tuple[int, ...]]:
        f.seek(shoff + index * entry.size)
        raw = f.read(count * entry.size)
        if len(raw) < count * entry.size:
            raise NotElf("section header table past the end of the file")
        return list(entry.iter_unpack(raw))

    if shnum == 0 or shstrndx == SHN_XINDEX:
        # Extended numbering: the real values are in the null section's header.
        (first,) = read_entries(0, 1)
        shnum = shnum or first[5]
        if shstrndx == SHN_XINDEX:
            shstrndx = first[6]
    if shnum > MAX_SECTIONS or shoff + shnum * entry.size > file_size:
        raise NotElf("section header table past the end of the file")

    names = b""
    if SHN_UNDEF < shstrndx < shnum:
        (names_header,) = read_entries(shstrndx, 1)
        if names_header[1] != SHT_NOBITS:
            names_offset, names_size = names_header[4], names_header[5]
            if names_size > MAX_NAMES_SIZE or names_offset + names_size > file_size:
                raise NotElf("section name table past the end of the file")
            f.seek(names_offset)
            names = f.read(names_size)

    for batch_start in range(1, shnum, BATCH):
        for values in read_entries(batch_start, min(BATCH, shnum - batch_start)):
            name_at, kind, offset, size = values[0], values[1], values[4], values[5]
            if kind != SHT_NOBITS and offset + size > file_size:
                raise NotElf("a section past the end of the file")
            end = names.find(b"\0", name_at)
            label = (
                names[name_at : end if end >= 0 else len(names)] if name_at < len(names) else b""
            )
            yield Section(label.decode("utf-8", "replace"), kind, offset, size)
