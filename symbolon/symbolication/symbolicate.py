"""Symbolicating validated jobs, and shaping v5 and v4 answers (spec/symbolication.md §6, §7)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from symbolon.metrics import symbolication_metrics as metrics
from symbolon.symbolication.request import Job, ModuleKey
from symbolon.symbolication.service import Outcome, Symbolication

UNKNOWN = "<unknown>"
# Distinct modules of one request obtained at once: downloads and parses overlap, and a request
# naming hundreds of missing modules does not open hundreds of connections.
MODULES_AT_ONCE = 8

FrameOut = dict[str, Any]


@dataclass
class Symbolicated:
    stacks: list[list[list[FrameOut]]]  # per job, per stack, per frame
    found: dict[ModuleKey, bool]  # modules looked up: found or not
    outcomes: dict[ModuleKey, Outcome] = field(default_factory=dict)
    seconds: float = 0.0


async def symbolicate(service: Symbolication, jobs: list[Job]) -> Symbolicated:
    started = time.perf_counter()
    wanted: dict[ModuleKey, list[tuple[FrameOut, int]]] = {}
    out_jobs: list[list[list[FrameOut]]] = []
    frame_count = 0
    for job in jobs:
        modules = job.modules
        out_stacks = []
        for stack in job.stacks:
            out_frames = []
            for position, (index, offset) in enumerate(stack):
                key = modules[index] if index >= 0 else ("", "")
                name = key[0] or UNKNOWN
                frame = {"frame": position, "module": name, "module_offset": hex(offset)}
                out_frames.append(frame)
                if key[0] and key[1]:  # modules without a name or id are never looked up
                    wanted.setdefault(key, []).append((frame, offset))
            frame_count += len(stack)
            out_stacks.append(out_frames)
        out_jobs.append(out_stacks)
    metrics.histogram("symbolicate.frames_count", frame_count)

    # Spellings of one module that differ only in the case of the id are obtained one after
    # the other, in sorted order: the later ones find the first one's symcache (spec §6.4).
    groups: dict[ModuleKey, list[ModuleKey]] = {}
    for key in sorted(wanted):
        groups.setdefault((key[0], key[1].upper()), []).append(key)
    gate = asyncio.Semaphore(MODULES_AT_ONCE)
    outcomes: dict[ModuleKey, Outcome] = {}

    async def obtain(group: list[ModuleKey]) -> None:
        async with gate:
            for key in group:
                outcomes[key] = await service.module(key)

    await asyncio.gather(*(obtain(group) for group in groups.values()))
    keys = sorted(wanted)
    found: dict[ModuleKey, bool] = {}
    for key in keys:
        table = outcomes[key].table
        found[key] = table is not None
        if table is not None:
            _fill(table, wanted[key])
    return Symbolicated(out_jobs, found, outcomes, time.perf_counter() - started)


def _fill(table: Any, frames: list[tuple[FrameOut, int]]) -> None:
    """Write the lookups of one module into its frames."""
    name = table.module_filename
    for frame, _ in frames:
        frame["module"] = name  # even for offset -1 (spec §6.1)
    # Offsets >= 2**64 cannot be looked up (the reference crashed on them): no function.
    looked_up = [(frame, offset) for frame, offset in frames if 0 <= offset < 1 << 64]
    results = table.lookup_many([offset for _, offset in looked_up])
    inline_memo: dict[int, list[dict[str, Any]]] = {}
    for (frame, _), result in zip(looked_up, results, strict=True):
        if result is None:
            continue
        function, function_offset, path, line, inlines = result
        frame["function"] = function
        frame["function_offset"] = hex(function_offset)
        if path:
            frame["file"] = path
            if line:
                frame["line"] = line
        if inlines:
            shaped = inline_memo.get(id(inlines))
            if shaped is None:
                shaped = inline_memo[id(inlines)] = [_inline(*i) for i in inlines]
            frame["inlines"] = shaped


def _inline(function: str, path: str | None, line: int) -> dict[str, Any]:
    shaped: dict[str, Any] = {"function": function}
    if path:
        shaped["file"] = path
        if line:
            shaped["line"] = line
    return shaped


def found_modules(job: Job, found: dict[ModuleKey, bool]) -> dict[str, bool | None]:
    """Per memory-map entry of this job: found, not found, or not looked up (None).

    Lookups are shared by the jobs of a request, so a module another job referenced shows its
    result here too (spec §6.2).
    """
    return {f"{name}/{ident}": found.get((name, ident)) for name, ident in job.modules}


def v5_response(jobs: list[Job], done: Symbolicated) -> dict[str, Any]:
    return {
        "results": [
            {"stacks": stacks, "found_modules": found_modules(job, done.found)}
            for job, stacks in zip(jobs, done.stacks, strict=True)
        ]
    }


def v4_response(job: Job, done: Symbolicated) -> dict[str, Any]:
    stacks = [
        [f"{f.get('function', f['module_offset'])} (in {f['module']})" for f in stack]
        for stack in done.stacks[0]
    ]
    known = [done.found.get(module) for module in job.modules]
    return {"symbolicatedStacks": stacks, "knownModules": known}


def debug_block(jobs: list[Job], done: Symbolicated, seconds: float) -> dict[str, Any]:
    """The ``Debug`` header's diagnostics (spec §6.5): diagnostic only, key names kept."""
    cache = {"count": 0, "time": 0.0}
    downloads: dict[str, Any] = {"count": 0}
    parse: dict[str, Any] = {}
    save: dict[str, Any] = {}
    for (name, ident), outcome in done.outcomes.items():
        label = f"{name}/{ident}"
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
    return {
        "cache_lookups": cache,
        "downloads": downloads,
        "time": seconds,
        "modules": {"count": sum(per_module.values()), "stacks_per_module": per_module},
        "parse_sym": parse,
        "save_symcache": save,
    }
