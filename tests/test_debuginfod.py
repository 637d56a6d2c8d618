"""Debuggers against ``symbolon serve``: elfutils' ``debuginfod-find`` and gdb fetch a split
program's debug info by build id, and Microsoft symbol-store names are served as uploaded.

The files are built here (gcc, objcopy, strip; the PE and PDB by tests/native_files.py) and
uploaded through ``POST /upload/`` as a symbol archive, on S3 and in a directory location (whose
redirects are relative, to this server).
"""

from __future__ import annotations

import gzip
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from symbolic.debuginfo import Archive

from symbolon.conf import Settings
from tests import native_files
from tests.cli import env_for
from tests.conftest import free_port
from tests.serving import download, heartbeat, make_token, request, start, stop, upload_zip

PROGRAM = """\
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int symbolon_leaf(int n) {
  if (n > 1000)
    abort();
  return n * 3 + 1;
}

__attribute__((noinline)) int symbolon_middle(int n) { return symbolon_leaf(n + 1) + 2; }

int main(int argc, char **argv) {
  (void)argv;
  printf("%d\\n", symbolon_middle(argc));
  return 0;
}
"""
# One debugger command's allowance: gdb runs the program and asks the server a few times.
TOOL_WITHIN = 120
# A miss is one request answered at once; elfutils gives up on it without retrying.
MISS_WITHIN = 15


def run(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=TOOL_WITHIN,
        env=env,
        cwd=cwd,
    )


def built(*args: str | Path) -> None:
    done = run(*args)
    assert done.returncode == 0, done.stderr


def breakpad_id(debug_id: str) -> str:
    """symbolic's ``uuid-age`` as stored: 32 upper-case hex digits and the age in hex."""
    parts = debug_id.split("-")
    return "".join(parts[:5]).upper() + (parts[5] if len(parts) > 5 else "0").upper()


@dataclass(frozen=True)
class Built:
    source: Path
    program: Path  # stripped, with a debug link to a file no debugger finds beside it
    debug: Path  # the split debug info
    build_id: str
    elf_id: str
    pdb: Path
    pdb_id: str
    dll: Path
    dll_code_id: str


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("native")
    source = root / "prog.c"
    source.write_text(PROGRAM)
    # A build id of this run's own: the session's caches never knew it.
    build_id = secrets.token_hex(20)
    full = root / "prog.full"
    built("gcc", "-g", "-O1", f"-Wl,--build-id=0x{build_id}", "-o", full, source)
    debug = root / "prog.debug"
    built("objcopy", "--only-keep-debug", full, debug)
    (root / "bin").mkdir()
    program = root / "bin" / "prog"
    shutil.copy(full, program)
    built("strip", "--strip-debug", "--strip-unneeded", program)
    built("objcopy", f"--add-gnu-debuglink={debug}", program)

    # A tag of its own: a PDB GUID and a PE code id no other test uploads.
    windows = native_files.pe_pdb(root / "windows", "foo", tag=secrets.token_hex(8))
    pdb, dll = windows.pdb, windows.dll

    def first(path: Path) -> object:
        return next(iter(Archive.open(str(path)).iter_objects()))

    elf, pdb_obj, pe = first(debug), first(pdb), first(dll)
    assert elf.code_id == build_id  # type: ignore[attr-defined]
    return Built(
        source=source,
        program=program,
        debug=debug,
        build_id=build_id,
        elf_id=breakpad_id(elf.debug_id),  # type: ignore[attr-defined]
        pdb=pdb,
        pdb_id=breakpad_id(pdb_obj.debug_id),  # type: ignore[attr-defined]
        dll=dll,
        dll_code_id=pe.code_id.upper(),  # type: ignore[attr-defined]
    )


@dataclass(frozen=True)
class Server:
    port: int
    url: str


@pytest.fixture(scope="module", params=["s3", "directory"])
def server(
    request: pytest.FixtureRequest, live_settings: Settings, files: Built
) -> Iterator[Server]:
    settings = live_settings
    scratch = Path(tempfile.mkdtemp(prefix="symbolon-debuginfod-"))
    if request.param == "directory":
        where = f"file://{scratch}/symbols"
        (scratch / "symbols").mkdir()
        settings = live_settings.replace(symbol_urls=(where,), upload_default_url=where)
    port = free_port()
    env = env_for(settings, PORT=str(port), WEB_PROCESSES="1")
    proc = start(env)
    try:
        assert heartbeat(port, proc)["code"] == 200
        token = make_token(env, f"debuggers-{request.param}@example.com")
        # As a build uploads them: the stripped program, its split debug info, the PE and PDB.
        members = {
            "prog": files.program.read_bytes(),
            "prog.debug": files.debug.read_bytes(),
            "windows/foo.pdb": files.pdb.read_bytes(),
            "windows/foo.dll": files.dll.read_bytes(),
        }
        status, answer = upload_zip(port, token, members)
        assert status == 201, answer
        yield Server(port, f"http://127.0.0.1:{port}")
    finally:
        output = stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)
    assert "Traceback" not in output, output


def client_env(server: Server, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBUGINFOD_")}
    env.update(DEBUGINFOD_URLS=server.url, DEBUGINFOD_CACHE_PATH=str(cache), HOME=str(cache))
    return env


def debuginfod_find(server: Server, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("debuginfod-find", *args, env=client_env(server, cache))


def objcopy_section(path: Path, name: str, into: Path) -> bytes:
    out = into / f"expected{name}"
    # With no output file objcopy would rewrite its input.
    built("objcopy", "--dump-section", f"{name}={out}", path, into / "objcopy-output")
    return out.read_bytes()


# -- debuginfod-find ------------------------------------------------------------------------


@pytest.mark.parametrize("artifact", ["debuginfo", "executable"])
def test_debuginfod_find_gets_the_stored_files_byte_for_byte(server, files, tmp_path, artifact):
    found = debuginfod_find(server, tmp_path / "cache", artifact, files.build_id)
    assert found.returncode == 0, found.stderr
    expected = files.debug if artifact == "debuginfo" else files.program
    assert Path(found.stdout.strip()).read_bytes() == expected.read_bytes()


@pytest.mark.parametrize(
    "name, artifact",
    [(".debug_info", "debuginfo"), (".debug_line", "debuginfo"), (".text", "executable")],
)
def test_debuginfod_find_gets_a_section_cut_by_the_server(server, files, tmp_path, name, artifact):
    """``.text`` has no bytes in the split debug info (SHT_NOBITS): it comes from the
    executable. The client fetched the section alone: no whole file is in its cache."""
    cache = tmp_path / "cache"
    found = debuginfod_find(server, cache, "section", files.build_id, name)
    assert found.returncode == 0, found.stderr
    expected = files.debug if artifact == "debuginfo" else files.program
    assert Path(found.stdout.strip()).read_bytes() == objcopy_section(expected, name, tmp_path)
    cached = {p.name for p in (cache / files.build_id).iterdir()}
    assert "debuginfo" not in cached and "executable" not in cached, cached


def test_an_unknown_build_id_fails_at_once_with_not_found(server, tmp_path):
    started = time.monotonic()
    found = debuginfod_find(server, tmp_path / "cache", "debuginfo", secrets.token_hex(20))
    assert time.monotonic() - started < MISS_WITHIN
    assert found.returncode != 0
    assert "No such file or directory" in found.stderr, found.stderr


# -- the HTTP answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build_id, why",
    [
        ("not-hex", "hexadecimal digits"),
        ("abc", "even number"),
        ("ab" * 65, "at most 64 bytes"),
    ],
)
@pytest.mark.parametrize("tail", ["debuginfo", "executable", "section/.debug_info"])
def test_a_bad_build_id_is_a_400_saying_why(server, build_id, why, tail):
    status, headers, body = request(server.port, "GET", f"/buildid/{build_id}/{tail}")
    assert status == 400
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert why in body.decode()


def test_misses_are_plain_404s_naming_what_is_missing(server, files):
    unknown = secrets.token_hex(20)
    status, headers, body = request(server.port, "GET", f"/buildid/{unknown}/executable")
    assert (status, headers["Content-Type"]) == (404, "text/plain; charset=utf-8")
    assert body.decode().strip() == f"No executable with build id {unknown} is stored."
    status, _, body = request(server.port, "GET", f"/buildid/{unknown}/section/.text")
    assert status == 404 and "No debuginfo or executable" in body.decode()
    path = f"/buildid/{files.build_id}/section/.no_such"
    status, _, body = request(server.port, "GET", path)
    assert status == 404
    assert "its debuginfo has no section .no_such" in body.decode()
    assert "its executable has no section .no_such" in body.decode()
    # .bss has no bytes in either file.
    status, _, body = request(server.port, "GET", f"/buildid/{files.build_id}/section/.bss")
    assert status == 404 and "SHT_NOBITS" in body.decode()
    status, _, body = request(server.port, "GET", f"/buildid/{files.build_id}/source/tmp/prog.c")
    assert status == 404 and body.decode().strip() == "This server keeps no source files."


def test_head_and_upper_case_build_ids(server, files, tmp_path):
    upper = files.build_id.upper()
    status, headers, body = request(server.port, "HEAD", f"/buildid/{upper}/debuginfo")
    assert (status, body) == (200, b"")
    assert "Location" not in headers
    status, headers, _ = request(server.port, "GET", f"/buildid/{upper}/debuginfo")
    assert status == 302 and headers["Location"]
    status, headers, body = request(server.port, "HEAD", f"/buildid/{upper}/section/.debug_info")
    size = len(objcopy_section(files.debug, ".debug_info", tmp_path))
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(size)
    assert headers["Content-Type"] == "application/octet-stream"


# -- gdb --------------------------------------------------------------------------------------


def gdb_backtrace(server: Server, files: Built, cache: Path, debuginfod: str) -> str:
    done = run(
        "gdb",
        "-batch",
        "-nx",
        "-iex",  # before the program is loaded, when gdb asks the server
        f"set debuginfod enabled {debuginfod}",
        "-ex",
        "break symbolon_leaf",
        "-ex",
        "run",
        "-ex",
        "bt",
        files.program,
        env=client_env(server, cache),
        cwd=cache.parent,
    )
    return done.stdout + done.stderr


def test_gdb_shows_functions_and_lines_from_debug_info_it_fetched(server, files, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    line = PROGRAM.splitlines().index("  if (n > 1000)") + 1
    shown = gdb_backtrace(server, files, cache, "on")
    assert re.search(rf"#0 +symbolon_leaf \(n=2\) at \S*prog\.c:{line}", shown), shown
    middle = PROGRAM.splitlines().index(next(x for x in PROGRAM.splitlines() if "middle(int" in x))
    main = PROGRAM.splitlines().index('  printf("%d\\n", symbolon_middle(argc));')
    assert re.search(rf"#1 .* in symbolon_middle \(.*\) at \S*prog\.c:{middle + 1}\n", shown)
    assert re.search(rf"#2 .* in main \(.*\) at \S*prog\.c:{main + 1}\n", shown), shown
    assert (cache / files.build_id / "debuginfo").read_bytes() == files.debug.read_bytes()
    # Without the server gdb knows neither the function nor a line.
    alone = gdb_backtrace(server, files, tmp_path / "cache-off", "off")
    assert "prog.c:" not in alone and "symbolon_leaf (n=" not in alone, alone


# -- Microsoft symbol-store names and native files --------------------------------------------


@pytest.mark.parametrize(
    "which",
    ["pdb", "dll", "elf", "elf-debug"],
)
def test_native_files_are_downloaded_byte_for_byte(server, files, which):
    path, expected = {
        "pdb": (f"/foo.pdb/{files.pdb_id}/foo.pdb", files.pdb),
        "dll": (f"/foo.dll/{files.dll_code_id}/foo.dll", files.dll),
        "elf": (f"/prog/{files.elf_id}/prog", files.program),
        "elf-debug": (f"/prog/{files.elf_id}/prog.debug", files.debug),
    }[which]
    status, data, headers = download(server.port, path)
    assert status == 302
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(data) == expected.read_bytes()


def test_symsrv_probes_are_404_so_the_client_asks_for_the_plain_name(server, files):
    for probe in ("foo.pd_", "file.ptr"):
        status, _, _ = request(server.port, "GET", f"/foo.pdb/{files.pdb_id}/{probe}")
        assert status == 404, probe
    status, _, _ = request(server.port, "GET", f"/foo.dll/{files.dll_code_id}/foo.dl_")
    assert status == 404
