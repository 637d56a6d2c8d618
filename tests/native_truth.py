"""Ground truth for symbolication from native debug files: a C++ library built here with g++ at
-O2 (templates, inline functions nested in blocks, hot/cold splitting), addresses sampled across
its functions, and what ``llvm-symbolizer --inlining`` says of each, compared frame chain by frame
chain (function, file, line of every inlined call and of the outer function). Names on both sides
go through the same demangler and paths are compared normalised, so that what is compared is
which function, file and line, not how they are spelled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import native_files
from tests.conftest import running_worker
from tests.uploads import UPLOAD, make_zip, multipart, token_for
from tests.uploads import post as post_upload

SOURCE = Path(__file__).parent / "data" / "native" / "inlines_lib.cpp"
LIBRARY = "libinlines.so"
FUNCTION_TYPES = frozenset("TtWw")

# (function, file, line) per frame, innermost first, the outer function last.
Chain = list[tuple[str, str, int]]


def tools_missing() -> str | None:
    for tool in ("g++", "llvm-symbolizer", "nm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def build_library(directory: Path, dwarf: int | None, unique: bool = True) -> Path:
    """The library, unstripped, at DWARF ``dwarf`` (None: the compiler's default, 5); a
    ``unique`` one gets a build id (so a module id) of its own, as builds are reproducible."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / LIBRARY
    flags = ["-g", "-O2", "-fPIC", "-shared"]
    if unique:
        flags.append(f"-Wl,--build-id=0x{uuid.uuid4().hex}")
    if dwarf is not None:
        flags.insert(1, f"-gdwarf-{dwarf}")
    subprocess.run(["g++", *flags, str(SOURCE), "-o", str(out)], check=True)
    return out


def strip_debug(library: Path, out: Path) -> Path:
    """A copy of the library without its debug info: the symbol table only."""
    subprocess.run(["strip", "--strip-debug", "-o", str(out), str(library)], check=True)
    return out


def breakpad_id(path: Path) -> str:
    """The module's id as a memory map names it (the contract's ID)."""
    from symbolic.debuginfo import Archive

    (obj,) = list(Archive.open(str(path)).iter_objects())
    hex_id = obj.debug_id.replace("-", "")
    uuid = hex_id[:32].upper()
    age = hex_id[32:] or "0"
    return uuid + format(int(age, 16), "X")


def function_ranges(path: Path) -> list[tuple[int, int, str]]:
    """(start, size, symbol) of the functions of the symbol table, hot and cold parts alike."""
    listing = subprocess.run(
        ["nm", "-S", "--defined-only", str(path)], check=True, capture_output=True, text=True
    ).stdout
    ranges = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in FUNCTION_TYPES and int(parts[1], 16) > 0:
            ranges.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    return sorted(set(ranges))


def sample_addresses(path: Path, count: int = 200, seed: int = 7) -> list[int]:
    """``count`` distinct addresses spread over the functions' bytes (a function gets a share in
    proportion to its size, and at least its entry)."""
    ranges = function_ranges(path)
    chosen = {start for start, _, _ in ranges}
    every = [start + offset for start, size, _ in ranges for offset in range(size)]
    rng = random.Random(seed)
    rest = [a for a in every if a not in chosen]
    chosen.update(rng.sample(rest, max(0, min(len(rest), count - len(chosen)))))
    return sorted(chosen)[: max(count, len(ranges))]


def llvm_chains(path: Path, addresses: list[int]) -> list[Chain]:
    """What llvm-symbolizer says of each address, its names demangled by the demangler answers
    use (LLVM's own differs in style, and leaves some names it cannot read mangled)."""
    from symbolon.symbolication.demangle import demangle

    text = "\n".join(hex(a) for a in addresses) + "\n"
    answer = subprocess.run(
        ["llvm-symbolizer", "--inlining", "--no-demangle", "--output-style=JSON", f"--obj={path}"],
        input=text,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    chains = []
    for line in answer.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        chains.append(
            [(demangle(f["FunctionName"]), f["FileName"], int(f["Line"])) for f in entry["Symbol"]]
        )
    assert len(chains) == len(addresses)
    return chains


def frame_chain(frame: dict[str, Any]) -> Chain | None:
    """A v5 frame as a chain, or None when no symbol covers it."""
    if "function" not in frame:
        return None
    chain = [(i["function"], i.get("file", ""), i.get("line", 0)) for i in frame.get("inlines", [])]
    chain.append((frame["function"], frame.get("file", ""), frame.get("line", 0)))
    return chain


def symbol_chain(symbol: Any) -> Chain:
    """A ``table.Symbol`` as a chain."""
    chain = [(f, p or "", n) for f, p, n in symbol.inlines]
    chain.append((symbol.name, symbol.path or "", symbol.line))
    return chain


@dataclass
class Agreement:
    total: int = 0
    agreed: int = 0
    categories: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.agreed / self.total if self.total else 0.0

    def report(self, label: str) -> str:
        lines = [
            f"{label}: {self.agreed}/{self.total} whole chains agree ({100 * self.share:.1f}%)"
        ]
        for category, number in self.categories.most_common():
            lines.append(f"  {number:4d} {category}")
            lines.extend(f"        {example}" for example in self.examples[category][:2])
        return "\n".join(lines)


def difference(truth: Chain, ours: Chain | None) -> str | None:
    """The category of the first difference, None when the chains agree."""
    if ours is None:
        return "no symbol"
    if [f for f, _, _ in truth] != [f for f, _, _ in ours]:
        if len(truth) != len(ours):
            return "inline depth"
        if truth[-1][0] != ours[-1][0]:
            if truth[-1][0] in (ours[-1][0] + " [clone .cold]", ours[-1][0] + ".cold"):
                return "cold part: llvm names the .cold clone"
            return "outer function name"
        return "inlined function name"
    for level, (want, got) in enumerate(zip(truth, ours, strict=True)):
        where = "outer" if level == len(truth) - 1 else "inlined"
        # One file, however spelled: symbolic cleans ``src/./a.c`` to ``src/a.c``.
        if _path(want[1]) != _path(got[1]):
            return f"{where} file"
        if want[2] != got[2]:
            return f"{where} line"
    return None


def _path(path: str) -> str:
    return os.path.normpath(path) if path else ""


def compare(addresses: list[int], truth: list[Chain], ours: list[Chain | None]) -> Agreement:
    result = Agreement()
    for address, want, got in zip(addresses, truth, ours, strict=True):
        result.total += 1
        category = difference(want, got)
        if category is None:
            result.agreed += 1
            continue
        result.categories[category] += 1
        result.examples.setdefault(category, []).append(f"{address:#x}: llvm {want} / ours {got}")
    return result


PDB_SOURCE = """
static inline int sq(int x) { return x * x; }
extern "C" __declspec(dllexport) int compute(int n) {
    int s = 0;
    for (int i = 0; i < n; ++i) s += sq(i) ^ n;
    return s;
}
"""


def build_pdb(directory: Path, name: str = "compute") -> Path | None:
    """A Windows DLL's PDB built with clang in cl mode and lld-link, no C runtime needed;
    None where those tools are missing."""
    if shutil.which("clang") is None or shutil.which("lld-link") is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.cpp"
    source.write_text(PDB_SOURCE)
    obj = directory / f"{name}.obj"
    subprocess.run(
        ["clang", "--driver-mode=cl", "/nologo", "/c", "/Zi", "/O2", str(source), f"/Fo{obj}"],
        check=True,
    )
    pdb = directory / f"{name}.pdb"
    link = ["lld-link", "/nologo", "/dll", "/noentry", "/nodefaultlib", "/debug", f"/pdb:{pdb}"]
    subprocess.run([*link, str(obj), f"/out:{directory / name}.dll"], check=True)
    return pdb


async def upload_native(
    http_client: Any,
    base_url: str,
    settings: Any,
    runtime: Any,
    members: dict[str, bytes],
    worker: bool = True,
) -> None:
    """Upload an archive as clients do, and wait for its files to be stored (by a task worker
    of its own unless ``worker`` is False: the caller runs one)."""
    token, _ = await token_for(runtime, UPLOAD)
    body, content_type = multipart({"symbols.zip": make_zip(members)})
    with running_worker(settings) if worker else contextlib.nullcontext():
        response = await post_upload(http_client, base_url, body, content_type, token)
        assert response.code in (201, 202), response.body
        upload_id = json.loads(response.body)["upload"]["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = await runtime.db.fetchrow(
                "SELECT completed_at FROM uploads WHERE id = $1", upload_id
            )
            if row is not None and row["completed_at"] is not None:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"upload {upload_id} was not completed")


def mach_o_functions(path: Path, arch: str) -> list[tuple[str, int]]:
    """(name, offset from the image's start) of the functions of one slice of a Mach-O file,
    from its symbol table (names without the leading underscore)."""
    listing = subprocess.run(
        [native_files.tool("llvm-nm"), "--defined-only", f"--arch={arch}", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("T", "t"):
            found.append((parts[2].removeprefix("_"), int(parts[0], 16)))
    return sorted(found, key=lambda item: item[1])
