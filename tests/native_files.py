"""Real native debug files for tests, built with the system's compilers: an ELF library with its
split debug file, an executable with compressed DWARF and its stripped copy, a PE DLL with its
PDB, a fat Mach-O library (x86_64 and arm64) with its dSYM. A test calls a builder with its own directory, or the cached one (built once per session
and tag: give a tag of its own to a test that needs ids no other test uploads).

Each builder skips the test, saying why, when a tool it needs is missing.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to build native test files")


def tool(name: str) -> str:
    """``name``, or its versioned spelling (``ld64.lld-14``) where only that is installed."""
    if shutil.which(name):
        return name
    for version in range(30, 10, -1):
        if shutil.which(f"{name}-{version}"):
            return f"{name}-{version}"
    pytest.skip(f"needs {name} to build native test files")


def _run(*command: str | Path, cwd: Path) -> None:
    subprocess.run([str(c) for c in command], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class ElfLib:
    full: Path  # built with -g: symbols and DWARF
    stripped: Path  # the same library without its DWARF (same build id), named as full
    debug: Path  # objcopy --only-keep-debug: DWARF only, <name>.debug


@dataclass(frozen=True)
class ElfExe:
    full: Path  # built with -g -gz: compressed DWARF sections
    stripped: Path  # strip: no DWARF, no symbol table, named as full


@dataclass(frozen=True)
class PePdb:
    dll: Path
    pdb: Path


def elf_lib(directory: Path, name: str = "libfoo", tag: str = "") -> ElfLib:
    """``<name>.so`` (full), ``stripped/<name>.so`` and ``<name>.so.debug`` in ``directory``."""
    require("gcc", "objcopy")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.c"
    source.write_text(
        f'const char *{name}_tag(void) {{ return "{tag}"; }}\n'
        f"int {name}_add(int a, int b) {{ return a + b; }}\n"
    )
    full = directory / f"{name}.so"
    _run(
        "gcc", "-g", "-O1", "-shared", "-fPIC", "-Wl,--build-id", "-o", full, source, cwd=directory
    )
    debug = directory / f"{name}.so.debug"
    _run("objcopy", "--only-keep-debug", full, debug, cwd=directory)
    (directory / "stripped").mkdir(exist_ok=True)
    stripped = directory / "stripped" / full.name
    _run(
        "objcopy",
        "--strip-debug",
        f"--add-gnu-debuglink={debug}",
        full,
        stripped,
        cwd=directory,
    )
    return ElfLib(full, stripped, debug)


def elf_exe(directory: Path, name: str = "prog", tag: str = "") -> ElfExe:
    """``<name>`` (full, compressed DWARF) and ``stripped/<name>`` in ``directory``."""
    require("gcc", "strip")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.c"
    source.write_text(
        f'static const char tag[] = "{tag}";\n'
        "int helper(int x) { return x * 3 + tag[0]; }\n"
        "int main(int argc, char **argv) { return helper(argc); }\n"
    )
    full = directory / name
    _run("gcc", "-g", "-gz", "-O1", "-Wl,--build-id", "-o", full, source, cwd=directory)
    (directory / "stripped").mkdir(exist_ok=True)
    stripped = directory / "stripped" / name
    _run("strip", "-o", stripped, full, cwd=directory)
    return ElfExe(full, stripped)


def pe_pdb(directory: Path, name: str = "foo", tag: str = "") -> PePdb:
    """``<name>.dll`` and ``<name>.pdb`` (x86_64 Windows, CodeView) in ``directory``."""
    require("clang", "lld-link")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.c"
    source.write_text(
        f'__declspec(dllexport) const char *{name}_tag(void) {{ return "{tag}"; }}\n'
        f"__declspec(dllexport) int {name}_add(int a, int b) {{ return a + b; }}\n"
    )
    obj = directory / f"{name}.obj"
    _run(
        "clang",
        "--driver-mode=cl",
        "--target=x86_64-pc-windows-msvc",
        "/Zi",
        "/Zl",  # no default libraries: the DLL has no entry point and calls nothing
        "/c",
        f"/Fo{obj}",
        source,
        cwd=directory,
    )
    dll, pdb = directory / f"{name}.dll", directory / f"{name}.pdb"
    _run(
        "lld-link",
        "/debug",
        "/dll",
        "/noentry",
        "/nodefaultlib",
        f"/out:{dll}",
        f"/pdb:{pdb}",
        obj,
        cwd=directory,
    )
    return PePdb(dll, pdb)


@dataclass(frozen=True)
class MachO:
    fat: Path  # <name>.dylib, x86_64 and arm64, without DWARF
    dsym: Path  # <name>.dylib.dSYM/Contents/Resources/DWARF/<name>.dylib, both architectures


def macho(directory: Path, name: str = "libbar", tag: str = "") -> MachO:
    """A fat ``<name>.dylib`` and its dSYM bundle in ``directory``."""
    require("clang")
    ld, lipo, dsymutil = tool("ld64.lld"), tool("llvm-lipo"), tool("dsymutil")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.c"
    source.write_text(
        f'const char *{name}_tag(void) {{ return "{tag}"; }}\n'
        f"int {name}_add(int a, int b) {{ return a + b; }}\n"
    )
    thin = []
    for arch, target in (("x86_64", "x86_64-apple-macos11"), ("arm64", "arm64-apple-macos11")):
        obj = directory / f"{name}-{arch}.o"
        _run("clang", f"--target={target}", "-g", "-c", "-o", obj, source, cwd=directory)
        dylib = directory / f"{name}-{arch}.dylib"
        _run(
            ld,
            "-arch",
            arch,
            "-platform_version",
            "macos",
            "11.0",
            "11.0",
            "-dylib",
            "-o",
            dylib,
            obj,
            cwd=directory,
        )
        thin.append(dylib)
    fat = directory / f"{name}.dylib"
    _run(lipo, "-create", *thin, "-output", fat, cwd=directory)
    # dsymutil makes a fat dSYM through lipo, which only macOS has: one per slice, joined here.
    dwarfs = []
    for dylib in thin:
        _run(dsymutil, dylib, "-o", f"{dylib}.dSYM", cwd=directory)
        dwarfs.append(Path(f"{dylib}.dSYM") / "Contents" / "Resources" / "DWARF" / dylib.name)
    bundle = directory / f"{name}.dylib.dSYM"
    (bundle / "Contents" / "Resources" / "DWARF").mkdir(parents=True, exist_ok=True)
    dwarf = bundle / "Contents" / "Resources" / "DWARF" / fat.name
    _run(lipo, "-create", *dwarfs, "-output", dwarf, cwd=directory)
    return MachO(fat, bundle / "Contents" / "Resources" / "DWARF" / fat.name)


@functools.cache
def _session_dir() -> Path:
    path = tempfile.mkdtemp(prefix="symbolon-native-")
    atexit.register(shutil.rmtree, path, True)
    return Path(path)


@functools.cache
def cached_elf_lib(name: str = "libfoo", tag: str = "") -> ElfLib:
    return elf_lib(_session_dir() / f"lib-{name}-{tag}", name, tag)


@functools.cache
def cached_elf_exe(name: str = "prog", tag: str = "") -> ElfExe:
    return elf_exe(_session_dir() / f"exe-{name}-{tag}", name, tag)


@functools.cache
def cached_pe_pdb(name: str = "foo", tag: str = "") -> PePdb:
    return pe_pdb(_session_dir() / f"pe-{name}-{tag}", name, tag)


@functools.cache
def cached_macho(name: str = "libbar", tag: str = "") -> MachO:
    return macho(_session_dir() / f"macho-{name}-{tag}", name, tag)
