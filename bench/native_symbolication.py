#!/usr/bin/env python
"""Symbolication from native debug files against the same modules' Breakpad ``.sym`` files.

    .venv/bin/python bench/native_symbolication.py [--addresses 2000] [--big]

For a C++ library built here with ``g++ -O2`` at DWARF 4 and 5 (tests/data/native), and for a
real C library with debug info when the machine has one (a pyenv ``libpython``), addresses are
sampled across the functions and each is symbolicated from a symcache made from the native file
and from one made from its ``.sym`` (Breakpad's ``dump_syms``, see make_syms.py), then compared
with ``llvm-symbolizer --inlining``: the share of addresses whose whole frame chain (function,
file, line of every inlined call and the outer function) agrees, and what the others differ in.

``--big`` adds the cost of a cold parse of a large module both ways (the >= 100 MB .sym library
make_syms.py builds, kept in .data/bench-syms): wall and CPU seconds and the parse process's peak
memory, each from gzip as storage keeps them, in a fresh process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.make_syms import REAL_LIBRARY_GLOBS, has_debug_info, make_big, run_dump_syms  # noqa: E402
from tests.native_truth import (  # noqa: E402
    LIBRARY,
    Agreement,
    breakpad_id,
    build_library,
    compare,
    llvm_chains,
    sample_addresses,
    symbol_chain,
)

PARSE_ONCE = """
import json, resource, sys, time
from symbolon.symbolication.parse import build_entry
path, name, debug_id, out = sys.argv[1:5]
wall, cpu = time.perf_counter(), time.process_time()
parsed = build_entry(path, name, debug_id, out, True, None, name)
assert parsed.ok, parsed
print(json.dumps({
    "wall": time.perf_counter() - wall,
    "cpu": time.process_time() - cpu,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def symcache_chains(source: Path, name: str, debug_id: str, addresses: list[int], tmp: Path):
    from symbolon.symbolication.parse import build_entry
    from symbolon.symbolication.table import SymbolTable

    out = tmp / f"{source.name}.symc"
    parsed = build_entry(str(source), name, debug_id, str(out), False, None, source.name)
    assert parsed.ok, parsed
    table = SymbolTable(out)
    return [symbol_chain(hit[0]) if hit else None for hit in table.lookup_many(addresses)]


def agreement_both_ways(
    binary: Path, name: str, count: int, tmp: Path
) -> tuple[Agreement, Agreement]:
    debug_id = breakpad_id(binary)
    addresses = sample_addresses(binary, count)
    truth = llvm_chains(binary, addresses)
    native = compare(addresses, truth, symcache_chains(binary, name, debug_id, addresses, tmp))
    sym = tmp / f"{name}.sym"
    run_dump_syms(binary, sym)
    from_sym = compare(addresses, truth, symcache_chains(sym, name, debug_id, addresses, tmp))
    return native, from_sym


def real_library() -> Path | None:
    import glob

    for pattern in REAL_LIBRARY_GLOBS:
        for name in sorted(glob.glob(pattern, recursive=True)):
            if has_debug_info(Path(name)):
                return Path(name)
    return None


def parse_cost(source: Path, name: str, debug_id: str, tmp: Path) -> dict[str, float]:
    packed = tmp / f"{source.name}.gz"
    packed.write_bytes(gzip.compress(source.read_bytes(), 6))
    done = subprocess.run(
        [sys.executable, "-c", PARSE_ONCE, str(packed), name, debug_id, str(tmp / "big.symc")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    figures: dict[str, float] = json.loads(done.stdout)
    figures["stored_mb"] = packed.stat().st_size / 1e6
    figures["file_mb"] = source.stat().st_size / 1e6
    figures["symcache_mb"] = (tmp / "big.symc").stat().st_size / 1e6
    packed.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=2000)
    parser.add_argument("--big", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="native-bench-") as directory:
        tmp = Path(directory)
        modules = [
            (f"{LIBRARY} DWARF 4", build_library(tmp / "dwarf4", 4), LIBRARY),
            (f"{LIBRARY} DWARF 5", build_library(tmp / "dwarf5", None), LIBRARY),
        ]
        real = real_library()
        if real is not None:
            modules.append((real.name, real, real.name))
        for label, binary, name in modules:
            native, from_sym = agreement_both_ways(binary, name, args.addresses, tmp)
            print(native.report(f"{label}, native file"))
            print(from_sym.report(f"{label}, .sym (dump_syms)"))
            print()
        if args.big:
            sym = make_big(ROOT / ".data" / "bench-syms", 100)
            library = sym.with_suffix("")
            debug_id = breakpad_id(library)
            started = time.perf_counter()
            for label, source in (("native", library), (".sym", sym)):
                figures = parse_cost(source, library.name, debug_id, tmp)
                print(
                    f"cold parse of {library.name} from its {label} "
                    f"({figures['file_mb']:.0f} MB, {figures['stored_mb']:.0f} MB gzip): "
                    f"{figures['wall']:.2f} s wall, {figures['cpu']:.2f} s CPU, "
                    f"peak {figures['peak_mb']:.0f} MB, symcache {figures['symcache_mb']:.0f} MB"
                )
            print(f"({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
