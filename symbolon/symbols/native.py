"""Native debug files (ELF, PE, PDB, Mach-O) as uploads hold them: what they are and the keys
they are stored under (see docs/upload.md, "Native debug files").

Identification is by content, with symbolic's object reader, over a file on disk: symbolic maps
it and reads only the headers and tables it needs, so a large member costs no memory.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from symbolic.debuginfo import Archive
from symbolic.exceptions import SymbolicError

from symbolon.symbols.debuginfod import DEBUGINFO, EXECUTABLE, buildid_key
from symbolon.symbols.keys import NATIVE_DEBUG_SUFFIX, has_invalid_characters, make_key

FORMATS = frozenset({"elf", "pe", "pdb", "macho"})
# How each format starts: only a file starting so is handed to symbolic.
MAGICS = (
    b"\x7fELF",
    b"MZ",
    b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\x00",
    b"\xfe\xed\xfa\xce",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # fat Mach-O (and Java classes, which symbolic refuses)
)
HEAD_BYTES = max(len(m) for m in MAGICS)
DEBUG_SUFFIXES = (".debug", ".dbg")
NULL_ID = "0" * 33


class NotNative(ValueError):
    """Not a native debug file Symbolon stores; str(exc) says why."""


@dataclass(frozen=True)
class NativeObject:
    """One object of a native file, and the keys the whole file is stored under for it: the
    first is written, the others are copies of it."""

    file_format: str  # elf, pe, pdb, macho
    kind: str  # symbolic's: exe, lib, dbg, rel, …
    arch: str
    debug_file: str
    debug_id: str  # Breakpad form: 32 upper-case hex digits and the age
    code_file: str | None
    code_id: str | None
    features: tuple[str, ...]
    keys: tuple[str, ...] = field(default=())

    @property
    def has_debug_info(self) -> bool:
        return "debug" in self.features


def looks_native(head: bytes) -> bool:
    """Whether a file starting with ``head`` may be a native file worth opening."""
    return head.startswith(MAGICS)


def breakpad_id(debug_id: str) -> str:
    """symbolic's ``uuid[-age]`` as Breakpad writes it: the uuid's hex and the age, upper-cased."""
    parts = debug_id.split("-")
    uuid_hex = "".join(parts[:5])
    age = parts[5] if len(parts) > 5 else "0"
    return (uuid_hex + format(int(age, 16), "X")).upper()


NOT_NAMES = frozenset({"", ".", ".."})  # a key's segments can be none of these


def debug_file_name(file_format: str, basename: str) -> str:
    """The name a debugger asks for: a split ELF or Mach-O file without its ``.debug``."""
    if file_format in ("elf", "macho"):
        for suffix in DEBUG_SUFFIXES:
            if basename.endswith(suffix) and len(basename) > len(suffix):
                return basename[: -len(suffix)]
    return basename


def object_keys(
    file_format: str,
    kind: str,
    has_debug_info: bool,
    debug_file: str,
    debug_id: str,
    code_id: str | None,
) -> tuple[str, ...]:
    """Every key one object is stored under, the primary first."""
    d = debug_file
    if file_format == "pdb":
        return (make_key(d, debug_id, d),)
    if file_format == "pe":
        return (make_key(d, code_id, d),) if code_id else ()
    keys: list[str] = []
    if kind != "dbg":
        keys.append(make_key(d, debug_id, d))
    if has_debug_info:
        keys.append(make_key(d, debug_id, d + NATIVE_DEBUG_SUFFIX))
    if file_format == "elf" and code_id:
        if kind != "dbg":
            keys.append(buildid_key(code_id, EXECUTABLE))
        if has_debug_info:
            keys.append(buildid_key(code_id, DEBUGINFO))
    return tuple(keys)


def identify(path: str | os.PathLike[str], name: str) -> list[NativeObject]:
    """The objects of the native file at ``path``, an upload's ``name`` (its path in the upload,
    whose basename names it); NotNative when it is none Symbolon stores."""
    try:
        archive = Archive.open(os.fspath(path))
        objects = list(archive.iter_objects())
    except SymbolicError as exc:
        raise NotNative(f"it is not a debug file Symbolon reads ({exc})") from None
    basename = posixpath.basename(name)
    found: list[NativeObject] = []
    for obj in objects:
        file_format = obj.file_format
        if file_format not in FORMATS:
            raise NotNative(f"its format ({file_format}) is not one stored as a native file")
        debug_id = breakpad_id(obj.debug_id)
        if debug_id == NULL_ID:
            raise NotNative("it has no debug id")
        debug_file = debug_file_name(file_format, basename)
        if debug_file in NOT_NAMES:  # "...debug" would be stored under "../<id>/.."
            raise NotNative(
                f"its name {basename!r} leaves {debug_file!r} as the debug file's name; "
                "give the file its library's or program's name"
            )
        if has_invalid_characters(debug_file):
            raise NotNative(f"its name {debug_file!r} holds an invalid character")
        kind = obj.kind
        features = tuple(sorted(obj.features))
        code_id = obj.code_id
        keys = object_keys(file_format, kind, "debug" in features, debug_file, debug_id, code_id)
        if not keys:
            raise NotNative("it has no id to store it under")
        # Every backend must be able to hold every key the same way: no empty, "." or ".."
        # segment, which a directory refuses and a bucket would keep as a name.
        for key in keys:
            if any(segment in NOT_NAMES for segment in key.split("/")):
                raise NotNative(f"it would be stored under {key!r}, which is no storage key")
        binary = file_format != "pdb" and kind != "dbg"
        found.append(
            NativeObject(
                file_format=file_format,
                kind=kind,
                arch=obj.arch,
                debug_file=debug_file,
                debug_id=debug_id,
                code_file=basename if binary else None,
                code_id=code_id,
                features=features,
                keys=keys,
            )
        )
    if not found:
        raise NotNative("it holds no object")
    return found
