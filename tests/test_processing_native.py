"""Crash processing with native debug files only (docs/processing.md, "CFI indexes in the
symbol caches"): the walk's CFI comes from the native file's unwind information, the frames'
names from its DWARF, for an unstripped binary and for a split debug file beside its binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import running_worker, served
from tests.crashpad_support import WITHIN, crashpad_handler, ptrace_refused  # noqa: F401
from tests.native_truth import upload_native
from tests.processing_support import (
    App,
    Symbols,
    compile_app,
    crash,
    crashing_frames,
    processing_settings,
    submit,
    wait_for_state,
)

# From the crash to main: each caller found by CFI (the program keeps no frame pointers).
CHAIN = ["crash_here", "step_c", "step_b", "step_a", "mid_inner", "mid_call"]


def crashed_program(handler: Path, directory: Path) -> tuple[Path, bytes]:
    if reason := ptrace_refused():
        pytest.skip(f"crashpad_handler cannot snapshot a process here: {reason}")
    directory.mkdir(parents=True, exist_ok=True)
    flags = ["-O2", "-fomit-frame-pointer"]
    binary = compile_app(directory, flags, build_id=True)
    unused = Symbols("", "", b"")
    return binary, crash(App(binary, unused, unused), handler, directory / "crashpad-db")


def split(binary: Path) -> tuple[bytes, bytes]:
    """(the stripped binary, its split debug file), as distributions ship them."""
    debug = binary.with_name(binary.name + ".debug")
    stripped = binary.with_name(binary.name + ".stripped")
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug)], check=True)
    subprocess.run(["strip", "--strip-debug", "-o", str(stripped), str(binary)], check=True)
    return stripped.read_bytes(), debug.read_bytes()


@pytest.mark.gen_test(timeout=4 * WITHIN)
@pytest.mark.parametrize("layout", ["unstripped", "split"])
async def test_a_crash_is_walked_and_named_from_native_debug_files_alone(
    crashpad_handler, live_settings, cache_dir, tmp_path, layout
):
    binary, dump = crashed_program(crashpad_handler, tmp_path / "program")
    settings = processing_settings(live_settings, cache_dir)
    members: dict[str, bytes] = {}
    for module in (binary, binary.with_name("libmid.so")):
        if layout == "unstripped":
            members[f"bin/{module.name}"] = module.read_bytes()
        else:
            stripped, debug = split(module)
            members[f"bin/{module.name}"] = stripped
            members[f"debug/{module.name}.debug"] = debug
    server = served(settings)
    async with server as (http_client, base_url):
        runtime = server.runtime
        await upload_native(http_client, base_url, settings, runtime, members)
        processed = await runtime.processor.process_dump(dump)
        frames = crashing_frames(processed.document)
        assert [f.get("function") for f in frames[: len(CHAIN)]] == CHAIN, frames
        assert {f["trust"] for f in frames[1 : len(CHAIN)]} == {"cfi"}
        assert frames[0]["file"].endswith("tests/processing/stackwalk_app.c")
        assert processed.signature == "crash_here"
        stats = runtime.processor.cfi.stats
        if layout == "unstripped":
            # The symcache's parse made the index too, from the same file.
            assert (stats.built_with_symcache, stats.built_alone) == (2, 0)
        else:
            # The split debug file has no unwind information: the binary gave it.
            assert (stats.built_with_symcache, stats.built_alone) == (0, 2)


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_a_crash_lacking_symbols_is_processed_again_when_a_native_file_is_uploaded(
    crashpad_handler, live_settings, cache_dir, tmp_path
):
    binary, dump = crashed_program(crashpad_handler, tmp_path / "program")
    settings = processing_settings(live_settings, cache_dir)
    server = served(settings)
    with running_worker(settings):
        async with server as (http_client, base_url):
            runtime = server.runtime
            crash_id = await submit(http_client, base_url, dump)
            first = await wait_for_state(runtime, crash_id)
            assert first["signature"] != "crash_here"  # no symbols anywhere yet

            members = {
                f"bin/{m.name}": m.read_bytes() for m in (binary, binary.with_name("libmid.so"))
            }
            await upload_native(http_client, base_url, settings, runtime, members, worker=False)
            again = await wait_for_state(runtime, crash_id, after=first["processed_at"])
            assert (again["state"], again["signature"]) == ("processed", "crash_here")
