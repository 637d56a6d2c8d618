"""What the crash page shows of a processed crash (docs/processing.md, "The processed crash").

A processed crash is JSON written by this version or an older one, or by a site's own processor
into the same store: every field may be missing or of another type. Each is read here into text
(or None) so that the template never meets a shape it does not expect; the template escapes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Rows a page holds at most: a walk may give 10,000 frames a thread and 200,000 a dump.
CRASHING_FRAMES = 500
OTHER_FRAMES = 100
OTHER_THREADS = 100
MODULES = 2000
NOTES = 100
INLINES = 20
TEXT = 2000


def text(value: Any) -> str | None:
    """A value as text: None when absent or empty; JSON for what is not a scalar."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value[:TEXT]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)[:TEXT]


def moment(value: Any) -> str | None:
    """An ISO 8601 time as the pages show times; other text as it is."""
    shown = text(value)
    if shown is None:
        return None
    try:
        found = datetime.fromisoformat(shown.replace("Z", "+00:00"))
    except ValueError:
        return shown
    if found.tzinfo is None:
        found = found.replace(tzinfo=UTC)
    return found.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 10:
        return int(value.strip())
    return None


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Inline:
    function: str | None
    location: str | None


@dataclass(frozen=True)
class Frame:
    number: str
    module: str | None
    function: str | None
    function_offset: str | None
    # Where the frame is when no function names it: the offset in its module, else the address.
    address: str | None
    location: str | None
    trust: str | None
    inlines: list[Inline]


@dataclass(frozen=True)
class Thread:
    index: int
    thread_id: str | None
    name: str | None
    frames: list[Frame]
    frame_count: int
    truncated: bool  # the walker stopped at its frame limit
    left_out: int  # frames this page does not show

    @property
    def label(self) -> str:
        shown = f"Thread {self.index}"
        if self.thread_id:
            shown += f" (id {self.thread_id})"
        if self.name:
            shown += f": {self.name}"
        return shown


@dataclass(frozen=True)
class Module:
    filename: str | None
    debug_file: str | None
    debug_id: str | None
    code_id: str | None
    version: str | None
    missing: bool
    loaded: bool


@dataclass
class ProcessedView:
    success: bool | None
    signature: str | None
    crash_reason: str | None
    address: str | None
    assertion: str | None
    crashing_index: int | None
    crashing: Thread | None
    others: list[Thread] = field(default_factory=list)
    threads_left_out: int = 0
    modules: list[Module] = field(default_factory=list)
    modules_left_out: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    system: list[tuple[str, str]] = field(default_factory=list)
    times: list[tuple[str, str]] = field(default_factory=list)

    @property
    def missing_modules(self) -> int:
        return sum(1 for m in self.modules if m.missing)


def location(file: Any, line: Any) -> str | None:
    shown = text(file)
    if shown is None:
        return None
    at = number(line)
    return f"{shown}:{at}" if at is not None else shown


def frame_of(raw: Any, index: int) -> Frame:
    found = mapping(raw)
    function = text(found.get("function"))
    inlines = [
        Inline(
            text(mapping(i).get("function")),
            location(mapping(i).get("file"), mapping(i).get("line")),
        )
        for i in items(found.get("inlines"))[:INLINES]
    ]
    given = number(found.get("frame"))
    return Frame(
        number=str(given if given is not None else index),
        module=text(found.get("module")),
        function=function,
        function_offset=text(found.get("function_offset")),
        address=text(found.get("module_offset")) or text(found.get("offset")),
        location=location(found.get("file"), found.get("line")),
        trust=text(found.get("trust")),
        inlines=inlines,
    )


def thread_of(raw: Any, index: int, limit: int) -> Thread:
    found = mapping(raw)
    frames = items(found.get("frames"))
    return Thread(
        index=index,
        thread_id=text(found.get("thread_id")),
        name=text(found.get("thread_name")),
        frames=[frame_of(f, i) for i, f in enumerate(frames[:limit])],
        frame_count=len(frames),
        truncated=found.get("frames_truncated") is True,
        left_out=max(0, len(frames) - limit),
    )


def module_of(raw: Any) -> Module:
    found = mapping(raw)
    return Module(
        filename=text(found.get("filename")) or text(found.get("code_file")),
        debug_file=text(found.get("debug_file")),
        debug_id=text(found.get("debug_id")),
        code_id=text(found.get("code_id")),
        version=text(found.get("version")),
        missing=found.get("missing_symbols") is True,
        loaded=found.get("loaded_symbols") is True,
    )


def view_of(processed: Any) -> ProcessedView:
    """The page's view of a processed crash, whatever its shape."""
    crash = mapping(processed)
    dump = mapping(crash.get("json_dump"))
    info = mapping(dump.get("crash_info"))
    threads = items(dump.get("threads"))
    crashing_index = number(crash.get("crashing_thread"))
    if crashing_index is None:
        crashing_index = number(info.get("crashing_thread"))
    if crashing_index is not None and not 0 <= crashing_index < len(threads):
        crashing_index = None
    crashing = (
        thread_of(threads[crashing_index], crashing_index, CRASHING_FRAMES)
        if crashing_index is not None
        else None
    )
    others = [thread_of(t, i, OTHER_FRAMES) for i, t in enumerate(threads) if i != crashing_index]
    modules = items(dump.get("modules"))
    notes = crash.get("processor_notes")
    if isinstance(notes, list):
        note_list = [n for n in (text(x) for x in notes) if n]
    else:
        note_list = [n.strip() for n in (text(notes) or "").split("; ") if n.strip()]
    success = crash.get("success")
    system = mapping(dump.get("system_info"))
    facts = (
        ("OS", crash.get("os_name") or system.get("os")),
        ("OS version", crash.get("os_version") or system.get("os_ver")),
        ("CPU", crash.get("cpu_arch") or system.get("cpu_arch")),
        ("CPU info", crash.get("cpu_info") or system.get("cpu_info")),
        ("CPUs", crash.get("cpu_count") or system.get("cpu_count")),
    )
    times = (
        ("Processing started", crash.get("started_datetime")),
        ("Processing ended", crash.get("completed_datetime")),
    )
    return ProcessedView(
        success=success if isinstance(success, bool) else None,
        signature=text(crash.get("signature")),
        crash_reason=text(crash.get("reason")) or text(info.get("type")),
        address=text(crash.get("address")) or text(info.get("address")),
        assertion=text(info.get("assertion")),
        crashing_index=crashing_index,
        crashing=crashing,
        others=others[:OTHER_THREADS],
        threads_left_out=max(0, len(others) - OTHER_THREADS),
        modules=[module_of(m) for m in modules[:MODULES]],
        modules_left_out=max(0, len(modules) - MODULES),
        notes=note_list[:NOTES],
        error=text(dump.get("error")) if dump.get("status") == "ERROR" else None,
        system=[(label, shown) for label, value in facts if (shown := text(value))],
        times=[(label, shown) for label, value in times if (shown := moment(value))],
    )
