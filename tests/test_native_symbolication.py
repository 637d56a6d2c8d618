"""Symbolication from native debug files (docs/symbolication.md, "Where symbols come from"):
the lookup order of native files and .sym files, and agreement with llvm-symbolizer on a C++
library built here, at DWARF 4 and 5."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from symbolic.debuginfo import Archive

from symbolon.symbols import native
from tests import native_files
from tests.native_truth import (
    LIBRARY,
    breakpad_id,
    build_library,
    build_pdb,
    compare,
    frame_chain,
    function_ranges,
    llvm_chains,
    mach_o_functions,
    sample_addresses,
    strip_debug,
    tools_missing,
    upload_native,
)
from tests.symbolication_support import new_id, put_own, sym, with_debug_id

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))


@pytest.fixture
def settings(symbolication_settings):
    return symbolication_settings


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("native")
    return {
        "dwarf4": build_library(root / "dwarf4", 4),
        "dwarf5": build_library(root / "dwarf5", None),
    }


async def symbolicate(http_client, base_url, debug_id: str, addresses: list[int]) -> dict:
    body = {"memoryMap": [[LIBRARY, debug_id]], "stacks": [[[0, a] for a in addresses]]}
    response = await http_client.fetch(
        base_url + "/symbolicate/v5",
        method="POST",
        body=json.dumps(body),
        headers={"Debug": "1"},
        raise_error=False,
    )
    assert response.code == 200, response.body
    return json.loads(response.body)


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("variant", ["dwarf4", "dwarf5"])
async def test_native_debug_file_agrees_with_llvm_symbolizer(
    http_client, base_url, settings, runtime, symbolication, libraries, variant
):
    library = libraries[variant]
    debug_id = breakpad_id(library)
    members = {f"lib/{LIBRARY}": library.read_bytes()}
    await upload_native(http_client, base_url, settings, runtime, members)
    addresses = sample_addresses(library, 200)
    answer = await symbolicate(http_client, base_url, debug_id, addresses)
    frames = answer["results"][0]["stacks"][0]
    agreement = compare(
        addresses, llvm_chains(library, addresses), [frame_chain(f) for f in frames]
    )
    print(agreement.report(f"{variant}, native debug file against llvm-symbolizer"))
    assert agreement.total >= 200
    assert agreement.share >= 0.95, agreement.report(variant)
    assert answer["debug"]["symbol_files"] == {f"{LIBRARY}/{debug_id}": f"{LIBRARY}.debug"}
    # Inlined calls come through: some frame has a chain of several.
    assert max(len(f.get("inlines", [])) for f in frames) >= 3
    # Function offsets count from the symbol of the part holding the address, a .cold part's
    # too.
    starts = {
        a: start for start, size, _ in function_ranges(library) for a in range(start, start + size)
    }
    offsets = [
        (f["function_offset"], hex(a - starts[a])) for a, f in zip(addresses, frames, strict=True)
    ]
    assert [got for got, _ in offsets] == [want for _, want in offsets]


@pytest.mark.gen_test(timeout=120)
async def test_native_debug_file_is_preferred_over_the_sym_file(
    http_client, base_url, settings, symbolication, libraries, tmp_path
):
    library = build_library(tmp_path, 4)  # a module of its own: caches start cold
    debug_id = breakpad_id(library)
    fake_sym = with_debug_id(sym("examples/libdemo.so.sym"), debug_id)
    put_own(settings, f"{LIBRARY}/{debug_id}/{LIBRARY}.sym", fake_sym)
    put_own(settings, f"{LIBRARY}/{debug_id}/{LIBRARY}.debug", library.read_bytes())
    (address,) = sample_addresses(library, 1)[:1]
    answer = await symbolicate(http_client, base_url, debug_id, [address])
    assert answer["debug"]["symbol_files"] == {f"{LIBRARY}/{debug_id}": f"{LIBRARY}.debug"}
    assert frame_chain(answer["results"][0]["stacks"][0][0]) == llvm_chains(library, [address])[0]


@pytest.mark.gen_test(timeout=120)
async def test_sym_file_is_preferred_over_a_bare_binary_which_serves_alone(
    http_client, base_url, settings, symbolication, tmp_path
):
    library = build_library(tmp_path, None)
    stripped = strip_debug(library, tmp_path / "stripped.so")
    debug_id = breakpad_id(library)
    address = next(a for a in sample_addresses(library, 50) if a > 0x2800)
    put_own(settings, f"{LIBRARY}/{debug_id}/{LIBRARY}", stripped.read_bytes())
    answer = await symbolicate(http_client, base_url, debug_id, [address])
    frame = answer["results"][0]["stacks"][0][0]
    # The symbol table names the function; no lines without debug info.
    assert answer["debug"]["symbol_files"] == {f"{LIBRARY}/{debug_id}": LIBRARY}
    assert frame["function"] == llvm_chains(library, [address])[0][-1][0].removesuffix(
        " [clone .cold]"
    )
    assert "line" not in frame

    other = build_library(tmp_path / "other", 4)
    other_id = breakpad_id(other)
    put_own(settings, f"{LIBRARY}/{other_id}/{LIBRARY}", other.read_bytes())
    put_own(
        settings,
        f"{LIBRARY}/{other_id}/{LIBRARY}.sym",
        with_debug_id(sym("examples/libdemo.so.sym"), other_id),
    )
    answer = await symbolicate(http_client, base_url, other_id, [4104])
    assert answer["debug"]["symbol_files"] == {f"{LIBRARY}/{other_id}": f"{LIBRARY}.sym"}
    assert answer["results"][0]["stacks"][0][0]["function"] == "process_request"


@pytest.mark.gen_test(timeout=120)
async def test_upstream_is_asked_for_sym_files_only_and_after_own_native_debug_files(
    http_client, base_url, settings, symbolication, upstream, tmp_path
):
    library = build_library(tmp_path, 4)
    debug_id = breakpad_id(library)
    upstream.put(LIBRARY, debug_id, with_debug_id(sym("examples/libdemo.so.sym"), debug_id))
    put_own(settings, f"{LIBRARY}/{debug_id}/{LIBRARY}.debug", library.read_bytes())
    answer = await symbolicate(http_client, base_url, debug_id, [4104])
    assert answer["debug"]["symbol_files"] == {f"{LIBRARY}/{debug_id}": f"{LIBRARY}.debug"}
    assert upstream.hits == []

    # Upstream's .sym comes before a bare binary of own storage; upstream never gets asked
    # for a native file.
    other = build_library(tmp_path / "other", 4)
    other_id = breakpad_id(other)
    upstream.put(LIBRARY, other_id, with_debug_id(sym("examples/libdemo.so.sym"), other_id))
    put_own(
        settings,
        f"{LIBRARY}/{other_id}/{LIBRARY}",
        strip_debug(other, tmp_path / "s.so").read_bytes(),
    )
    answer = await symbolicate(http_client, base_url, other_id, [4104])
    assert answer["debug"]["symbol_files"] == {f"{LIBRARY}/{other_id}": f"{LIBRARY}.sym"}
    assert upstream.hits == [f"/symbols/{LIBRARY}/{other_id}/{LIBRARY}.sym"]


@pytest.mark.gen_test(timeout=120)
async def test_a_cold_miss_looks_up_every_key_of_own_storage_at_once(
    http_client, base_url, settings, symbolication
):
    lookup = symbolication.fetcher.lookup
    original = lookup._exists
    in_flight: list[str] = []
    asked: list[str] = []
    widest = 0
    together = asyncio.Event()

    async def exists(source, key):
        nonlocal widest
        asked.append(key)
        in_flight.append(key)
        widest = max(widest, len(in_flight))
        if len(in_flight) >= 4:
            together.set()
        try:
            # Answers are held until the native debug file's and the .sym's keys (both
            # spellings) are all being looked up, or long enough to show they never are.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(together.wait(), 2.0)
            return await original(source, key)
        finally:
            in_flight.remove(key)

    lookup._exists = exists
    try:
        missing = new_id()
        answer = await symbolicate(http_client, base_url, missing, [4104])
    finally:
        lookup._exists = original
    assert answer["results"][0]["found_modules"] == {f"{LIBRARY}/{missing}": False}
    assert widest >= 4
    for name in (f"{LIBRARY}.debug", f"{LIBRARY}.sym", LIBRARY):
        assert {f"{LIBRARY}/{missing}/{name}", f"{LIBRARY}/{missing.lower()}/{name}"} <= set(asked)


@pytest.mark.gen_test(timeout=120)
async def test_a_pdb_is_looked_up_under_its_own_name_before_the_sym_file(
    http_client, base_url, settings, symbolication, tmp_path
):
    pdb = build_pdb(tmp_path, f"compute{new_id()[:8].lower()}")
    if pdb is None:
        pytest.skip("clang and lld-link are needed to build a PDB")
    debug_id = breakpad_id(pdb)
    put_own(settings, f"{pdb.name}/{debug_id}/{pdb.name}", pdb.read_bytes())
    put_own(
        settings,
        f"{pdb.name}/{debug_id}/{pdb.stem}.sym",
        with_debug_id(sym("examples/demo.sym"), debug_id),
    )
    body = {"memoryMap": [[pdb.name, debug_id]], "stacks": [[[0, 0x1000]]]}
    response = await http_client.fetch(
        base_url + "/symbolicate/v5", method="POST", body=json.dumps(body), headers={"Debug": "1"}
    )
    answer = json.loads(response.body)
    frame = answer["results"][0]["stacks"][0][0]
    assert answer["debug"]["symbol_files"] == {f"{pdb.name}/{debug_id}": pdb.name}
    assert (frame["module"], frame["function"]) == (pdb.name, "compute(int)")
    assert frame["file"] == str(pdb.with_suffix(".cpp"))


@pytest.mark.gen_test(timeout=120)
async def test_each_slice_of_a_fat_dsym_serves_its_own_module(
    http_client, base_url, settings, runtime, symbolication, tmp_path
):
    built = native_files.macho(tmp_path, tag=new_id())
    dsym_member = "libbar.dylib.dSYM/Contents/Resources/DWARF/libbar.dylib"
    members = {"libbar.dylib": built.fat.read_bytes(), dsym_member: built.dsym.read_bytes()}
    await upload_native(http_client, base_url, settings, runtime, members)
    for obj in Archive.open(str(built.dsym)).iter_objects():
        debug_id = native.breakpad_id(obj.debug_id)
        wanted = dict(mach_o_functions(built.dsym, obj.arch))
        body = {
            "memoryMap": [["libbar.dylib", debug_id]],
            "stacks": [[[0, offset] for offset in wanted.values()]],
        }
        response = await http_client.fetch(
            base_url + "/symbolicate/v5",
            method="POST",
            body=json.dumps(body),
            headers={"Debug": "1"},
        )
        answer = json.loads(response.body)
        frames = answer["results"][0]["stacks"][0]
        assert [f["function"] for f in frames] == list(wanted), obj.arch
        assert answer["debug"]["symbol_files"] == {f"libbar.dylib/{debug_id}": "libbar.dylib.debug"}


@pytest.mark.gen_test(timeout=120)
async def test_a_native_file_of_another_module_or_no_file_at_all_is_not_found(
    http_client, base_url, settings, symbolication, libraries
):
    # A native file stored under an id it does not hold, and bytes that are no debug file.
    wrong = new_id()
    put_own(settings, f"{LIBRARY}/{wrong}/{LIBRARY}.debug", libraries["dwarf4"].read_bytes())
    junk = new_id()
    put_own(settings, f"{LIBRARY}/{junk}/{LIBRARY}.debug", b"\x7fELF but not really" * 100)
    for debug_id in (wrong, junk):
        answer = await symbolicate(http_client, base_url, debug_id, [4104])
        assert answer["results"][0]["found_modules"] == {f"{LIBRARY}/{debug_id}": False}
        assert "symbol_files" not in answer["debug"]
        assert list(answer["debug"]["parse_sym"]["fail_time_per_module"]) == [
            f"{LIBRARY}/{debug_id}"
        ]


@pytest.mark.gen_test(timeout=120)
async def test_a_native_file_symbolic_cannot_read_leaves_the_sym_file_to_serve(
    http_client, base_url, settings, symbolication
):
    debug_id = new_id()
    put_own(settings, f"{LIBRARY}/{debug_id}/{LIBRARY}.debug", b"\x7fELF but not really" * 100)
    fake_sym = with_debug_id(sym("examples/libdemo.so.sym"), debug_id)
    put_own(settings, f"{LIBRARY}/{debug_id}/{LIBRARY}.sym", fake_sym)
    answer = await symbolicate(http_client, base_url, debug_id, [4104])
    assert answer["results"][0]["stacks"][0][0]["function"] == "process_request"
    assert answer["debug"]["symbol_files"] == {f"{LIBRARY}/{debug_id}": f"{LIBRARY}.sym"}
