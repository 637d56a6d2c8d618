"""Symbolicating validated jobs, and shaping v5 and v4 answers (docs/symbolication.md).

A profiler's request has tens of thousands of frames, and building a dict per frame for
``json.dumps`` cost more than everything else together. Frames are kept as small lists and the
v5 body is written as JSON text directly, with every string still encoded by ``json.dumps`` and
the fragments that depend only on the symbol (function, file, line, inlines) encoded once per
symbol. The text is what ``json.dumps`` of the same objects gives, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _string  # what json.dumps uses for str
from typing import Any

from symbolon.metrics import symbolication_metrics as metrics
from symbolon.symbolication.request import Job, ModuleKey
from symbolon.symbolication.service import Outcome, Symbolication
from symbolon.symbolication.table import Symbol

UNKNOWN = "<unknown>"
# Distinct modules of one request obtained at once: downloads and parses overlap, and a request
# naming hundreds of missing modules does not open hundreds of connections.
MODULES_AT_ONCE = 8

# One output frame: [module, module_offset, symbol or None, function_offset].
Frame = list[Any]


@dataclass
class Symbolicated:
    stacks: list[list[list[Frame]]]  # per job, per stack, per frame
    found: dict[ModuleKey, bool]  # modules looked up: found or not
    outcomes: dict[ModuleKey, Outcome] = field(default_factory=dict)
    seconds: float = 0.0


async def symbolicate(
    service: Symbolication, jobs: list[Job], unwind: bool = False
) -> Symbolicated:
    """The frames of ``jobs`` named from their modules' symcaches; ``unwind`` when a crash's walk
    asks (cold modules' parses make their CFI indexes too, Symbolication.module)."""
    started = time.perf_counter()
    wanted: dict[ModuleKey, list[Frame]] = {}
    out_jobs: list[list[list[Frame]]] = []
    frame_count = 0
    for job in jobs:
        modules = job.modules
        out_stacks = []
        for stack in job.stacks:
            out_frames = []
            for index, offset in stack:
                key = modules[index] if index >= 0 else ("", "")
                frame = [key[0] or UNKNOWN, offset, None, 0]
                out_frames.append(frame)
                if key[0] and key[1]:  # modules without a name or id are never looked up
                    frames = wanted.get(key)
                    if frames is None:
                        frames = wanted[key] = []
                    frames.append(frame)
            frame_count += len(stack)
            out_stacks.append(out_frames)
        out_jobs.append(out_stacks)
    metrics.histogram("symbolicate.frames_count", frame_count)

    # Spellings of one module that differ only in the case of the id are obtained one after
    # the other, in sorted order: the later ones find the first one's symcache.
    groups: dict[ModuleKey, list[ModuleKey]] = {}
    for key in sorted(wanted):
        groups.setdefault((key[0], key[1].upper()), []).append(key)
    gate = asyncio.Semaphore(MODULES_AT_ONCE)
    outcomes: dict[ModuleKey, Outcome] = {}

    async def obtain(group: list[ModuleKey]) -> None:
        async with gate:
            for key in group:
                outcomes[key] = await service.module(key, unwind)

    await asyncio.gather(*(obtain(group) for group in groups.values()))
    found: dict[ModuleKey, bool] = {}
    for key in sorted(wanted):
        table = outcomes[key].table
        found[key] = table is not None
        if table is not None:
            _fill(table, wanted[key])
    return Symbolicated(out_jobs, found, outcomes, time.perf_counter() - started)


def _fill(table: Any, frames: list[Frame]) -> None:
    """Write the lookups of one module into its frames."""
    name = table.module_filename
    for frame in frames:
        frame[0] = name  # even for offset -1
    # Offsets >= 2**64 cannot be looked up (the reference crashed on them): no function.
    looked_up = [frame for frame in frames if 0 <= frame[1] < 1 << 64]
    hits = table.lookup_many([frame[1] for frame in looked_up])
    for frame, hit in zip(looked_up, hits, strict=True):
        if hit is not None:
            frame[2], frame[3] = hit


def found_modules(job: Job, found: dict[ModuleKey, bool]) -> dict[str, bool | None]:
    """Per memory-map entry of this job: found, not found, or not looked up (None).

    Lookups are shared by the jobs of a request, so a module another job referenced shows its
    result here too (docs/symbolication.md, "Answers").
    """
    return {f"{name}/{ident}": found.get((name, ident)) for name, ident in job.modules}


# -- v5 ------------------------------------------------------------------------------------------


def _file_and_line(path: str | None, line: int) -> str:
    if not path:
        return ""
    if line:
        return f', "file": {_string(path)}, "line": {line}'
    return f', "file": {_string(path)}'


class _Writer:
    """JSON text of frames; what depends only on the symbol is encoded once per symbol."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}

    @staticmethod
    def _shape(symbol: Symbol) -> tuple[str, str]:
        """(encoded function name, encoded rest of the frame), kept on the symbol."""
        tail = _file_and_line(symbol.path, symbol.line)
        if symbol.inlines:
            encoded_inlines = [
                f'{{"function": {_string(f)}{_file_and_line(p, n)}}}' for f, p, n in symbol.inlines
            ]
            tail += ', "inlines": [' + ", ".join(encoded_inlines) + "]"
        symbol.shaped = (_string(symbol.name), tail + "}")
        return symbol.shaped

    def stack(self, frames: list[Frame]) -> str:
        modules = self.modules
        shape = self._shape
        parts: list[str] = []
        append = parts.append
        for position, (module, offset, symbol, function_offset) in enumerate(frames):
            encoded_module = modules.get(module)
            if encoded_module is None:
                encoded_module = modules[module] = _string(module)
            head = (
                f'{{"frame": {position}, "module": {encoded_module}, '
                f'"module_offset": "{hex(offset)}"'
            )
            if symbol is None:
                append(head + "}")
                continue
            name, tail = symbol.shaped or shape(symbol)
            offset_hex = hex(function_offset)
            append(f'{head}, "function": {name}, "function_offset": "{offset_hex}"{tail}')
        return "[" + ", ".join(parts) + "]"


def v5_body(jobs: list[Job], done: Symbolicated, debug: dict[str, Any] | None = None) -> str:
    """The v5 answer as JSON text, formatted as ``json.dumps`` formats it."""
    writer = _Writer()
    results = []
    for job, stacks in zip(jobs, done.stacks, strict=True):
        encoded_stacks = ", ".join(writer.stack(frames) for frames in stacks)
        modules = json.dumps(found_modules(job, done.found))
        results.append(f'{{"stacks": [{encoded_stacks}], "found_modules": {modules}}}')
    body = '{"results": [' + ", ".join(results) + "]"
    if debug is not None:
        body += ', "debug": ' + json.dumps(debug)
    return body + "}"


# -- v4 ------------------------------------------------------------------------------------------


def v4_response(job: Job, done: Symbolicated) -> dict[str, Any]:
    stacks = [
        [
            f"{symbol.name if symbol is not None else hex(offset)} (in {module})"
            for module, offset, symbol, _ in stack
        ]
        for stack in done.stacks[0]
    ]
    known = [done.found.get(module) for module in job.modules]
    return {"symbolicatedStacks": stacks, "knownModules": known}


# -- Debug ---------------------------------------------------------------------------------------


def debug_block(jobs: list[Job], done: Symbolicated, seconds: float) -> dict[str, Any]:
    """The ``Debug`` header's diagnostics: for people, with the reference's key names."""
    cache = {"count": 0, "time": 0.0}
    downloads: dict[str, Any] = {"count": 0}
    parse: dict[str, Any] = {}
    save: dict[str, Any] = {}
    files: dict[str, str] = {}
    for (name, ident), outcome in done.outcomes.items():
        label = f"{name}/{ident}"
        if outcome.table is not None and outcome.table.symbol_file:
            # Which file the symbols came from: a .sym, a native debug file, a bare binary.
            files[label] = outcome.table.symbol_file
        cache["count"] += 1
        cache["hits"] = cache.get("hits", 0) + int(outcome.cache_hit)
        cache["time"] += outcome.cache_seconds
        if outcome.downloaded:
            downloads["count"] += 1
            if outcome.download_found:
                downloads.setdefault("size_per_module", {})[label] = outcome.download_size
                downloads.setdefault("time_per_module", {})[label] = outcome.download_seconds
            else:
                downloads.setdefault("fail_time_per_module", {})[label] = outcome.download_seconds
        if outcome.parsed:
            which = "time_per_module" if outcome.parse_ok else "fail_time_per_module"
            parse.setdefault(which, {})[label] = outcome.parse_seconds
        if outcome.parse_ok:
            save.setdefault("time_per_module", {})[label] = outcome.save_seconds
    downloads["size"] = sum(downloads.get("size_per_module", {}).values())
    downloads["time"] = sum(downloads.get("time_per_module", {}).values())
    parse["time"] = sum(parse.get("time_per_module", {}).values())
    save["time"] = sum(save.get("time_per_module", {}).values())
    per_module: dict[str, int] = {}
    for job in jobs:
        for label, value in found_modules(job, done.found).items():
            if value is not None:
                per_module[label] = per_module.get(label, 0) + 1
    modules: dict[str, Any] = {"count": sum(per_module.values())}
    if per_module:  # like the other per-module maps, present only when something was recorded
        modules["stacks_per_module"] = per_module
    block = {
        "cache_lookups": cache,
        "downloads": downloads,
        "time": seconds,
        "modules": modules,
        "parse_sym": parse,
        "save_symcache": save,
    }
    if files:
        block["symbol_files"] = files
    return block
