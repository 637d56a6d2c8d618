"""``/symbolication/``: symbolicate a stack from a form, through the same request checks and the
same symbolication as ``POST /symbolicate/v5`` (handlers/symbolicate.py), and show the frames.

The form takes a v5 request as JSON, or a list of modules and a list of addresses, which become
one v5 job. The API is open to anyone; the page, like every page of the UI but the home page and
help, is for people signed in.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from symbolon.conf import Settings
from symbolon.symbolication import request
from symbolon.symbolication.symbolicate import symbolicate, v5_body
from symbolon.web.page import CurlCommand, PageHandler

PATH = "/symbolication/"
# Frames listed on the page; the API answers them all.
MAX_SHOWN_FRAMES = 2000
# A curl command carries the request inline up to this size, else reads it from a file.
INLINE_PAYLOAD = 2000
EXAMPLE_MODULES = (
    "xul.pdb 44E4EC8C2F41492B9369D6B9A059577C2\nlibc.so 5E9F2D6E1C0B4A3D8E7F6A5B4C3D2E1F0"
)
EXAMPLE_ADDRESSES = "0 0xb2e3f7\nxul.pdb 65802\n1 0x1f00"
EXAMPLE_PAYLOAD = json.dumps(
    {
        "jobs": [
            {
                "memoryMap": [["xul.pdb", "44E4EC8C2F41492B9369D6B9A059577C2"]],
                "stacks": [[[0, 11723767], [0, 65802]]],
            }
        ]
    },
    indent=1,
)
MODES = ("modules", "json")
# Room in the page's body limit beyond the API's for the form's other fields and the multipart
# framing the forms are sent with (percent-encoding could triple a request instead).
FORM_HEADROOM = 64 * 1024


class FormProblem(Exception):
    """What is wrong with the form's modules or addresses, for the person who typed them."""


@dataclass
class Shown:
    """The answer, laid out for the page."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    cut: bool = False


def parse_offset(text: str) -> int:
    cleaned = text.strip().lower().replace("_", "")
    try:
        return int(cleaned, 16) if cleaned.startswith("0x") else int(cleaned)
    except ValueError:
        raise FormProblem(f"'{text}' is not an address (decimal, or hex with 0x)") from None


def job_from_lists(modules_text: str, addresses_text: str) -> dict[str, Any]:
    """One v5 job from a module per line (``debug_file debug_id``) and an address per line
    (``<module number or debug file> <offset>``; ``-1`` for no module)."""
    memory_map: list[list[str]] = []
    for number, line in enumerate(modules_text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormProblem(f"Module line {number}: give a debug file and a debug id")
        memory_map.append(parts)
    names = {name: i for i, (name, _) in reversed(list(enumerate(memory_map)))}
    frames: list[list[int]] = []
    for number, line in enumerate(addresses_text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormProblem(f"Address line {number}: give a module and an offset")
        module, offset = parts
        if re.fullmatch(r"-?\d+", module):
            index = int(module)
        elif module in names:
            index = names[module]
        else:
            raise FormProblem(f"Address line {number}: no module '{module}' in the module list")
        frames.append([index, parse_offset(offset)])
    if not frames:
        raise FormProblem("Give at least one address")
    return {"memoryMap": memory_map, "stacks": [frames]}


def lay_out(payload_jobs: list[request.Job], answer: dict[str, Any]) -> Shown:
    shown = Shown()
    for job, result in zip(payload_jobs, answer["results"], strict=True):
        stacks = []
        for stack in result["stacks"]:
            room = max(0, MAX_SHOWN_FRAMES - shown.frames)
            shown.cut = shown.cut or len(stack) > room
            stacks.append(stack[:room])
            shown.frames += min(len(stack), room)
        modules = [
            {
                "name": name,
                "debug_id": ident,
                "found": result["found_modules"].get(f"{name}/{ident}"),
            }
            for name, ident in job.modules
        ]
        shown.jobs.append({"stacks": stacks, "modules": modules})
    return shown


class SymbolicationPage(PageHandler):
    """``GET``: the form; ``POST``: the form with the symbolicated frames."""

    title = "Symbolication"
    nav = PATH

    @classmethod
    def max_body_size(cls, settings: Settings) -> int:
        """What ``POST /symbolicate/v5`` takes, and the form around it."""
        return settings.symbolication_max_body_size + FORM_HEADROOM

    async def get(self) -> None:
        self.require_signin()
        self.show(mode="modules", values={"modules": "", "addresses": "", "payload": ""})

    async def post(self) -> None:
        self.require_signin()
        mode = self.get_body_argument("mode", "modules")
        mode = mode if mode in MODES else "modules"
        values = {
            "modules": self.get_body_argument("modules", ""),
            "addresses": self.get_body_argument("addresses", ""),
            "payload": self.get_body_argument("payload", ""),
        }
        limit = self.runtime.settings.symbolication_max_body_size
        try:
            if mode == "json":
                body = values["payload"].encode()
                if len(body) > limit:
                    return self.too_large(mode, values, len(body), limit)
                payload = request.parse_json(body)
            else:
                payload = {"jobs": [job_from_lists(values["modules"], values["addresses"])]}
                size = len(json.dumps(payload, separators=(",", ":")))
                if size > limit:
                    return self.too_large(mode, values, size, limit)
            # The API's own checks, in its order, with its messages.
            raw = request.v5_jobs(payload)
            jobs = request.check_size([request.validate_job(i, job) for i, job in enumerate(raw)])
        except (FormProblem, request.BadRequest) as exc:
            message = exc.title if isinstance(exc, request.BadRequest) else str(exc)
            return self.show(mode=mode, values=values, error=message, status=400)
        done = await symbolicate(self.runtime.symbolication, jobs)
        answer = json.loads(v5_body(jobs, done))
        sent = json.dumps(payload, separators=(",", ":"))
        self.show(mode=mode, values=values, shown=lay_out(jobs, answer), sent=sent)

    def too_large(self, mode: str, values: dict[str, str], size: int, limit: int) -> None:
        """The API's refusal of a body past its limit, in the form."""
        message = f"Request body too large: {size} bytes, the limit is {limit} bytes"
        self.show(mode=mode, values=values, error=message, status=413)

    def show(
        self,
        mode: str,
        values: dict[str, str],
        error: str | None = None,
        status: int = 200,
        shown: Shown | None = None,
        sent: str | None = None,
    ) -> None:
        site = f"{self.request.protocol}://{self.request.host}"
        example = sent or json.dumps(json.loads(EXAMPLE_PAYLOAD), separators=(",", ":"))
        data = example if len(example) <= INLINE_PAYLOAD else "@request.json"
        self.curl_commands.append(
            CurlCommand(
                "This request (no token needed)"
                + (", saved as request.json:" if data != example else ":"),
                shlex.join(["curl", "-s", "-X", "POST", f"{site}/symbolicate/v5", "-d", data]),
            )
        )
        self.page(
            "symbolication.html",
            status=status,
            mode=mode,
            values=values,
            error=error,
            shown=shown,
            sent=sent,
            max_shown=MAX_SHOWN_FRAMES,
            examples={
                "modules": EXAMPLE_MODULES,
                "addresses": EXAMPLE_ADDRESSES,
                "payload": EXAMPLE_PAYLOAD,
            },
        )


ROUTES = [(PATH, SymbolicationPage)]
