"""The processed crash (docs/processing.md, "The processed crash"): Socorro's field names, with
``json_dump`` shaped like minidump_stackwalk's JSON output.

The walk gives threads, frames (module and offset, how each was found), modules and the crash's
type and address; symbolication gives each frame its function, file, line and inlined calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from symbolon.processing.pipeline.records import CrashMeta
from symbolon.processing.pipeline.signature import NO_THREAD, SignatureRules, signature_of
from symbolon.symbolication.request import Job, ModuleKey
from symbolon.symbolication.symbolicate import Symbolicated


@dataclass
class Processed:
    """A processed crash and what the index keeps of it."""

    document: dict[str, Any]
    signature: str | None
    missing: list[ModuleKey] = field(default_factory=list)
    failure: str | None = None


def module_keys(walked: Mapping[str, Any]) -> list[ModuleKey]:
    """Each module of the walk as symbolication names it ("" when unknown)."""
    return [
        (module.get("debug_file") or "", module.get("debug_id") or "")
        for module in walked.get("modules", [])
    ]


def symbolication_job(walked: Mapping[str, Any]) -> Job:
    """The walk's frames as one symbolication job: a stack per thread, each frame looked up
    where the walker looked it up (inside the call instruction, for a caller)."""
    stacks = []
    for thread in walked.get("threads", []):
        frames = []
        for frame in thread.get("frames", []):
            index, lookup = frame.get("module_index"), frame.get("lookup_offset")
            frames.append((-1, -1) if index is None or lookup is None else (index, lookup))
        stacks.append(frames)
    return Job(modules=module_keys(walked), stacks=stacks)


def _symbolicated_frame(frame: dict[str, Any], looked_up: list[Any]) -> dict[str, Any]:
    _, lookup, symbol, function_offset = looked_up
    shaped: dict[str, Any] = {
        "frame": frame["frame"],
        "module": frame.get("module"),
        "module_offset": frame.get("module_offset"),
        "offset": frame.get("offset"),
        "function": None,
        "function_offset": None,
        "file": None,
        "line": None,
        "trust": frame.get("trust"),
        "inlines": [],
    }
    if symbol is not None:
        # The offset from the function's start, of the frame's own address.
        own = int(frame["module_offset"], 16)
        shaped["function"] = symbol.name
        shaped["function_offset"] = hex(function_offset + own - lookup)
        shaped["file"] = symbol.path
        shaped["line"] = symbol.line or None
        shaped["inlines"] = [
            {"function": name, "file": path, "line": line or None}
            for name, path, line in symbol.inlines
        ]
    return shaped


def json_dump(
    walked: dict[str, Any], done: Symbolicated, missing: set[ModuleKey]
) -> dict[str, Any]:
    """The walk with its frames symbolicated, modules marked with ``missing_symbols``."""
    keys = module_keys(walked)
    modules = []
    for key, module in zip(keys, walked.get("modules", []), strict=True):
        module = dict(module)
        module["missing_symbols"] = key in missing
        module["loaded_symbols"] = bool(module.get("loaded_symbols")) or done.found.get(key, False)
        modules.append(module)
    threads = []
    for thread, stack in zip(walked.get("threads", []), done.stacks[0], strict=True):
        frames = [
            _symbolicated_frame(frame, looked_up)
            for frame, looked_up in zip(thread.get("frames", []), stack, strict=True)
        ]
        threads.append({**thread, "frames": frames})
    dump = {key: value for key, value in walked.items() if key not in ("warnings",)}
    dump["modules"] = modules
    dump["threads"] = threads
    return dump


def signature_for(dump: Mapping[str, Any], rules: SignatureRules) -> str:
    crashing = (dump.get("crash_info") or {}).get("crashing_thread")
    threads = dump.get("threads") or []
    if crashing is None or not 0 <= crashing < len(threads):
        return NO_THREAD
    return signature_of(threads[crashing].get("frames", []), rules)


def document(
    crash_id: str | None,
    meta: CrashMeta | None,
    dump: dict[str, Any] | None,
    signature: str | None,
    notes: list[str],
    started: datetime,
    completed: datetime,
) -> dict[str, Any]:
    """The processed crash, top-level fields as Socorro names them."""
    system = (dump or {}).get("system_info") or {}
    crash = (dump or {}).get("crash_info") or {}
    received = meta.date.isoformat() if meta is not None else None
    return {
        "uuid": crash_id,
        "signature": signature,
        "product": meta.product if meta is not None else "",
        "version": meta.version if meta is not None else "",
        "release_channel": meta.release_channel if meta is not None else "",
        # As in Socorro: the day a crash is filed under is when it was received.
        "date_processed": received,
        "submitted_timestamp": received,
        "started_datetime": started.isoformat(),
        "completed_datetime": completed.isoformat(),
        "success": dump is not None and dump.get("status") == "OK",
        "os_name": system.get("os"),
        "os_version": system.get("os_ver"),
        "cpu_arch": system.get("cpu_arch"),
        "cpu_info": system.get("cpu_info"),
        "cpu_count": system.get("cpu_count"),
        "reason": crash.get("type"),
        "address": crash.get("address"),
        "crashing_thread": crash.get("crashing_thread"),
        "processor_notes": "; ".join(notes),
        "json_dump": dump if dump is not None else {},
    }
