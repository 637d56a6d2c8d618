"""What the crash processing tests share: the C programs of tests/processing built here with
debug information, their .sym files made by Breakpad's dump_syms (as bench/make_syms.py makes
them), crashes written (or uploaded) by the real crashpad_handler, and waits on the crash index.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from symbolon.conf import Settings
from tests.crashes import crash_id_of, headers_for, post, report, unique_queue
from tests.crashpad_support import WITHIN, c_compiler, handler_processes, log_text, ptrace_refused

SOURCES = Path(__file__).parent / "processing"
CRASH_ADDRESS = 0x5A0
# The line of stackwalk_app.c that crashes, and the function holding it.
CRASH_LINE = next(
    number
    for number, text in enumerate((SOURCES / "stackwalk_app.c").read_text().splitlines(), 1)
    if "*target = n;" in text
)
CRASHING_FUNCTION = "crash_here"
MODULE_LINE = re.compile(r"^MODULE \S+ \S+ ([0-9A-F]+) (.+)$")


def dump_syms() -> Path:
    """Breakpad's dump_syms, unpacked from the npm package by bench/make_syms.py."""
    if sys.platform != "linux":
        pytest.skip("Breakpad's dump_syms is taken prebuilt for Linux")
    root = str(Path(__file__).parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.make_syms import dump_syms as unpacked

    try:
        return unpacked()
    except (SystemExit, subprocess.CalledProcessError) as exc:
        pytest.skip(f"Breakpad's dump_syms cannot be had here: {exc}")


@dataclass(frozen=True)
class Symbols:
    """A module's .sym and the key it is stored under (``<debug_file>/<id>/<file>.sym``)."""

    debug_file: str
    debug_id: str
    data: bytes

    @property
    def key(self) -> str:
        return f"{self.debug_file}/{self.debug_id}/{self.debug_file}.sym"


def symbols_of(binary: Path) -> Symbols:
    done = subprocess.run(
        [str(dump_syms()), "-d", str(binary)], capture_output=True, timeout=WITHIN, check=True
    )
    match = MODULE_LINE.match(done.stdout.split(b"\n", 1)[0].decode())
    assert match, done.stdout[:200]
    return Symbols(match.group(2), match.group(1), done.stdout)


@dataclass(frozen=True)
class App:
    """stackwalk_app and its libmid.so, built with debug information."""

    binary: Path
    app: Symbols
    libmid: Symbols


def compile_app(directory: Path, flags: list[str], build_id: bool = False) -> Path:
    """Compile stackwalk_app and its libmid.so into ``directory`` with ``flags``; with
    ``build_id``, random build ids, so modules no other build has."""
    compiler = c_compiler()
    common = ["-g", "-Wall", f"-I{SOURCES}", *flags]

    def build_ids() -> list[str]:
        return [f"-Wl,--build-id=0x{os.urandom(20).hex()}"] if build_id else []

    commands = [
        [
            compiler,
            *common,
            *build_ids(),
            "-fPIC",
            "-shared",
            "-o",
            "libmid.so",
            str(SOURCES / "libmid.c"),
        ],
        [
            compiler,
            *common,
            *build_ids(),
            f"-DCRASH_ADDRESS={CRASH_ADDRESS:#x}",
            "-o",
            "stackwalk_app",
            str(SOURCES / "stackwalk_app.c"),
            "-L.",
            "-lmid",
            "-Wl,-rpath,$ORIGIN",
            "-pthread",
        ],
    ]
    for command in commands:
        done = subprocess.run(
            command, cwd=directory, capture_output=True, text=True, timeout=WITHIN
        )
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr}"
    return directory / "stackwalk_app"


def build_app(directory: Path, variant: bool = False) -> App:
    """Build the program; a ``variant`` has random build ids, so modules no other build has."""
    directory.mkdir(parents=True, exist_ok=True)
    binary = compile_app(directory, ["-gdwarf-4", "-O0"], build_id=variant)
    return App(binary, symbols_of(binary), symbols_of(directory / "libmid.so"))


def crash(
    app: App,
    handler: Path,
    database: Path,
    url: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    """Run the program, which crashes; crashpad_handler writes the minidump and, given a
    ``url``, uploads it there. Returns the minidump."""
    database.mkdir(parents=True, exist_ok=True)
    if url is not None:
        enable_uploads(database)
    log = database.parent / f"{database.name}.log"
    arguments = [str(app.binary), str(handler), f"--database={database}", "--no-periodic-tasks"]
    if url is not None:
        arguments += [f"--url={url}", "--no-rate-limit"]
    arguments += [f"--annotation={k}={v}" for k, v in (annotations or {}).items()]
    environment = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            arguments, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=environment
        )
        try:
            status = process.wait(WITHIN)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(WITHIN)
            for pid in handler_processes(database):
                os.kill(pid, 9)
    assert status == -11, log_text(log)
    assert "crashpad_handler exited with 0" in log_text(log), log_text(log)
    (dump,) = database.glob("*/*.dmp")
    return dump.read_bytes()


def enable_uploads(database: Path) -> None:
    """Crashpad's settings file with uploads enabled (see tests/test_crashpad_client.py)."""
    import uuid

    data = struct.pack("<IIIIq16s", 0x43506473, 1, 1, 0, 0, uuid.uuid4().bytes_le)
    (database / "settings.dat").write_bytes(data)


def processed_after(row: Any, after: Any) -> bool:
    return row["processed_at"] is not None and row["processed_at"] > after


async def row_of(runtime: Any, crash_id: str) -> Any:
    return await runtime.db.fetchrow("SELECT * FROM crashes WHERE crash_id = $1", crash_id)


async def wait_for_state(
    runtime: Any, crash_id: str, states: tuple[str, ...] = ("processed", "failed"), after=None
) -> Any:
    """The crash's index row once its state is one of ``states`` (and it was processed after
    ``after``, if given); fails after a generous wait."""
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        row = await row_of(runtime, crash_id)
        if (
            row is not None
            and row["state"] in states
            and (after is None or processed_after(row, after))
        ):
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"{crash_id} did not reach {states}: {await row_of(runtime, crash_id)}")


def crashing_frames(processed: dict[str, Any]) -> list[dict[str, Any]]:
    dump = processed["json_dump"]
    frames: list[dict[str, Any]] = dump["threads"][dump["crash_info"]["crashing_thread"]]["frames"]
    return frames


def processing_settings(live_settings: Settings, cache_dir: Path, **changes: Any) -> Settings:
    """The session's services, a queue and a symcache directory of the test's own, one walking
    process."""
    return live_settings.replace(
        crashpublish_queue_name=unique_queue(),
        symbols_cache_dir=cache_dir,
        symbolication_parse_workers=1,
        processor_walk_processes=1,
        **changes,
    )


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> App:
    """stackwalk_app built for this test module: modules (build ids) no other module has."""
    if reason := ptrace_refused():
        pytest.skip(f"crashpad_handler cannot snapshot a process here: {reason}")
    return build_app(tmp_path_factory.mktemp("program"), variant=True)


@pytest.fixture(scope="module")
def program_dump(
    program: App, crashpad_handler: Path, tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    """A minidump of the program's crash, written by crashpad_handler."""
    return crash(program, crashpad_handler, tmp_path_factory.mktemp("dump") / "crashpad-db")


def fresh_crash(handler: Path, directory: Path) -> tuple[App, bytes]:
    """A build of the program no other test has, and a crash of it: modules no cache knows."""
    program = build_app(directory / "program", variant=True)
    return program, crash(program, handler, directory / "crashpad-db")


async def submit(
    http_client: Any, base_url: str, dump: bytes, annotations: dict[str, str] | None = None
) -> str:
    """Send a report as Breakpad clients do; the crash id the collector answered."""
    body = report(
        {"ProductName": "Processing", "Version": "1.0", **(annotations or {})},
        {"upload_file_minidump": dump},
    )
    return crash_id_of(await post(http_client, base_url, body, headers_for()))


# -- hostile dumps: valid minidumps whose walk would take too long or too much memory ---------


def scan_bomb(threads: int = 30, stack_kib: int = 256) -> bytes:
    """Threads whose stacks are nothing but return addresses into a module without symbols:
    stack scanning finds a frame at every word, up to the walker's frame limits (seconds of
    walking, a few megabytes of dump)."""
    from tests.processing.synth import Synth, SynthModule, SynthThread, cv_elf

    base = 0x7F0000000000
    word = struct.pack("<Q", base + 0x1010)
    synth = Synth(
        modules=[SynthModule(base, 0x100000, "/usr/lib/hostile.so", cv_elf(b"\x11" * 20))]
    )
    for index in range(threads):
        start = 0x7FFD00000000 + index * 0x1000000
        registers = {"rip": base + 0x1000, "rsp": start, "rbp": start}
        synth.threads.append(SynthThread(100 + index, start, word * (stack_kib * 128), registers))
    return synth.build()


def name_bomb(modules: int = 30_000, name_chars: int = 30_000) -> bytes:
    """Every module named by the same long string: each becomes a string of its own once parsed,
    gigabytes from a few megabytes of dump."""
    from symbolon.processing import minidump as md
    from tests.processing.synth import Synth, SynthModule, SynthThread

    synth = Synth(
        modules=[SynthModule(0x10000 + i * 0x1000, 0x1000, "m", b"") for i in range(modules)]
    )
    synth.threads.append(SynthThread(1, 0x7FFD00000000, bytes(64), {"rip": 0x10010}))
    dump = bytearray(synth.build())
    name = ("x" * name_chars).encode("utf-16-le")
    rva = len(dump)
    dump += struct.pack("<I", len(name)) + name + b"\0\0"
    _, _, count, directory = struct.unpack_from("<4sIII", dump)
    for entry in range(count):
        kind, _, offset = struct.unpack_from("<III", dump, directory + 12 * entry)
        if kind == md.MODULE_LIST:
            (listed,) = struct.unpack_from("<I", dump, offset)
            for index in range(listed):
                # MINIDUMP_MODULE: base (8), size, checksum, stamp (4 each), then the name's RVA.
                struct.pack_into("<I", dump, offset + 4 + md.MODULE.size * index + 20, rva)
    return bytes(dump)
