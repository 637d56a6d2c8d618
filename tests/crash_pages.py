"""Crashes for the crash pages' tests and the browser journeys: a made-up dump and symbols whose
names a page must escape."""

from __future__ import annotations

import os

from symbolon.processing import minidump as md
from tests.processing.synth import Synth, SynthModule, SynthThread, cv_elf

HOSTILE_FUNCTION = "evil<script>alert(1)</script>"
HOSTILE_FILE = '/src/"><img src=x onerror=alert(2)>.c'


def crash_dump() -> tuple[bytes, str, str]:
    """A crash in ``app`` called from ``libnosyms.so``, and a second thread spinning in
    ``app``; with the debug file and id of ``app``. Build ids of its own: no cache knows them."""
    synth = Synth()
    synth.modules = [
        SynthModule(0x10000, 0x1000, "/opt/app", cv_elf(os.urandom(20))),
        SynthModule(0x20000, 0x1000, "/usr/lib/libnosyms.so", cv_elf(os.urandom(20))),
    ]
    stack = (0x20010).to_bytes(8, "little") + bytes(248)  # a return address to scan for
    synth.threads = [
        SynthThread(1, 0x7000, stack, {"rip": 0x10010, "rsp": 0x7000}),
        SynthThread(2, 0x9000, bytes(64), {"rip": 0x10030, "rsp": 0x9000}),
    ]
    synth.exception = (1, 11, 1, 0x5A0, (), {"rip": 0x10010, "rsp": 0x7000})
    data = synth.build()
    app = md.Minidump.parse(data).modules[0]
    return data, app.debug_file, app.debug_id


def app_symbols(debug_file: str, debug_id: str) -> bytes:
    return (
        f"MODULE Linux x86_64 {debug_id} {debug_file}\n"
        f"FILE 0 {HOSTILE_FILE}\n"
        f"FUNC 0 20 0 {HOSTILE_FUNCTION}\n"
        "0 20 42 0\n"
        "FUNC 20 20 0 spin_here\n"
        "20 20 7 0\n"
    ).encode()
