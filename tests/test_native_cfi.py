"""CFI indexes from native files (docs/processing.md, "CFI indexes in the symbol caches"): the
native file's unwind information and its functions, as a .sym would give them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from symbolon.processing.cfi import CfiIndex
from symbolon.symbolication.parse import build_entry
from tests.native_truth import breakpad_id, build_library, function_ranges, tools_missing

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))


def companion_index(binary: Path, tmp_path: Path) -> CfiIndex:
    """The index the symcache's parse job makes beside it."""
    texts: list[bytes] = []
    parsed = build_entry(
        str(binary),
        binary.name,
        breakpad_id(binary),
        str(tmp_path / "entry.symc"),
        companion=(lambda data, _out: texts.append(data), str(tmp_path / "cfi")),
    )
    assert parsed.ok and parsed.companion_ok, parsed
    return CfiIndex.from_sym_lines(texts[0].splitlines())


def test_a_native_files_index_has_its_cfi_and_its_functions(tmp_path):
    library = build_library(tmp_path, None)
    index = companion_index(library, tmp_path)
    assert index.has_cfi
    for start, size, name in function_ranges(library):
        if name.startswith(("_init", "_fini")):
            continue
        assert index.has_function(start) and index.has_function(start + size - 1), name
        assert index.find_cfi(start) is not None, name


def test_a_module_without_symbols_gets_its_functions_from_its_unwind_ranges(tmp_path):
    # Hidden visibility and no symbol table: the symcache knows no function at all.
    source = tmp_path / "hidden.c"
    source.write_text("static int f(int x) { return x * 3; }\nint (*volatile p)(int) = f;\n")
    binary = tmp_path / "libhidden.so"
    subprocess.run(
        ["gcc", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", str(source), "-o", str(binary)],
        check=True,
    )
    subprocess.run(["strip", "--strip-all", str(binary)], check=True)
    index = companion_index(binary, tmp_path)
    assert index.has_cfi
    covered = [a for a in range(0x1000, 0x2000) if index.find_cfi(a) is not None]
    assert covered
    # Without FUNC records the stack scanner would take no address of the module for code.
    assert all(index.has_function(a) for a in covered)
