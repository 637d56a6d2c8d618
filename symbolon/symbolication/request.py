"""Symbolication request bodies: JSON → validated jobs, with the reference's exact 400 titles.

The order of the checks and the wording of every message are part of the contract
(docs/symbolication.md, "Requests and errors"): clients and the reference's tests compare
them. Shapes on which the reference crashed with a 500 are 400s here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_JOBS = 10
# Not in the reference, which had none: a request's cost grows with these, and one long name
# is repeated in every frame of the answer.
MAX_DEBUG_FILENAME = 1024
MAX_DEBUG_ID = 128
MAX_MODULES = 10_000  # per job
MAX_FRAMES = 500_000  # per request
# Python's "$" also matches before one trailing newline; kept, as the reference accepts such
# names (they are simply never found).
DEBUG_FILENAME = re.compile(r"^[a-zA-Z0-9_.+{}@<> -]*$")
DEBUG_ID = re.compile(r"^[a-fA-F0-9]*$")

ModuleKey = tuple[str, str]  # (debug_filename, debug_id), as sent
Frame = tuple[int, int]  # (module_index, module_offset)


class BadRequest(Exception):
    """A 400 with ``{"title": title}``; ``reason`` tags the request_error metric, if any."""

    def __init__(self, title: str, reason: str | None = None):
        super().__init__(title)
        self.title = title
        self.reason = reason


@dataclass(frozen=True)
class Job:
    modules: list[ModuleKey]
    stacks: list[list[Frame]]


def parse_json(body: bytes) -> Any:
    """The body as JSON whatever the Content-Type; UTF-8 (BOM allowed), UTF-16 or UTF-32."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # includes JSONDecodeError and UnicodeDecodeError
        raise BadRequest("Payload is not valid JSON", "bad_json") from None


def v5_jobs(payload: Any) -> list[Any]:
    """The unvalidated jobs of a v5 payload: ``{"jobs": [...]}``, or the payload itself."""
    if isinstance(payload, dict) and "jobs" in payload:
        raw = payload["jobs"]
        # The reference iterates whatever it finds: strings by character, objects by key.
        if not isinstance(raw, list | str | dict):
            raise BadRequest("job 0 is invalid")
    else:
        raw = [payload]
    if len(raw) > MAX_JOBS:  # checked first: a huge string is not expanded
        raise BadRequest(
            f"please limit number of jobs in a single request to <= {MAX_JOBS}", "too_many_jobs"
        )
    return list(raw)


def check_size(jobs: list[Job]) -> list[Job]:
    """The jobs, unless their frames together pass MAX_FRAMES."""
    if sum(len(stack) for job in jobs for stack in job.stacks) > MAX_FRAMES:
        raise BadRequest(
            f"please limit number of frames in a single request to <= {MAX_FRAMES}",
            "too_many_frames",
        )
    return jobs


def v4_job(payload: Any) -> Job:
    """v4 takes the payload as its one job; a ``jobs`` key means nothing to it."""
    return validate_job(0, payload)


def _is_int(value: Any) -> bool:
    # JSON true/false pass as 1/0, as in the reference (bool is an int subclass).
    return isinstance(value, int)


def _check_frame(bad: Any, s: int, f: int, frame: Any, module_count: int) -> Frame:
    """The frame as (index, offset), or the first rule it breaks, in the reference's order."""
    if not isinstance(frame, list) or len(frame) != 2:
        raise bad(f"stack {s} frame {f} is not a list of two items")
    index, offset = frame
    if not _is_int(index):
        raise bad(f"stack {s} frame {f} has an invalid module_index")
    if not -1 <= index < module_count:
        raise bad(f"stack {s} frame {f} has a module_index that isn't in modules")
    if not _is_int(offset) or offset < -1:
        raise bad(f"stack {s} frame {f} has an invalid module_offset")
    return (int(index), int(offset))


def validate_job(i: int, job: Any) -> Job:
    if not isinstance(job, dict):
        raise BadRequest(f"job {i} is invalid")
    if "stacks" not in job:
        raise BadRequest(f"job {i} is invalid: no stacks specified")
    if "memoryMap" not in job:
        raise BadRequest(f"job {i} is invalid: no memoryMap specified")
    modules = _validate_modules(i, job["memoryMap"])
    stacks = _validate_stacks(i, job["stacks"], len(modules))
    return Job(modules=modules, stacks=stacks)


def _validate_modules(i: int, memory_map: Any) -> list[ModuleKey]:
    def bad(message: str) -> BadRequest:
        return BadRequest(f"job {i} has invalid modules: {message}", "invalid_modules")

    if not isinstance(memory_map, list):
        raise bad("modules must be a list")
    if len(memory_map) > MAX_MODULES:
        raise bad(f"more than {MAX_MODULES} modules")
    modules: list[ModuleKey] = []
    for j, entry in enumerate(memory_map):
        if not isinstance(entry, list) or len(entry) != 2:
            raise bad(f"module index {j} does not have a debug_filename and debug_id")
        filename, debug_id = entry
        if (
            not isinstance(filename, str)
            or len(filename) > MAX_DEBUG_FILENAME
            or not DEBUG_FILENAME.match(filename)
        ):
            raise bad(f"module index {j} has an invalid debug_filename")
        if (
            not isinstance(debug_id, str)
            or len(debug_id) > MAX_DEBUG_ID
            or not DEBUG_ID.match(debug_id)
        ):
            raise bad(f"module index {j} has an invalid debug_id")
        modules.append((filename, debug_id))
    return modules


def _validate_stacks(i: int, stacks: Any, module_count: int) -> list[list[Frame]]:
    def bad(message: str) -> BadRequest:
        return BadRequest(f"job {i} has invalid stacks: {message}", "invalid_stacks")

    if not isinstance(stacks, list):
        raise bad("stacks must be a list of lists")
    if not stacks:
        raise bad("no stacks specified")
    result: list[list[Frame]] = []
    for s, stack in enumerate(stacks):
        if not isinstance(stack, list):
            raise bad(f"stack {s} is not a list")
        frames: list[Frame] = []
        append = frames.append
        for f, frame in enumerate(stack):
            # The hot loop of a profiler's request: type() checks first, the rules after.
            if type(frame) is list and len(frame) == 2:
                index, offset = frame
                if (
                    type(index) is int
                    and type(offset) is int
                    and -1 <= index < module_count
                    and offset >= -1
                ):
                    append((index, offset))
                    continue
            append(_check_frame(bad, s, f, frame, module_count))
        result.append(frames)
    return result
