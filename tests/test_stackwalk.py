"""Crash processing's core against the reference: minidumps written by the real crashpad_handler
for C programs built here, walked by symbolon.processing and by Breakpad's own
minidump_stackwalk with the same symbols (made by Breakpad's dump_syms), and compared thread by
thread, frame by frame. Minidumps made byte by byte cover what a program here cannot crash into:
ARM64, 32-bit x86 on Windows, laid-out stacks and hostile input.

Every minidump written here is kept under the test's tmp path.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from symbolon.processing import minidump as md
from symbolon.processing.minidump import Minidump, MinidumpError
from tests.crashpad_support import (
    WITHIN,
    crashpad_handler,  # noqa: F401 (a fixture)
    handler_processes,
    log_text,
    ptrace_refused,
)
from tests.processing.synth import Synth, SynthModule, SynthThread, cv_elf, cv_pdb70
from tests.processing_support import CRASH_ADDRESS, compile_app

# How each program is built: with frame pointers (and CFI), and with CFI alone.
VARIANTS = {
    "O0": ["-O0"],
    "O2-no-frame-pointer": ["-O2", "-fomit-frame-pointer"],
}


# -- tools and programs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Breakpad:
    dump_syms: Path
    minidump_stackwalk: Path


@pytest.fixture(scope="module")
def breakpad() -> Breakpad:
    """Breakpad's dump_syms and minidump_stackwalk, unpacked from the npm package by
    bench/make_syms.py."""
    if sys.platform != "linux":
        pytest.skip("Breakpad's tools are taken prebuilt for Linux")
    root = str(Path(__file__).parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.make_syms import dump_syms, minidump_stackwalk

    try:
        return Breakpad(dump_syms(), minidump_stackwalk())
    except (SystemExit, subprocess.CalledProcessError) as exc:
        pytest.skip(f"Breakpad's tools cannot be had here: {exc}")


@dataclass(frozen=True)
class Crash:
    dump: Path
    binaries: dict[str, Path]  # module file name -> the file it was loaded from


def build(directory: Path, flags: list[str]) -> Path:
    return compile_app(directory, ["-Werror", *flags])


def crash(app: Path, handler: Path, database: Path) -> Path:
    """Run the application, which crashes; its minidump, written by crashpad_handler."""
    log = database.parent / "app.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(app), str(handler), f"--database={database}", "--no-periodic-tasks"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
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
    return dump


@pytest.fixture(scope="module")
def crashes(crashpad_handler, tmp_path_factory) -> dict[str, Crash]:
    """One crash of the program per build variant."""
    if reason := ptrace_refused():
        pytest.skip(f"crashpad_handler cannot snapshot a process here: {reason}")
    found = {}
    for variant, flags in VARIANTS.items():
        directory = tmp_path_factory.mktemp(f"stackwalk-{variant}")
        app = build(directory, flags)
        dump = crash(app, crashpad_handler, directory / "crashpad-db")
        binaries = {path.name: path for path in (app, directory / "libmid.so")}
        found[variant] = Crash(dump, binaries)
    return found


def module_files(dump: Minidump, crash: Crash) -> dict[str, Path]:
    """The files the crashed process loaded, that exist here (all but the vDSO). Crashpad names
    the C library and the dynamic loader by their sonames; ldd finds their files."""
    app = crash.binaries["stackwalk_app"]
    done = subprocess.run(["ldd", str(app)], capture_output=True, text=True, timeout=WITHIN)
    libraries = {}
    for line in done.stdout.splitlines():
        words = line.split()
        found = words[2] if len(words) >= 3 and words[1] == "=>" else words[0] if words else ""
        if found.startswith("/"):
            libraries[Path(found).name] = Path(found)
            libraries[words[0]] = Path(found)
    files = {}
    for module in dump.modules:
        path = crash.binaries.get(module.filename) or libraries.get(module.code_file)
        if path is None and module.code_file.startswith("/"):
            path = Path(module.code_file)
        if path is not None and path.is_file():
            files[module.filename] = path
    return files


# -- the parser -----------------------------------------------------------------------------------


def sym_header(breakpad: Breakpad, binary: Path) -> tuple[str, str, str | None]:
    """(debug id, debug file, code id) as dump_syms writes them in a .sym's first lines."""
    done = subprocess.run(
        [str(breakpad.dump_syms), str(binary)], capture_output=True, text=True, timeout=WITHIN
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    _module, _os, _arch, debug_id, debug_file = lines[0].split(" ", 4)
    code_id = lines[1].split()[2] if lines[1].startswith("INFO CODE_ID ") else None
    return debug_id, debug_file, code_id


def test_a_crashpad_dump_parses_as_dump_syms_names_its_modules(crashes, breakpad):
    crash = crashes["O0"]
    data = crash.dump.read_bytes()
    dump = Minidump.parse(data)

    assert dump.system_info is not None
    assert (dump.system_info.os, dump.system_info.cpu_arch) == ("Linux", "amd64")
    assert dump.system_info.os_short == "linux"
    assert dump.system_info.cpu_count == os.cpu_count()
    # Crashpad writes the kernel's release as the version numbers and the rest in the CSD.
    system = dump.system_info
    uname = os.uname()
    assert uname.release.startswith(f"{system.major_version}.{system.minor_version}.")
    assert system.csd_version is not None and uname.version in system.csd_version
    version = f"{system.major_version}.{system.minor_version}.{system.build_number}"
    assert system.os_version == f"{version} {system.csd_version}"

    # The main thread crashed, writing to CRASH_ADDRESS: SIGSEGV, SEGV_MAPERR.
    assert dump.exception is not None
    assert (dump.exception.code, dump.exception.flags) == (11, 1)
    assert dump.exception.address == CRASH_ADDRESS
    assert dump.exception.context is not None and dump.exception.context.arch == "amd64"
    assert dump.misc_info is not None and dump.misc_info.process_id == dump.exception.thread_id

    # Five threads: main, and the reader, sleeper, waiter and spinner.
    assert len(dump.threads) == 5
    assert dump.threads[0].thread_id == dump.exception.thread_id
    for thread in dump.threads:
        assert thread.context is not None and thread.context.arch == "amd64"
        assert thread.stack is not None
        # The crashed thread's own context is in its signal handler; its stack was taken from
        # where it crashed, the exception's context.
        context = dump.exception.context if thread.index == 0 else thread.context
        assert thread.stack.start <= context.sp < thread.stack.end
        # The stack is also in the memory list, where reads find it.
        assert dump.read(context.sp, 8) is not None
    assert {thread.name for thread in dump.threads} == {"stackwalk_app"}

    # Every module the process loaded, with the ids dump_syms gives its file.
    files = module_files(dump, crash)
    assert set(files) >= {"stackwalk_app", "libmid.so", "libc.so.6"}
    names = [module.filename for module in dump.modules]
    assert {"stackwalk_app", "libmid.so", "linux-vdso.so.1"} <= set(names)
    assert any(name.startswith("libc.so") for name in names)
    assert names[0] == "stackwalk_app"  # the main module first
    for module in dump.modules:
        assert module.cv_signature == "ELF"
        assert module.debug_file == module.filename
        assert module.code_id == module.build_id.hex()
        if module.filename in files:
            debug_id, debug_file, code_id = sym_header(breakpad, files[module.filename])
            assert (module.debug_id, module.debug_file) == (debug_id, debug_file)
            assert module.code_id.upper() == code_id
    assert dump.warnings == []


def test_parsing_takes_a_memoryview_or_mmap_without_copying(crashes, tmp_path):
    import mmap

    with (
        crashes["O0"].dump.open("rb") as file,
        mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
    ):
        dump = Minidump.parse(mapped)
        thread = dump.threads[1]
        assert thread.stack is not None
        # Region bytes are views into the mapping, not copies.
        view = dump.region_bytes(thread.stack)
        assert isinstance(view, memoryview) and view.obj is not None
        assert dump.read(thread.stack.start, 8) == bytes(view[:8])
        view.release()
        dump.close()
        assert dump.read(thread.stack.start, 8) is None


def test_pdb70_debug_ids_are_the_guid_and_age_in_uppercase_hex():
    guid = uuid.UUID("3a9f1c2e-5b7d-4e60-8a1b-c2d3e4f50617")
    synth = Synth(arch="x86", platform="windows", csd="Service Pack 1")
    synth.modules = [
        SynthModule(
            0x400000,
            0x10000,
            r"C:\app\app.exe",
            cv_pdb70(guid, 0x2A, r"C:\build\app.pdb"),
            stamp=0x5F1E2D3C,
        ),
        SynthModule(0x10000000, 0x2000, r"C:\Windows\ntdll.dll"),
        # A PDB name without its terminating NUL: refused, as Breakpad refuses it.
        SynthModule(0x20000000, 0x2000, r"C:\app\bad.dll", cv_pdb70(guid, 1, "bad.pdb")[:-1]),
    ]
    synth.threads = [SynthThread(7, 0x1000, b"\0" * 64, {"eip": 0x401000, "esp": 0x1000})]
    dump = Minidump.parse(synth.build())
    app, ntdll, bad = dump.modules
    assert (bad.debug_id, bad.debug_file, bad.cv_signature) == ("", "", None)
    assert app.debug_id == "3A9F1C2E5B7D4E608A1BC2D3E4F506172A"
    assert (app.debug_file, app.filename, app.code_file) == (
        "app.pdb",
        "app.exe",
        r"C:\app\app.exe",
    )
    assert app.code_id == "5F1E2D3C10000"
    assert app.version == "1.2.3.4"
    assert (ntdll.debug_id, ntdll.debug_file, ntdll.cv_signature) == ("", "", None)
    assert dump.system_info is not None
    assert dump.system_info.os_version == "6.1.7601 Service Pack 1"
    assert dump.system_info.cpu_info == "GenuineIntel family 6 model 17 stepping 1"
    assert dump.threads[0].context is not None
    assert dump.threads[0].context.registers["eip"] == 0x401000


def test_elf_debug_ids_come_from_the_build_id_as_breakpad_derives_them():
    # A short build id is padded to a GUID's 16 bytes; the first three fields are little-endian.
    synth = Synth(arch="arm64")
    synth.modules = [
        SynthModule(0x1000, 0x1000, "/lib/libshort.so", cv_elf(bytes.fromhex("0102030405060708"))),
        SynthModule(0x5000, 0x1000, "/lib/liblong.so", cv_elf(bytes(range(20)))),
    ]
    synth.threads = [SynthThread(1, 0x8000, b"\0" * 16, {"pc": 0x1100, "sp": 0x8000, "x29": 1})]
    dump = Minidump.parse(synth.build())
    short, long_ = dump.modules
    assert short.debug_id == "040302010605080700000000000000000"
    assert short.code_id == "0102030405060708"
    assert long_.debug_id == "03020100050407060809" + "0A0B0C0D0E0F" + "0"
    assert long_.code_id == bytes(range(20)).hex()
    assert (short.debug_file, short.filename) == ("libshort.so", "libshort.so")
    context = dump.threads[0].context
    assert context is not None and context.arch == "arm64"
    assert (context.pc, context.sp, context.registers["x29"]) == (0x1100, 0x8000, 1)


# -- hostile input --------------------------------------------------------------------------------


def small_dump() -> bytes:
    synth = Synth()
    synth.modules = [SynthModule(0x10000, 0x1000, "/bin/app", cv_elf(b"\x11" * 20))]
    synth.threads = [SynthThread(1, 0x7000, b"\0" * 256, {"rip": 0x10010, "rsp": 0x7000})]
    synth.exception = (1, 11, 1, 0x5A0, (), {"rip": 0x10010, "rsp": 0x7000})
    return synth.build()


def stream_entry(data: bytes, kind: int) -> int:
    """Where the directory entry of a stream type is."""
    _sig, _version, count, directory = struct.unpack_from("<IIII", data)
    for index in range(count):
        offset = directory + 12 * index
        if struct.unpack_from("<I", data, offset)[0] == kind:
            return offset
    raise AssertionError(f"no stream {kind}")


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def stream_rva(data: bytes, kind: int) -> int:
    return struct.unpack_from("<I", data, stream_entry(data, kind) + 8)[0]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda d: b"", "fewer than a minidump header"),
        (lambda d: b"PK\x03\x04" + d[4:], "not a minidump"),
        (lambda d: d[:40], "claims 5 streams, more than the file can hold"),
        (lambda d: d[:-8], "the stream directory at offset"),
        (lambda d: patched(d, 8, "<I", 0xFFFFFFF), "claims 268435455 streams"),
        (lambda d: patched(d, 12, "<I", len(d) - 4), "the stream directory"),
        # A stream that lies about its place or size.
        (lambda d: patched(d, stream_entry(d, md.THREAD_LIST) + 8, "<I", len(d)), "thread list"),
        (lambda d: patched(d, stream_entry(d, md.MODULE_LIST) + 4, "<I", 1 << 30), "module list"),
        # Inflated counts: checked against the stream's bytes before anything is allocated.
        (
            lambda d: patched(d, stream_rva(d, md.THREAD_LIST), "<I", 0xFFFFFFFF),
            "claims 4294967295 entries",
        ),
        (lambda d: patched(d, stream_rva(d, md.MODULE_LIST), "<I", 1000), "claims 1000 entries"),
        (lambda d: patched(d, stream_rva(d, md.MEMORY_LIST), "<I", 7), "claims 7 entries"),
        # A module name far past the end of the file.
        (
            lambda d: patched(d, stream_rva(d, md.MODULE_LIST) + 4 + 20, "<I", 0x7FFFFFF0),
            "module 0's name",
        ),
        # A memory region whose bytes are not in the file.
        (
            lambda d: patched(d, stream_rva(d, md.MEMORY_LIST) + 4 + 8, "<I", 1 << 31),
            "memory region 0",
        ),
        # A context of a size no CPU has.
        (
            lambda d: patched(d, stream_rva(d, md.THREAD_LIST) + 4 + 40, "<I", 100),
            "100-byte CPU context",
        ),
        (
            lambda d: patched(d, stream_entry(d, md.EXCEPTION) + 4, "<I", 20),
            "exception stream has 20 bytes",
        ),
    ],
    ids=[
        "empty",
        "not-a-minidump",
        "truncated-to-a-header",
        "truncated",
        "stream-count",
        "directory-past-end",
        "stream-rva",
        "stream-size",
        "thread-count",
        "module-count",
        "memory-count",
        "name-rva",
        "memory-size",
        "context-size",
        "short-exception",
    ],
)
def test_a_malformed_dump_raises_minidump_error_saying_what_is_wrong(mangle, reason):
    data = mangle(small_dump())
    with pytest.raises(MinidumpError, match=re.escape(reason)):
        Minidump.parse(data)


def test_the_intact_small_dump_parses():
    # The dump the hostile cases start from is itself fine.
    dump = Minidump.parse(small_dump())
    assert [t.thread_id for t in dump.threads] == [1]
    assert dump.modules[0].filename == "app"


def test_a_malformed_optional_stream_is_left_out_with_a_warning():
    synth = Synth()
    synth.threads = [SynthThread(1, 0x7000, b"\0" * 64, {"rip": 0x10010, "rsp": 0x7000})]
    synth.extra_streams = [
        (md.LINUX_MAPS, b"00400000-00452000 r-xp 00000000 08:02 173521 /bin/app\n"),
        (md.LINUX_CPU_INFO, b"processor\t: 0\n"),
        (md.MISC_INFO, b"\x18\0\0\0"),  # shorter than MINIDUMP_MISC_INFO
        (md.BREAKPAD_INFO, struct.pack("<III", 3, 99, 1)),
        (md.THREAD_NAME_LIST, struct.pack("<IIQ", 1, 1, 0xFFFFFF)),  # name past the end
    ]
    dump = Minidump.parse(synth.build())
    assert dump.misc_info is None
    assert dump.linux_maps is not None and dump.linux_maps.endswith("/bin/app\n")
    assert dump.linux_cpu_info == "processor\t: 0\n"
    assert (dump.dump_thread_id, dump.requesting_thread_id) == (99, 1)
    assert len(dump.warnings) == 2
    assert "misc info" in dump.warnings[0] and "thread name list" in dump.warnings[1]


def test_a_second_stream_of_a_type_is_ignored_as_breakpad_does():
    synth = Synth()
    synth.threads = [SynthThread(1, 0x7000, b"\0" * 64, {"rip": 0x10010, "rsp": 0x7000})]
    synth.extra_streams = [(md.THREAD_LIST, struct.pack("<I", 0))]
    dump = Minidump.parse(synth.build())
    assert [t.thread_id for t in dump.threads] == [1]
    assert dump.warnings == ["a second thread list stream is ignored"]


def test_thread_names_and_full_memory_stacks():
    # A thread whose stack descriptor has no bytes of its own finds them in the memory lists,
    # as in full-memory dumps (here in a Memory64List).
    synth = Synth()
    synth.threads = [SynthThread(5, 0x9000, b"", {"rip": 0x10010, "rsp": 0x9000})]
    stack = b"\x42" * 32
    header = struct.pack("<QQ", 1, 0)  # base RVA patched below
    synth.extra_streams = [
        (md.THREAD_NAME_LIST, b""),  # replaced below
    ]
    data = bytearray(synth.build())
    # Append the memory64 region and the thread name, then point new streams at them.
    stack_rva = len(data)
    data += stack
    name_rva = len(data)
    name = "worker".encode("utf-16-le")
    data += struct.pack("<I", len(name)) + name
    memory64_rva = len(data)
    data += struct.pack("<QQ", 1, stack_rva) + struct.pack("<QQ", 0x9000, len(stack))
    names_rva = len(data)
    data += struct.pack("<IIQ", 1, 5, name_rva)
    del header
    names_entry = stream_entry(bytes(data), md.THREAD_NAME_LIST)
    struct.pack_into("<III", data, names_entry, md.THREAD_NAME_LIST, 16, names_rva)
    # Turn the memory list entry into a memory64 list.
    memory_entry = stream_entry(bytes(data), md.MEMORY_LIST)
    struct.pack_into("<III", data, memory_entry, md.MEMORY64_LIST, 32, memory64_rva)
    dump = Minidump.parse(bytes(data))
    (thread,) = dump.threads
    assert thread.name == "worker"
    assert thread.stack == md.MemoryRegion(0x9000, 32, stack_rva)
    assert dump.read(0x9008, 8) == b"\x42" * 8
    assert dump.read(0x9000 + 30, 8) is None


# -- CFI ------------------------------------------------------------------------------------------

from symbolon.processing.cfi import (  # noqa: E402
    CfiFormatError,
    CfiIndex,
    evaluate,
    evaluate_program,
    parse_rule_set,
)

MASK64 = (1 << 64) - 1


def memory_of(words: dict[int, int]):
    return words.get


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("$rsp 16 +", 0x1010),
        ("$rsp -8 +", 0xFF8),
        (".cfa -8 + ^", 0xABC),  # a read through the dump's memory
        ("$rsp 3 * 2 /", 0x1800),
        ("$rsp 7 %", 0x1000 % 7),
        ("$rsp 5 + 16 @", 0x1000),  # align down to 16
        ("$rsp 1 -", 0xFFF),
        ("0 1 -", MASK64),  # wraps as the address width does
        # Malformed, unknown, impossible: no value.
        ("$rsp +", None),
        ("$rsp 16", None),
        ("$rax 8 +", None),
        ("$rsp 0 /", None),
        ("$rsp 0 %", None),
        ("$rsp 8 + ^", None),  # nothing kept at 0x1008
        ("0x10 $rsp +", None),  # literals are decimal, as in Breakpad
        ("", None),
        ("$rsp " + "1 + " * 10 + "1 " * 70, None),
    ],
)
def test_cfi_rules_evaluate_as_breakpads_postfix_evaluator(expression, value):
    registers = {"$rsp": 0x1000, ".cfa": 0x1008}
    assert evaluate(expression, registers, memory_of({0x1000: 0xABC}), MASK64) == value


def test_32_bit_rules_wrap_at_32_bits():
    assert evaluate("$esp 8 -", {"$esp": 4}, memory_of({}), 0xFFFFFFFF) == 0xFFFFFFFC


def test_stack_win_programs_assign_registers():
    dictionary = {"$ebp": 0x2000, "$esp": 0x1000}
    memory = memory_of({0x2000: 0x2100, 0x2004: 0x401234})
    program = "$T0 $ebp = $eip $T0 4 + ^ = $ebp $T0 ^ = $esp $T0 8 + ="
    ok, assigned = evaluate_program(program, dictionary, memory, 0xFFFFFFFF)
    assert ok and assigned == {"$T0", "$eip", "$ebp", "$esp"}
    assert (dictionary["$eip"], dictionary["$ebp"], dictionary["$esp"]) == (
        0x401234,
        0x2100,
        0x2008,
    )
    # "=$eip" without the space counts as "= $eip"; a failure keeps what was assigned before it.
    dictionary = {"$ebp": 0x2000}
    ok, assigned = evaluate_program("$T0 $ebp =$eip $T0 4 + ^ =", dictionary, memory, 0xFFFFFFFF)
    assert ok and assigned == {"$T0", "$eip"} and dictionary["$eip"] == 0x401234
    ok, assigned = evaluate_program("$T0 $ebp = $eip $T1 ^ =", {"$ebp": 1}, memory, 0xFFFFFFFF)
    assert not ok and assigned == {"$T0"}
    ok, assigned = evaluate_program("$T0 $ebp = 5", {"$ebp": 1}, memory, 0xFFFFFFFF)
    assert not ok  # something left on the stack
    ok, _ = evaluate_program("T0 $ebp =", {"$ebp": 1}, memory, 0xFFFFFFFF)
    assert not ok  # only $-names are assigned


def test_rule_sets_parse_as_breakpads_cfi_rule_parser():
    assert parse_rule_set(".cfa: $rsp 16 + .ra: .cfa -8 + ^ $rbp: .cfa -16 + ^") == (
        [(".cfa", "$rsp 16 +"), (".ra", ".cfa -8 + ^"), ("$rbp", ".cfa -16 + ^")],
        True,
    )
    # The rules before a malformed one count.
    assert parse_rule_set(".cfa: $rsp 8 + .ra: $rbp:") == ([(".cfa", "$rsp 8 +")], False)
    assert parse_rule_set("$rsp 8 +") == ([], False)
    assert parse_rule_set(": 8") == ([], False)


SYM = """MODULE Linux x86_64 0123456789ABCDEF0123456789ABCDEF0 app
INFO CODE_ID 67452301AB89EFCD
FILE 0 app.c
FUNC 1000 40 0 alpha
1000 10 3 0
FUNC m 1100 20 8 beta
PUBLIC 900 0 _init
PUBLIC 2000 4 after_functions
STACK CFI INIT 1000 40 .cfa: $rsp 8 + .ra: .cfa -8 + ^
STACK CFI 1001 .cfa: $rsp 16 + $rbp: .cfa -16 + ^
STACK CFI 1004 .cfa: $rbp 16 +
STACK CFI INIT 1100 20 .cfa: $rsp 8 + .ra: .cfa -8 + ^
STACK CFI 1100 .cfa: $rsp 24 +
STACK CFI INIT 1200 10 .cfa: $rsp 8 +
STACK CFI INIT 1300 10 .cfa: $rsp 8 + .ra: .cfa -8 + ^ $rbx:
STACK CFI INIT 1010 8 .cfa: $rsp 99 + .ra: .cfa -8 + ^
STACK CFI garbage
STACK CFI INIT zz 10 .cfa: $rsp 8 +
STACK WIN 4 3000 100 5 0 8 4 10 0 1 $T0 $ebp = $eip $T0 4 + ^ = $ebp $T0 ^ = $esp $T0 8 + =
STACK WIN 4 3010 20 3 0 0 0 0 0 1 $eip $esp ^ = $esp $esp 4 + =
STACK WIN 0 3000 200 3 0 4 8 c 0 0 1
STACK WIN 0 4000 10 3 0 c 0 0 0 0 0
STACK WIN 4 5000
"""


def sym_index(text: str = SYM) -> CfiIndex:
    return CfiIndex.from_sym_lines(text.splitlines(keepends=True))


def rules_at(index: CfiIndex, address: int) -> tuple[str | None, str | None, dict[str, str]] | None:
    rules = index.find_cfi(address)
    if rules is None:
        return None
    return rules.cfa, rules.ra, dict(rules.registers or {})


def test_cfi_lookup_applies_the_deltas_up_to_the_address():
    index = sym_index()
    ra = ".cfa -8 + ^"
    assert rules_at(index, 0x1000) == ("$rsp 8 +", ra, {})
    assert rules_at(index, 0x1001) == ("$rsp 16 +", ra, {"$rbp": ".cfa -16 + ^"})
    assert rules_at(index, 0x1003) == ("$rsp 16 +", ra, {"$rbp": ".cfa -16 + ^"})
    assert rules_at(index, 0x103F) == ("$rbp 16 +", ra, {"$rbp": ".cfa -16 + ^"})
    # The INIT at 0x1010 overlaps the first one, which stays (Breakpad's RangeMap).
    assert rules_at(index, 0x1010)[0] == "$rbp 16 +"  # type: ignore[index]
    assert rules_at(index, 0x1040) is None
    assert rules_at(index, 0x1100) == ("$rsp 24 +", ra, {})
    assert rules_at(index, 0xFFF) is None
    # An INIT without a return address rule is found but cannot recover a caller.
    rules = index.find_cfi(0x1205)
    assert rules is not None and rules.caller_registers({"$rsp": 8}, memory_of({}), MASK64) is None
    # A malformed INIT is no CFI at all.
    assert index.find_cfi(0x1305) is None


def test_cfi_rules_recover_the_callers_registers():
    rules = sym_index().find_cfi(0x1002)
    assert rules is not None
    memory = memory_of({0x1000: 0x4000, 0xFF8: 0x2222})
    found = rules.caller_registers({"$rsp": 0xFF8}, memory, MASK64)
    assert found == {".cfa": 0x1008, ".ra": 0x4000, "$rbp": 0x2222}
    # A register rule that fails leaves that register out; the frame still unwinds.
    found = rules.caller_registers({"$rsp": 0xFF8}, memory_of({0x1000: 0x4000}), MASK64)
    assert found == {".cfa": 0x1008, ".ra": 0x4000}
    # A return address that cannot be read is no CFI for this frame.
    assert rules.caller_registers({"$rsp": 0xFF8}, memory_of({}), MASK64) is None


def test_stack_win_lookup_prefers_frame_data_and_the_innermost_range():
    index = sym_index()
    outer = index.find_win(0x3005)
    assert outer is not None and outer.type == 4 and outer.program_string.startswith("$T0 $ebp")
    assert (outer.prolog_size, outer.parameter_size, outer.saved_register_size) == (5, 8, 4)
    assert outer.local_size == 0x10 and outer.valid_all
    inner = index.find_win(0x3015)
    assert inner is not None and inner.program_string == "$eip $esp ^ = $esp $esp 4 + ="
    assert index.find_win(0x3035) == outer
    # Past the FrameData record, the FPO one covers.
    fpo = index.find_win(0x3150)
    assert fpo is not None and fpo.type == 0 and fpo.program_string == ""
    assert fpo.allocates_base_pointer and fpo.parameter_size == 4
    assert (fpo.saved_register_size, fpo.local_size) == (8, 0xC)
    fpo = index.find_win(0x4005)
    assert fpo is not None and not fpo.allocates_base_pointer and fpo.parameter_size == 0xC
    # No STACK WIN: a FUNC's parameter size alone.
    beta = index.find_win(0x1105)
    assert beta is not None and not beta.valid_all and beta.parameter_size == 8
    assert index.find_win(0x5005) is None


def test_function_bounds_answer_as_breakpads_symbol_lookup():
    index = sym_index()
    assert index.has_function(0x1000) and index.has_function(0x103F)
    assert index.has_function(0x1110)
    # Between functions, a PUBLIC symbol below the address counts only if it is after the
    # nearest function below.
    assert not index.has_function(0x1050)
    assert not index.has_function(0x1F00)
    assert index.has_function(0x2000) and index.has_function(0x9000)
    assert index.has_function(0x950)  # _init, with no function below it
    assert not index.has_function(0x800)


def test_an_index_round_trips_through_bytes():
    index = sym_index()
    again = CfiIndex.from_bytes(index.to_bytes())
    for address in range(0xF00, 0x5100, 3):
        assert rules_at(again, address) == rules_at(index, address)
        assert again.find_win(address) == index.find_win(address)
        assert again.has_function(address) == index.has_function(address)
    empty = CfiIndex.from_sym_lines([])
    assert CfiIndex.from_bytes(empty.to_bytes()).find_cfi(0) is None


def test_damaged_index_bytes_raise_cfi_format_error():
    data = sym_index().to_bytes()
    for damaged in (b"", b"SYMBCFI0" + data[8:], data[:-3], data[:20] + b"\0" + data[21:]):
        with pytest.raises(CfiFormatError):
            CfiIndex.from_bytes(damaged)


def test_an_index_of_a_real_sym_file_is_smaller_and_answers_the_same(crashes, breakpad, tmp_path):
    crash = crashes["O2-no-frame-pointer"]
    dump = Minidump.parse(crash.dump.read_bytes())
    libc = next(module for module in dump.modules if module.filename.startswith("libc.so"))
    sym = tmp_path / "libc.sym"
    with sym.open("wb") as out:
        path = module_files(dump, crash)[libc.filename]
        subprocess.run([str(breakpad.dump_syms), str(path)], stdout=out, check=True,
                       stderr=subprocess.DEVNULL, timeout=WITHIN)  # fmt: skip
    with sym.open("rb") as lines:
        index = CfiIndex.from_sym_lines(lines)
    inits = [
        line.split() for line in sym.read_text().splitlines() if line.startswith("STACK CFI INIT")
    ]
    assert inits and index.has_cfi
    data = index.to_bytes()
    assert len(data) < sym.stat().st_size
    again = CfiIndex.from_bytes(data)
    for fields in inits[:: max(1, len(inits) // 300)]:
        start, size = int(fields[3], 16), int(fields[4], 16)
        for address in (start, start + size // 2, start + size - 1):
            assert rules_at(again, address) == rules_at(index, address) is not None


# -- the walk against Breakpad's --------------------------------------------------------------------

from symbolon.processing import stackwalk  # noqa: E402
from symbolon.processing.walker import StackwalkResult  # noqa: E402

TRUSTS = {
    "given as instruction pointer in context": "context",
    "call frame info": "cfi",
    "call frame info with scanning": "cfi_scan",
    "previous frame's frame pointer": "frame_pointer",
    "stack scanning": "scan",
    "simulating a return from leaf function": "leaf",
}
PC_REGISTERS = ("rip", "eip", "pc")


def sym_path(symbols: Path, debug_file: str, debug_id: str) -> Path:
    """Where Breakpad's SimpleSymbolSupplier looks: <debug_file>/<debug_id>/<name>.sym, the
    name without ".pdb"."""
    name = debug_file[:-4] if debug_file.lower().endswith(".pdb") else debug_file
    return symbols / debug_file / debug_id / f"{name}.sym"


def cfi_from(symbols: Path):
    def cfi_for(module: md.Module) -> CfiIndex | None:
        if not module.debug_file or not module.debug_id:
            return None
        path = sym_path(symbols, module.debug_file, module.debug_id)
        return CfiIndex.from_sym_file(str(path)) if path.is_file() else None

    return cfi_for


def breakpad_walk(breakpad: Breakpad, dump: Path, symbols: Path) -> dict:
    """minidump_stackwalk's answer, in the shape compared here: crash info, modules, and every
    thread's frames as (module, module offset, trust). It prints a frame's module and, in its
    registers, the frame's address; the module offset comes from the module's base."""

    def run(*flags: str) -> str:
        done = subprocess.run(
            [str(breakpad.minidump_stackwalk), *flags, str(dump), str(symbols)],
            capture_output=True,
            text=True,
            timeout=WITHIN,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    crash_info: dict[str, str | int | None] = {
        "type": None,
        "address": None,
        "crashing_thread": None,
    }
    modules = {}
    for line in run("-m").splitlines():
        fields = line.split("|")
        if fields[0] == "Crash":
            crash_info = {
                "type": fields[1] or None,
                "address": int(fields[2], 16) if fields[2] else None,
                "crashing_thread": int(fields[3]) if fields[3] else None,
            }
        elif fields[0] == "Module":
            name, _version, debug_file, debug_id, base, last = fields[1:7]
            modules[name] = (debug_file, debug_id, int(base, 16), int(last, 16) + 1)
    threads: dict[int, list[tuple[str | None, int | None, str]]] = {}
    frames: list[tuple[str | None, int | None, str]] = []
    module: str | None = None
    offset: int | None = None
    for line in run().splitlines():
        if line.startswith("Loaded modules:"):
            break
        if match := re.match(r"^Thread (\d+)", line):
            frames = threads.setdefault(int(match.group(1)), [])
        elif match := re.match(r"^ ?\d+  (.*)$", line):
            header = match.group(1)
            module = None if header.startswith("0x") else re.split(r"!| \+ ", header)[0]
            offset = None
        elif line.startswith("    Found by: "):
            trust = line[len("    Found by: ") :]
            if trust == "inline record":
                continue
            assert offset is not None, "a frame without its address"
            module_offset = offset - modules[module][2] if module else None
            frames.append((module, module_offset, TRUSTS[trust]))
        else:
            for name, value in re.findall(r"(\w+) = (0x[0-9a-f]+)", line):
                if name in PC_REGISTERS:
                    offset = int(value, 16)
    return {
        "crash_info": crash_info,
        "modules": modules,
        "threads": [threads[index] for index in sorted(threads)],
    }


def ours(result: StackwalkResult) -> dict:
    """The walk's JSON, in the same shape."""
    data = result.to_json()
    crash = data["crash_info"]
    return {
        "crash_info": {
            "type": crash["type"],
            "address": int(crash["address"], 16) if crash["address"] else None,
            "crashing_thread": crash["crashing_thread"],
        },
        "modules": {
            module["filename"]: (
                module["debug_file"] or "",
                module["debug_id"] or "",
                int(module["base_addr"], 16),
                int(module["end_addr"], 16),
            )
            for module in data["modules"]
        },
        "threads": [
            [
                (
                    frame["module"],
                    int(frame["module_offset"], 16) if frame["module_offset"] else None,
                    frame["trust"],
                )
                for frame in thread["frames"]
            ]
            for thread in data["threads"]
        ],
    }


def assert_same_walk(mine: dict, reference: dict) -> None:
    assert mine["crash_info"] == reference["crash_info"]
    assert mine["modules"] == reference["modules"]
    assert len(mine["threads"]) == len(reference["threads"])
    for index, (found, expected) in enumerate(
        zip(mine["threads"], reference["threads"], strict=True)
    ):
        assert found == expected, f"thread {index} differs"


def write_symbols(breakpad: Breakpad, files: dict[str, Path], symbols: Path) -> dict[str, Path]:
    """dump_syms of each file, laid out for minidump_stackwalk; the .sym of each module."""
    written = {}
    for name, binary in files.items():
        done = subprocess.run(
            [str(breakpad.dump_syms), str(binary)], capture_output=True, timeout=WITHIN
        )
        assert done.returncode == 0, done.stderr
        _module, _os, _arch, debug_id, debug_file = (
            done.stdout.split(b"\n", 1)[0].decode().split(" ", 4)
        )
        path = sym_path(symbols, debug_file, debug_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(done.stdout)
        written[name] = path
    return written


def functions(sym: Path) -> list[tuple[int, int, str]]:
    found = []
    for line in sym.read_text().splitlines():
        if line.startswith("FUNC "):
            fields = line.split(" ", 5)
            if fields[1] == "m":
                fields = fields[:1] + fields[2:]
            found.append((int(fields[1], 16), int(fields[2], 16), fields[4]))
    return found


def function_names(frames, syms: dict[str, Path]) -> list[str]:
    """Each frame's function, looked up at its address (less one above the context frame)."""
    names = []
    tables = {name: functions(path) for name, path in syms.items()}
    for number, (module, offset, _trust) in enumerate(frames):
        name = "?"
        if module is None or offset is None:
            names.append(name)
            continue
        address = offset - (1 if number else 0)
        for start, size, function in tables.get(module, []):
            if start <= address < start + size:
                name = function
        names.append(name)
    return names


SYMBOL_SETS = {
    "all": lambda name: True,
    "without-libmid": lambda name: name != "libmid.so",
    "none": lambda name: False,
}


@pytest.mark.parametrize(
    ("variant", "symbol_set"),
    [
        ("O0", "all"),
        ("O0", "none"),
        ("O2-no-frame-pointer", "all"),
        ("O2-no-frame-pointer", "without-libmid"),
        ("O2-no-frame-pointer", "none"),
    ],
)
def test_every_thread_walks_as_breakpad_walks_it(crashes, breakpad, tmp_path, variant, symbol_set):
    crash = crashes[variant]
    dump = Minidump.parse(crash.dump.read_bytes())
    files = {
        name: path
        for name, path in module_files(dump, crash).items()
        if SYMBOL_SETS[symbol_set](name)
    }
    symbols = tmp_path / "symbols"
    symbols.mkdir()
    syms = write_symbols(breakpad, files, symbols)

    result = stackwalk(crash.dump.read_bytes(), cfi_from(symbols))
    mine = ours(result)
    reference = breakpad_walk(breakpad, crash.dump, symbols)
    assert_same_walk(mine, reference)
    assert mine["crash_info"] == {
        "type": "SIGSEGV /SEGV_MAPERR",
        "address": CRASH_ADDRESS,
        "crashing_thread": 0,
    }
    assert len(mine["threads"]) == 5
    # Symbols are asked for only as the walk reaches a module.
    loaded = {module.filename for module in result.modules if module.loaded_symbols}
    assert loaded <= set(syms)
    assert ("stackwalk_app" in loaded) == ("stackwalk_app" in syms)

    crashed = mine["threads"][0]
    trusts = [trust for _module, _offset, trust in crashed]
    assert trusts[0] == "context"
    if symbol_set == "all":
        # The whole chain, each caller by CFI, from the crash to main and the C library.
        names = function_names(crashed, syms)
        chain = ["crash_here", "step_c", "step_b", "step_a", "mid_inner", "mid_call"]
        chain += ["recurse"] * 4 + ["main"]
        assert names[: len(chain)] == chain
        assert set(trusts[1 : len(chain) + 2]) == {"cfi"}
        # Every other thread from its blocking call, through its levels, to its start routine.
        for thread in mine["threads"][1:]:
            names = function_names(thread, syms)
            assert any(name in names for name in ("reader", "sleeper", "waiter", "spinner"))
    elif symbol_set == "without-libmid":
        # libmid's frames are found by scanning, and the walk goes on to main.
        names = function_names(crashed, syms)
        assert names[:4] == ["crash_here", "step_c", "step_b", "step_a"]
        assert "scan" in trusts
        assert "main" in names
    else:
        assert set(trusts[1:]) <= {"frame_pointer", "scan"}


# -- laid-out stacks on other architectures, against Breakpad ---------------------------------------

import random  # noqa: E402


@dataclass
class Case:
    dump: bytes
    syms: dict[tuple[str, str], str]  # (debug file, debug id) -> .sym text


def random_case(seed: int, arch: str, platform: str) -> Case:
    """A dump whose stacks mix plausible return addresses, frame pointers and noise, with modules
    that have CFI, STACK WIN records, function bounds, or no symbols at all."""
    rng = random.Random(seed)
    width = 4 if arch == "x86" else 8
    top = 0xFFFFFFFF if width == 4 else (1 << 64) - 1
    module_base = 0x10000000 if width == 4 else 0x7F3A00000000
    stack_base = 0x00200000 if width == 4 else 0x7FFC00000000
    synth = Synth(arch=arch, platform=platform)
    syms: dict[tuple[str, str], str] = {}
    functions_of: list[list[tuple[int, int]]] = []
    for number in range(3):
        base = module_base + number * 0x20000
        size = 0x8000
        if platform == "windows":
            guid = uuid.UUID(int=rng.getrandbits(128))
            cv = cv_pdb70(guid, number + 1, f"mod{number}.pdb")
            name = f"C:\\\\app\\\\mod{number}.dll"
        else:
            cv = cv_elf(rng.randbytes(20))
            name = f"/opt/app/libmod{number}.so"
        synth.modules.append(SynthModule(base, size, name, cv, stamp=0x60000000 + number))
        starts = sorted(rng.sample(range(0x10, size // 0x100), 24))
        funcs = [(start * 0x100, rng.randrange(0x40, 0x100)) for start in starts]
        functions_of.append(funcs)
        if number == 2:
            continue  # no symbols for the last module
        dump_module = md.Minidump.parse(synth.build()).modules[number]
        lines = [f"MODULE {platform} {arch} {dump_module.debug_id} {dump_module.debug_file}"]
        for start, length in funcs:
            lines.append(f"FUNC {start:x} {length:x} {rng.choice([0, 4, 8])} f{start:x}")
        lines.append(f"PUBLIC {funcs[-1][0] + 0x200:x} 0 tail_symbol")
        for start, length in funcs:
            lines += cfi_records(rng, arch, platform, start, length)
        syms[(dump_module.debug_file, dump_module.debug_id)] = "\n".join(lines) + "\n"

    def code_address() -> int:
        number = rng.choice([0, 0, 1, 2])
        start, length = rng.choice(functions_of[number])
        return module_base + number * 0x20000 + start + rng.randrange(1, length)

    for thread in range(3):
        start = stack_base + thread * 0x100000
        words = rng.randrange(8, 200)
        stack = []
        for index in range(words):
            kind = rng.random()
            if kind < 0.3:
                stack.append(code_address())
            elif kind < 0.55:
                stack.append(start + rng.randrange(index, words + 4) * width)
            elif kind < 0.75:
                stack.append(rng.randrange(0, 0x100))
            else:
                stack.append(rng.getrandbits(8 * width))
        data = b"".join(value.to_bytes(width, "little") for value in stack)
        sp = start + rng.randrange(0, 6) * width
        pc = code_address() if rng.random() < 0.9 else rng.getrandbits(8 * width)
        fp = start + rng.randrange(0, words) * width if rng.random() < 0.8 else rng.getrandbits(16)
        if arch == "amd64":
            registers = {"rip": pc, "rsp": sp, "rbp": fp, "rbx": rng.getrandbits(64)}
        elif arch == "x86":
            registers = {"eip": pc, "esp": sp, "ebp": fp, "ebx": 7, "esi": 8, "edi": 9}
        else:
            registers = {"pc": pc, "sp": sp, "x29": fp, "x19": 5}
            registers["x30"] = code_address() if rng.random() < 0.7 else 0
            if rng.random() < 0.3:
                registers["x30"] |= 0x0012000000000000  # a pointer authentication code
        synth.threads.append(SynthThread(0x100 + thread, start, data, registers))
        assert registers[{"amd64": "rsp", "x86": "esp", "arm64": "sp"}[arch]] <= top
    code = 0xC0000005 if platform == "windows" else 11
    crashed = synth.threads[0]
    synth.exception = (crashed.thread_id, code, 1, 0x5A0, (1, 0x5A0), crashed.registers)
    return Case(synth.build(), syms)


def cfi_records(rng: random.Random, arch: str, platform: str, start: int, length: int) -> list[str]:
    choice = rng.random()
    if choice < 0.2:
        return []
    if arch == "amd64":
        records = [f"STACK CFI INIT {start:x} {length:x} .cfa: $rsp 8 + .ra: .cfa -8 + ^"]
        if choice < 0.6:
            records += [
                f"STACK CFI {start + 1:x} .cfa: $rsp 16 + $rbp: .cfa -16 + ^",
                f"STACK CFI {start + 4:x} .cfa: $rbp 16 +",
            ]
        else:
            records.append(f"STACK CFI {start + 2:x} .cfa: $rsp {rng.choice([16, 24, 48])} +")
        return records
    if arch == "arm64":
        records = [f"STACK CFI INIT {start:x} {length:x} .cfa: sp 0 + .ra: x30"]
        if choice < 0.6:
            records += [
                f"STACK CFI {start + 4:x} .cfa: sp 32 + .ra: .cfa -24 + ^ x29: .cfa -32 + ^",
                f"STACK CFI {start + 8:x} .cfa: x29 32 +",
            ]
        elif choice < 0.8:
            records.append(
                f"STACK CFI {start + 4:x} .cfa: sp {rng.choice([16, 48])} + x19: .cfa -8 + ^"
            )
        return records
    # x86: STACK WIN on Windows (FrameData programs, FPO), CFI elsewhere.
    if platform == "windows":
        parameters = rng.choice([0, 4, 8])
        if choice < 0.5:
            program = "$T0 $ebp = $eip $T0 4 + ^ = $ebp $T0 ^ = $esp $T0 8 + ="
            if rng.random() < 0.3:
                program = "$T0 .raSearch = $eip $T0 ^ = $esp $T0 4 + = $ebx $T0 8 - ^ ="
            if rng.random() < 0.2:
                program = "$T1 $ebp 4 + = $T0 $T1 8 @ = $eip $T1 ^ = $esp $T1 4 + = $ebp $T0 ^ ="
            return [f"STACK WIN 4 {start:x} {length:x} 3 0 {parameters:x} 4 8 0 1 {program}"]
        saved, local = rng.choice([0, 4, 8]), rng.choice([0, 8, 0x10])
        allocates = rng.choice([0, 1])
        return [
            f"STACK WIN 0 {start:x} {length:x} 3 0 {parameters:x} {saved:x} {local:x} 0 0 {allocates}"
        ]
    records = [f"STACK CFI INIT {start:x} {length:x} .cfa: $esp 4 + .ra: .cfa -4 + ^"]
    if choice < 0.6:
        records += [
            f"STACK CFI {start + 1:x} .cfa: $esp 8 + $ebp: .cfa -8 + ^",
            f"STACK CFI {start + 3:x} .cfa: $ebp 8 +",
        ]
    return records


def walk_both(breakpad: Breakpad, case: Case, directory: Path) -> tuple[dict, dict]:
    directory.mkdir()
    dump = directory / "case.dmp"
    dump.write_bytes(case.dump)
    symbols = directory / "symbols"
    for (debug_file, debug_id), text in case.syms.items():
        path = sym_path(symbols, debug_file, debug_id)
        path.parent.mkdir(parents=True)
        path.write_text(text)
    symbols.mkdir(exist_ok=True)
    return ours(stackwalk(case.dump, cfi_from(symbols))), breakpad_walk(breakpad, dump, symbols)


@pytest.mark.parametrize(
    ("arch", "platform"),
    [
        ("arm64", "linux"),
        ("arm64", "mac"),
        ("x86", "windows"),
        ("x86", "linux"),
        ("amd64", "windows"),
        ("amd64", "linux"),
    ],
)
def test_laid_out_stacks_walk_as_breakpad_walks_them(breakpad, tmp_path, arch, platform):
    trusts: set[str] = set()
    for seed in range(25):
        case = random_case(seed, arch, platform)
        mine, reference = walk_both(breakpad, case, tmp_path / f"case-{seed}")
        try:
            assert_same_walk(mine, reference)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
        trusts |= {trust for thread in mine["threads"] for _m, _o, trust in thread}
    # The cases reach every way of finding a caller that the architecture has.
    expected = {"context", "cfi", "scan"}
    if not (arch == "amd64" and platform == "windows"):
        expected.add("frame_pointer")
    assert expected <= trusts


@pytest.mark.parametrize(
    ("platform", "arch", "code", "flags", "parameters"),
    [
        ("linux", "amd64", 11, 2, ()),
        ("linux", "amd64", 4, 3, ()),
        ("linux", "amd64", 7, 1, ()),
        ("linux", "amd64", 8, 1, ()),
        ("linux", "amd64", 8, 99, ()),
        ("linux", "amd64", 6, 0, ()),
        ("linux", "amd64", 0xFFFFFFFF, 0, ()),
        ("linux", "amd64", 77, 5, ()),
        ("windows", "x86", 0xC0000005, 0, (0, 0xDEADBEEF)),
        ("windows", "x86", 0xC0000005, 0, (1, 0x1234)),
        ("windows", "x86", 0xC0000005, 0, (8, 0x1234)),
        ("windows", "x86", 0xC0000005, 0, (5, 0x1234)),
        ("windows", "amd64", 0xC0000005, 0, ()),
        ("windows", "amd64", 0xC0000006, 0, (1, 0x5000, 0xC0DE0001)),
        ("windows", "amd64", 0xC0000409, 0, (2,)),
        ("windows", "amd64", 0xC0000409, 0, (0,)),
        ("windows", "amd64", 0xC0000409, 0, (999,)),
        ("windows", "amd64", 0xE06D7363, 0, ()),
        ("windows", "amd64", 0xC00000FD, 0, ()),
        ("windows", "amd64", 0x12345678, 0, ()),
        ("mac", "arm64", 1, 1, ()),
        ("mac", "arm64", 1, 0x101, ()),
        ("mac", "amd64", 1, 13, ()),
        ("mac", "amd64", 2, 13, ()),
        ("mac", "amd64", 3, 1, ()),
        ("mac", "amd64", 5, 0x00010002, ()),
        ("mac", "amd64", 6, 2, ()),
        ("mac", "amd64", 12, 3, ()),
        ("mac", "amd64", 0x43507378, 0, ()),
        ("mac", "amd64", 99, 3, ()),
    ],
)
def test_crash_reasons_are_worded_as_breakpad_words_them(
    breakpad, tmp_path, platform, arch, code, flags, parameters
):
    synth = Synth(arch=arch, platform=platform)
    pc, sp = {"amd64": ("rip", "rsp"), "x86": ("eip", "esp"), "arm64": ("pc", "sp")}[arch]
    registers = {pc: 0x1234, sp: 0x8000}
    synth.threads = [SynthThread(3, 0x8000, b"\0" * 64, registers)]
    address = 0xFFFFFFFF00000ABC
    synth.exception = (3, code, flags, address, parameters, registers)
    case = Case(synth.build(), {})
    mine, reference = walk_both(breakpad, case, tmp_path / "case")
    assert mine["crash_info"] == reference["crash_info"]
    assert mine["crash_info"]["crashing_thread"] == 0


def small_walk_dump(**changes) -> Synth:
    synth = Synth()
    synth.modules = [SynthModule(0x10000, 0x1000, "/bin/app", cv_elf(b"\x11" * 20))]
    stack = b"".join(value.to_bytes(8, "little") for value in [0, 0x10100, 0, 0x10200] * 16)
    synth.threads = [
        SynthThread(1, 0x7000, stack, {"rip": 0x10010, "rsp": 0x7000, "rbp": 1}),
        SynthThread(2, 0x9000, stack, {"rip": 0x10020, "rsp": 0x9000, "rbp": 1}),
    ]
    for name, value in changes.items():
        setattr(synth, name, value)
    return synth


def test_without_symbols_a_walk_scans_and_stops_at_its_limits():
    data = small_walk_dump().build()
    result = stackwalk(data, lambda module: None)
    thread = result.threads[0]
    # The context frame, then every plausible return address above it, by scanning.
    assert [frame.trust for frame in thread.frames] == ["context"] + ["scan"] * 32
    assert [frame.module_offset for frame in thread.frames[:3]] == [0x10, 0x100, 0x200]
    assert thread.frames[1].offset == 0x10100 and thread.frames[1].module_index == 0
    assert not thread.frames_truncated
    # A frame limit ends each thread; a budget for the whole dump ends the walk.
    limited = stackwalk(data, lambda module: None, max_frames=5)
    assert [len(t.frames) for t in limited.threads] == [5, 5]
    assert all(t.frames_truncated for t in limited.threads)
    budget = stackwalk(data, lambda module: None, max_frames=50, max_total_frames=40)
    assert [len(t.frames) for t in budget.threads] == [33, 7]
    assert [t.frames_truncated for t in budget.threads] == [False, True]
    assert result.crash_info.type is None and result.crash_info.crashing_thread is None


def test_symbols_are_asked_for_once_per_module_and_only_when_reached():
    asked = []

    def cfi_for(module):
        asked.append(module.filename)
        return None

    synth = small_walk_dump()
    synth.modules.append(SynthModule(0x50000, 0x1000, "/lib/unused.so", cv_elf(b"\x22" * 20)))
    stackwalk(synth.build(), cfi_for)
    assert asked == ["app"]


def test_threads_without_memory_or_context_and_the_dump_writing_thread():
    synth = small_walk_dump()
    synth.threads[1].stack = b""  # a thread whose stack the dump lacks
    synth.threads.append(SynthThread(9, 0xA000, b"\0" * 64, {"rip": 0x10030, "rsp": 0xA000}))
    synth.extra_streams = [(md.BREAKPAD_INFO, struct.pack("<III", 3, 9, 2))]
    result = stackwalk(synth.build(), lambda module: None)
    # Thread 9 wrote the dump and is left out; thread 2 asked for it.
    assert [thread.thread_id for thread in result.threads] == [1, 2]
    assert result.crash_info.crashing_thread == 1 and result.crash_info.type is None
    assert [frame.trust for frame in result.threads[1].frames] == ["context"]


def test_two_crashing_threads_or_no_thread_list_are_errors():
    synth = small_walk_dump()
    synth.threads[1].thread_id = 1
    synth.exception = (1, 11, 1, 0, (), None)
    with pytest.raises(MinidumpError, match="two threads have the crashing thread's id"):
        stackwalk(synth.build(), lambda module: None)
    data = small_dump()
    entry = stream_entry(data, md.THREAD_LIST)
    with pytest.raises(MinidumpError, match="no thread list"):
        stackwalk(patched(data, entry, "<I", 0x7777), lambda module: None)


def test_the_result_renders_as_minidump_stackwalks_json(crashes, breakpad, tmp_path):
    crash = crashes["O0"]
    data = crash.dump.read_bytes()
    result = stackwalk(data, lambda module: None)
    result.modules[0].missing_symbols = True  # the caller's to say
    rendered = result.to_json()
    assert set(rendered) == {
        "status", "system_info", "crash_info", "main_module", "modules", "thread_count", "threads",
    }  # fmt: skip
    assert rendered["crash_info"] == {
        "type": "SIGSEGV /SEGV_MAPERR",
        "address": "0x5a0",
        "crashing_thread": 0,
        "assertion": None,
    }
    assert rendered["system_info"]["cpu_arch"] == "amd64"
    assert rendered["system_info"]["os"] == "Linux"
    assert rendered["main_module"] == 0 and rendered["thread_count"] == 5
    app = rendered["modules"][0]
    assert app["filename"] == "stackwalk_app" and app["missing_symbols"] is True
    assert set(app) == {
        "base_addr", "end_addr", "filename", "code_id", "debug_file", "debug_id", "version",
        "loaded_symbols", "missing_symbols",
    }  # fmt: skip
    frame = rendered["threads"][0]["frames"][0]
    assert frame == {
        "frame": 0,
        "module": "stackwalk_app",
        "module_offset": frame["module_offset"],
        "offset": frame["offset"],
        "trust": "context",
    }
    assert int(frame["offset"], 16) - int(app["base_addr"], 16) == int(frame["module_offset"], 16)
    import json
    import pickle

    assert json.loads(json.dumps(rendered)) == rendered
    # A result crosses a process pool's boundary whole.
    assert pickle.loads(pickle.dumps(result)).to_json() == rendered


# -- hostile dumps ----------------------------------------------------------------------------------

import signal  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

# A walk of any of these dumps takes well under a second; this only turns a hang into a failure.
HANG_GUARD = 60


class Hang(Exception):
    pass


def guarded(call):
    """Run ``call()``, failing if it has not returned within HANG_GUARD seconds."""

    def expire(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, HANG_GUARD)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def stream_offsets(data: bytes) -> list[tuple[int, int, int]]:
    """(directory entry offset, rva, size) of each stream."""
    _sig, _version, count, directory = struct.unpack_from("<IIII", data)
    entries = []
    for index in range(count):
        offset = directory + 12 * index
        _kind, size, rva = struct.unpack_from("<III", data, offset)
        entries.append((offset, rva, size))
    return entries


def mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    out = bytearray(data)
    streams = stream_offsets(data)
    kind = rng.choice(["flip", "flip-headers", "truncate", "count", "directory", "descriptor"])
    if kind == "flip":
        for _ in range(rng.randrange(1, 40)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "flip-headers":
        # Where the structure is: the header, the directory, and the start of each stream.
        for _ in range(rng.randrange(1, 8)):
            _entry, rva, size = rng.choice(streams)
            target = rng.choice([rng.randrange(32), rva + rng.randrange(max(1, min(size, 64)))])
            if target < len(out):
                out[target] = rng.randrange(256)
    elif kind == "truncate":
        out = out[: rng.randrange(len(out))]
    elif kind == "count":
        _entry, rva, _size = rng.choice(streams)
        value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1 << rng.randrange(32), rng.getrandbits(32)])
        struct.pack_into("<I", out, rva, value)
    elif kind == "directory":
        entry, _rva, _size = rng.choice(streams)
        field = rng.choice([4, 8])
        struct.pack_into("<I", out, entry + field, rng.choice([0xFFFFFFFF, rng.getrandbits(32), 0]))
    else:
        # Any 4 bytes inside a stream: sizes, RVAs and counts of its descriptors.
        _entry, rva, size = rng.choice(streams)
        if size >= 4:
            at = rva + rng.randrange(0, size - 3) // 4 * 4
            if at + 4 <= len(out):
                struct.pack_into("<I", out, at, rng.choice([0xFFFFFFFF, rng.getrandbits(32), 0, 1]))
    return kind, bytes(out)


def test_mutated_dumps_end_in_a_result_or_a_minidump_error(
    crashes, breakpad, tmp_path, record_property
):
    crash = crashes["O2-no-frame-pointer"]
    dump = Minidump.parse(crash.dump.read_bytes())
    symbols = tmp_path / "symbols"
    write_symbols(breakpad, module_files(dump, crash), symbols)
    indexes: dict[tuple[str, str], CfiIndex | None] = {}
    load = cfi_from(symbols)

    def cfi_for(module: md.Module) -> CfiIndex | None:
        key = (module.debug_file, module.debug_id)
        if key not in indexes:
            indexes[key] = load(module)
        return indexes[key]

    seeds = [(crash.dump.read_bytes(), cfi_for)]
    for seed, (arch, platform) in enumerate([("arm64", "linux"), ("x86", "windows")]):
        case = random_case(seed, arch, platform)
        case_symbols = tmp_path / f"symbols-{arch}"
        for (debug_file, debug_id), text in case.syms.items():
            path = sym_path(case_symbols, debug_file, debug_id)
            path.parent.mkdir(parents=True)
            path.write_text(text)
        seeds.append((case.dump, cfi_from(case_symbols)))

    rng = random.Random(20240611)
    outcomes: dict[str, int] = {}
    slowest = 0.0
    cases = 300
    kept = tmp_path / "mutated"
    kept.mkdir()
    for number in range(cases):
        original, symbols_for = seeds[number % len(seeds)]
        kind, data = mutate(rng, original)
        (kept / f"{number:03d}-{kind}.dmp").write_bytes(data)
        started = time.perf_counter()
        try:
            guarded(lambda data=data, symbols_for=symbols_for: stackwalk(data, symbols_for))
            outcome = "walked"
        except MinidumpError:
            outcome = "MinidumpError"
        except Hang:
            pytest.fail(f"case {number} ({kind}) did not end within {HANG_GUARD} s")
        except Exception as exc:
            raise AssertionError(f"case {number} ({kind}) raised {exc!r}") from exc
        slowest = max(slowest, time.perf_counter() - started)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    record_property("slowest_walk_seconds", round(slowest, 3))
    print(f"{cases} mutated dumps: {outcomes}, slowest {slowest:.3f} s")
    # Both ends are reached: mutations the walk survives, and ones the parser refuses.
    assert outcomes.get("walked", 0) > 20 and outcomes.get("MinidumpError", 0) > 20


def test_mutated_symbols_and_index_bytes_never_break_a_walk(tmp_path):
    rng = random.Random(7)
    case = random_case(3, "amd64", "linux")
    (_key, text), *_ = case.syms.items()
    for _ in range(100):
        raw = bytearray(text.encode())
        for _ in range(rng.randrange(1, 30)):
            raw[rng.randrange(len(raw))] = rng.choice(b" \n0123456789abcdef$.^+-*/%@=:zSTACKCFIWIN")
        index = guarded(lambda raw=raw: CfiIndex.from_sym_lines(bytes(raw).splitlines(True)))
        guarded(lambda index=index: stackwalk(case.dump, lambda module: index))
    data = CfiIndex.from_sym_lines(text.splitlines()).to_bytes()
    for _ in range(100):
        body = bytearray(data[12:])
        for _ in range(rng.randrange(1, 10)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if rng.random() < 0.5:
            body = body[: rng.randrange(len(body))]
        # With a right checksum, so that the structure itself is what is checked.
        damaged = data[:8] + struct.pack("<I", zlib.crc32(body)) + bytes(body)
        try:
            index = CfiIndex.from_bytes(damaged)
        except CfiFormatError:
            continue
        guarded(lambda index=index: stackwalk(case.dump, lambda module: index))


# -- where the walk differs from Breakpad on purpose (docs/decisions.md) ----------------------------


def test_a_caller_identical_to_its_callee_ends_the_walk_where_breakpad_lists_it_twice(
    breakpad, tmp_path
):
    # CFI that recovers the same pc and stack pointer: Breakpad allows that once, for the first
    # caller (a leaf may not move the stack pointer), and shows the frame twice.
    synth = Synth()
    synth.modules = [SynthModule(0x10000, 0x1000, "/bin/app", cv_elf(b"\x33" * 20))]
    synth.threads = [SynthThread(1, 0x7000, b"\0" * 64, {"rip": 0x10010, "rsp": 0x7000})]
    dump = Minidump.parse(synth.build())
    module = dump.modules[0]
    sym = "FUNC 0 100 0 f\nSTACK CFI INIT 0 100 .cfa: $rsp 0 + .ra: $rip\n"
    case = Case(synth.build(), {(module.debug_file, module.debug_id): sym})
    mine, reference = walk_both(breakpad, case, tmp_path / "case")
    assert reference["threads"] == [[("app", 0x10, "context"), ("app", 0x10, "cfi")]]
    assert mine["threads"] == [[("app", 0x10, "context")]]


def test_debug_ids_ages_are_uppercase_and_mac_modules_have_no_code_id():
    guid = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    synth = Synth(platform="mac")
    synth.modules = [
        SynthModule(0x1000, 0x1000, "/usr/lib/libA.dylib", cv_pdb70(guid, 0xAB, "libA"))
    ]
    synth.threads = [SynthThread(1, 0x7000, b"\0" * 16, {"rip": 0x1010, "rsp": 0x7000})]
    (module,) = Minidump.parse(synth.build()).modules
    # Breakpad prints the age with %x ("...ab"); symbol stores key debug ids in uppercase.
    assert module.debug_id == "00112233445566778899AABBCCDDEEFFAB"
    # Breakpad's code id for macOS modules is the placeholder "id".
    assert module.code_id == ""


def test_in_page_errors_give_the_ntstatus_in_hex():
    synth = Synth(platform="windows")
    synth.threads = [SynthThread(1, 0x7000, b"\0" * 16, {"rip": 0x1010, "rsp": 0x7000})]
    synth.exception = (1, 0xC0000006, 0, 0x10, (1, 0x5000, 0xC000009C), None)
    result = stackwalk(synth.build(), lambda module: None)
    assert result.crash_info.type == "EXCEPTION_IN_PAGE_ERROR_WRITE / 0xc000009c"
    assert result.crash_info.address == 0x5000


def test_dumps_of_other_cpus_give_modules_and_crash_but_no_frames():
    synth = Synth(arch="x86")
    synth.modules = [SynthModule(0x10000, 0x1000, "/system/lib/libapp.so", cv_elf(b"\x44" * 20))]
    synth.threads = [SynthThread(1, 0x7000, b"\0" * 64, {"eip": 0x10010, "esp": 0x7000})]
    synth.exception = (1, 11, 1, 0x5A0, (), {"eip": 0x10010, "esp": 0x7000})
    data = synth.build()
    # The same dump, said to be of a 32-bit ARM CPU, whose contexts are not read.
    data = patched(data, stream_rva(data, md.SYSTEM_INFO), "<H", md.ARCH_ARM)
    result = stackwalk(data, lambda module: None)
    assert result.warnings == ["arm CPU contexts are not read: threads have no frames"]
    assert [len(thread.frames) for thread in result.threads] == [0]
    assert result.crash_info.type == "SIGSEGV /SEGV_MAPERR"
    assert result.crash_info.crashing_thread == 0
    assert [module.filename for module in result.modules] == ["libapp.so"]
