"""The bulk lookup path gives exactly what ``symbolic``'s own lookup gives, address by address."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
import symbolic

from symbolon.symbolication import table as table_module
from symbolon.symbolication.parse import ParsePool, build_entry, module_filename
from symbolon.symbolication.table import EntryError, SymbolTable, read_trailer
from tests.symbolication_support import DATA, sym

FIXTURES = {
    "libinlines.so.sym": ("libinlines.so", "8ED0A570BE768792AF7EF6AEDDC3230E0"),
    "plain.sym": ("plain", None),
    "examples/libdemo.so.sym": ("libdemo.so", "5C5A1B1D2E3F405162738495061728390"),
    "examples/demo.sym": ("demo.pdb", "A1B2C3D4E5F60718293A4B5C6D7E8F901"),
}


def module_id(data: bytes) -> str:
    return data.split(b"\n", 1)[0].split()[3].decode()


def build(tmp_path: Path, name: str) -> Path:
    filename = FIXTURES[name][0]
    out = tmp_path / f"{filename}.symc"
    parsed = build_entry(str(DATA / name), filename, module_id(sym(name)), str(out))
    assert parsed.ok, parsed
    return out


def reference(symcache: symbolic.SymCache, address: int):
    """What the reference service computed from symbolic's lookup."""
    if address >= 1 << 64:
        return None
    found = symcache.lookup(address)
    if not found:
        return None
    outer = found[-1]
    inlines = tuple((loc.symbol, loc.full_path, loc.line) for loc in found[:-1])
    return (outer.symbol, address - outer.sym_addr, outer.full_path, outer.line, inlines)


def flat(hits):
    """Lookups as the reference's tuples: (function, function offset, file, line, inlines)."""
    return [
        None if h is None else (h[0].name, h[1], h[0].path, h[0].line, h[0].inlines) for h in hits
    ]


def addresses_around_every_range(table: SymbolTable) -> list[int]:
    rng = random.Random(7)
    wanted = {0, 1, 2**32 - 1, 2**32, 2**40, 2**64 - 1}
    for start in table._ranges.tolist():
        wanted.update({max(start - 1, 0), start, start + 1})
    wanted.update(rng.randrange(0, 0x3000) for _ in range(2000))
    return sorted(wanted)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_bulk_lookups_equal_symbolic_everywhere(tmp_path, name):
    path = build(tmp_path, name)
    table = SymbolTable(path)
    assert table.fast
    addresses = addresses_around_every_range(table)
    expected = [reference(table._symcache, a) for a in addresses]
    assert flat(table.lookup_many(addresses)) == expected  # cold: every range resolved now
    assert flat(table.lookup_many(addresses)) == expected  # warm: from the memo
    assert flat(table.lookup_many(list(reversed(addresses)))) == list(reversed(expected))
    assert any(r and r[4] for r in expected) == (
        name in ("libinlines.so.sym", "examples/libdemo.so.sym")
    )


def test_the_binding_path_gives_the_same_answers(tmp_path, monkeypatch):
    path = build(tmp_path, "libinlines.so.sym")
    fast = SymbolTable(path)
    monkeypatch.setattr(table_module, "FAST_VERSION", -1)  # as for a format we cannot read
    slow = SymbolTable(path)
    assert not slow.fast
    addresses = addresses_around_every_range(fast)
    assert flat(slow.lookup_many(addresses)) == flat(fast.lookup_many(addresses))


def test_entries_carry_the_module_filename(tmp_path):
    windows = SymbolTable(build(tmp_path, "examples/demo.sym"))
    assert windows.module_filename == "demo.dll"
    linux = SymbolTable(build(tmp_path, "examples/libdemo.so.sym"))
    assert linux.module_filename == "libdemo.so"


def test_module_filename_rules():
    info = b"MODULE windows x86 ABC ntdll.pdb\nINFO CODE_ID 1234 ntdll.dll\nFILE 0 a.c\n"
    assert module_filename(info, "ntdll.pdb") == "ntdll.dll"
    # Split on single spaces, exactly four parts, as the reference did.
    assert module_filename(info.replace(b"dll\n", b"dll \n"), "ntdll.pdb") == "ntdll.pdb"
    code_id_only = b"MODULE Linux x86_64 ABC libxul.so\nINFO CODE_ID 1234\n"
    assert module_filename(code_id_only, "libxul.so") == "libxul.so"
    file_first = b"MODULE windows x86 ABC a.pdb\nFILE 0 a.c\nINFO CODE_ID 1 a.dll\n"
    assert module_filename(file_first, "a.pdb") == "a.pdb"
    generator = b"MODULE w x ABC a.pdb\nINFO GENERATOR mozilla/dump_syms 2.3.1\n"
    assert module_filename(generator, "a.pdb") == "2.3.1"  # the reference's quirk, kept
    crlf = b"MODULE windows x86 ABC a.pdb\r\nINFO CODE_ID 1 a.dll\r\n"
    assert module_filename(crlf, "a.pdb") == "a.dll"


def test_a_sym_file_with_only_a_module_line_is_an_empty_symcache(tmp_path):
    source = tmp_path / "empty.sym"
    source.write_bytes(b"MODULE Linux x86_64 5C5A1B1D2E3F405162738495061728390 empty.so\n")
    out = tmp_path / "empty.symc"
    parsed = build_entry(str(source), "empty.so", "5C5A1B1D2E3F405162738495061728390", str(out))
    assert parsed.ok
    assert SymbolTable(out).lookup_many([0, 100]) == [None, None]


def test_crlf_sym_files_parse(tmp_path):
    source = tmp_path / "crlf.sym"
    source.write_bytes(sym("examples/libdemo.so.sym").replace(b"\n", b"\r\n"))
    out = tmp_path / "crlf.symc"
    parsed = build_entry(
        str(source), "libdemo.so", FIXTURES["examples/libdemo.so.sym"][1], str(out)
    )
    assert parsed.ok
    assert SymbolTable(out).lookup_many([0x1008])[0][0].name == "process_request"


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # no trailer
        lambda b: b"garbage" * 10,
        lambda b: b"SYMC\x09\x00\x00\x00" + b"\x00" * 40 + b[-40:],  # tables cut short
        lambda b: b"",
    ],
)
def test_damaged_entries_are_refused(tmp_path, damage):
    path = build(tmp_path, "examples/libdemo.so.sym")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises((EntryError, ValueError)):
        SymbolTable(path)


def test_trailer_round_trip(tmp_path):
    path = build(tmp_path, "examples/demo.sym")
    data = path.read_bytes()
    length, meta = read_trailer(data)
    assert meta == {"module": "demo.dll"}
    assert symbolic.SymCache.from_bytes(data[:length]).lookup(0x5010)[0].symbol == "DemoMain"


@pytest.mark.gen_test(timeout=60)
async def test_a_parse_on_a_pool_another_job_broke_is_tried_again(tmp_path):
    """A parse process that dies fails every job of its pool; a job that was only beside the
    culprit is parsed on a new pool instead of being remembered as unparseable."""
    pool = ParsePool(workers=1, memory_budget=1024**3)
    try:
        name = "examples/libdemo.so.sym"
        filename, debug_id = FIXTURES[name]
        first = await pool.build(DATA / name, 1000, filename, debug_id, tmp_path / "1.symc")
        assert first.ok, first
        broken = pool._executor
        for process in list(broken._processes.values()):
            os.kill(process.pid, signal.SIGKILL)  # the culprit's death, as far as we know
            process.join(10)
        parsed = await pool.build(DATA / name, 1000, filename, debug_id, tmp_path / "2.symc")
        assert parsed.ok, parsed
        assert pool._executor is not broken
        assert SymbolTable(tmp_path / "2.symc").lookup_many([4104])[0] is not None
    finally:
        pool.close()
