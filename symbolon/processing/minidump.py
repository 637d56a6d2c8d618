"""A minidump parser: header, stream directory and the streams a stack walk needs.

``Minidump.parse(data)`` takes any bytes-like object (``bytes``, ``bytearray``, ``mmap``,
``memoryview``) and never copies it whole: streams are read through one ``memoryview``, and
memory regions are kept as offsets into it. Every read is checked against the bytes there are, and
every count against the bytes it would need before anything is allocated for it, so parsing time
and memory stay proportional to the dump's size whatever its headers claim.

A dump whose header, directory or core streams (system info, exception, threads, modules, memory)
cannot be read raises ``MinidumpError`` saying what is wrong and where. Optional streams (misc
info, Breakpad info, thread names, assertion, Linux text streams) that are malformed are left out,
with a note in ``Minidump.warnings``. The layouts are Microsoft's ``minidumpapiset.h`` and
Breakpad's ``minidump_format.h`` extensions (see docs/processing.md).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Context",
    "ExceptionInfo",
    "MemoryRegion",
    "Minidump",
    "MinidumpError",
    "MiscInfo",
    "Module",
    "SystemInfo",
    "Thread",
]


class MinidumpError(ValueError):
    """The bytes are not a minidump this parser can read; the message says why."""


SIGNATURE = 0x504D444D  # "MDMP"
VERSION = 0xA793

# Stream types.
THREAD_LIST = 3
MODULE_LIST = 4
MEMORY_LIST = 5
EXCEPTION = 6
SYSTEM_INFO = 7
MEMORY64_LIST = 9
MISC_INFO = 15
THREAD_NAME_LIST = 24
BREAKPAD_INFO = 0x47670001
ASSERTION_INFO = 0x47670002
LINUX_CPU_INFO = 0x47670003
LINUX_PROC_STATUS = 0x47670004
LINUX_LSB_RELEASE = 0x47670005
LINUX_CMD_LINE = 0x47670006
LINUX_ENVIRON = 0x47670007
LINUX_AUXV = 0x47670008
LINUX_MAPS = 0x47670009

STREAM_NAMES = {
    THREAD_LIST: "thread list",
    MODULE_LIST: "module list",
    MEMORY_LIST: "memory list",
    EXCEPTION: "exception",
    SYSTEM_INFO: "system info",
    MEMORY64_LIST: "memory64 list",
    MISC_INFO: "misc info",
    THREAD_NAME_LIST: "thread name list",
    BREAKPAD_INFO: "Breakpad info",
    ASSERTION_INFO: "assertion info",
    LINUX_CPU_INFO: "Linux cpuinfo",
    LINUX_PROC_STATUS: "Linux proc status",
    LINUX_LSB_RELEASE: "Linux lsb-release",
    LINUX_CMD_LINE: "Linux command line",
    LINUX_ENVIRON: "Linux environment",
    LINUX_AUXV: "Linux auxv",
    LINUX_MAPS: "Linux maps",
}

# Processor architectures (MINIDUMP_SYSTEM_INFO.ProcessorArchitecture).
ARCH_X86 = 0
ARCH_MIPS = 1
ARCH_PPC = 3
ARCH_SHX = 4
ARCH_ARM = 5
ARCH_IA64 = 6
ARCH_AMD64 = 9
ARCH_X86_WIN64 = 10
ARCH_ARM64 = 12
ARCH_SPARC = 0x8001
ARCH_PPC64 = 0x8002
ARCH_ARM64_OLD = 0x8003
ARCH_MIPS64 = 0x8004
ARCH_RISCV = 0x8005
ARCH_RISCV64 = 0x8006

CPU_NAMES = {
    ARCH_X86: "x86",
    ARCH_AMD64: "amd64",
    ARCH_PPC: "ppc",
    ARCH_PPC64: "ppc64",
    ARCH_SPARC: "sparc",
    ARCH_ARM: "arm",
    ARCH_ARM64: "arm64",
    ARCH_ARM64_OLD: "arm64",
    ARCH_MIPS: "mips",
    ARCH_MIPS64: "mips64",
    ARCH_RISCV: "riscv",
    ARCH_RISCV64: "riscv64",
}
# Architectures whose addresses are 32 bits wide.
ARCHS_32 = {ARCH_X86, ARCH_MIPS, ARCH_PPC, ARCH_SHX, ARCH_ARM, ARCH_X86_WIN64}

# Platform ids.
OS_WIN32_WINDOWS = 1
OS_WIN32_NT = 2
OS_MAC = 0x8101
OS_IOS = 0x8102
OS_LINUX = 0x8201
OS_SOLARIS = 0x8202
OS_ANDROID = 0x8203
OS_PS3 = 0x8204
OS_NACL = 0x8205
OS_FUCHSIA = 0x8206

OS_NAMES = {
    OS_WIN32_NT: ("Windows NT", "windows"),
    OS_WIN32_WINDOWS: ("Windows", "windows"),
    OS_MAC: ("Mac OS X", "mac"),
    OS_IOS: ("iOS", "ios"),
    OS_LINUX: ("Linux", "linux"),
    OS_SOLARIS: ("Solaris", "solaris"),
    OS_ANDROID: ("Android", "android"),
    OS_PS3: ("PS3", "ps3"),
    OS_NACL: ("NaCl", "nacl"),
    OS_FUCHSIA: ("Fuchsia", "fuchsia"),
}

# Context flags: the CPU part of MINIDUMP's CONTEXT.ContextFlags.
CONTEXT_CPU_MASK = 0xFFFFFF00
CONTEXT_X86 = 0x00010000
CONTEXT_AMD64 = 0x00100000
CONTEXT_ARM64 = 0x00400000
CONTEXT_ARM64_OLD = 0x80000000

AMD64_CONTEXT_SIZE = 1232
X86_CONTEXT_SIZE = 716
ARM64_CONTEXT_SIZE = 912
ARM64_OLD_CONTEXT_SIZE = 796
# Breakpad accepts an AMD64 context followed by an XSAVE area up to this size.
MAX_XSAVE_AREA = 1 << 20

AMD64_REGISTERS = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip",
)  # fmt: skip
X86_REGISTERS = (
    "edi", "esi", "ebx", "edx", "ecx", "eax", "ebp", "eip", "cs", "eflags", "esp",
)  # fmt: skip
ARM64_REGISTERS = (*(f"x{i}" for i in range(31)), "sp", "pc")

CV_PDB70 = 0x53445352  # "RSDS"
CV_PDB20 = 0x3031424E  # "NB10"
CV_ELF = 0x4270454C  # "BpEL"
VS_FIXEDFILEINFO_SIGNATURE = 0xFEEF04BD

# Records and their sizes.
HEADER = struct.Struct("<IIIIIIQ")
DIRECTORY_ENTRY = struct.Struct("<III")
THREAD = struct.Struct("<IIIIQQII II")
MODULE = struct.Struct("<QIIII13III II QQ")
MEMORY_DESCRIPTOR = struct.Struct("<QII")
MEMORY64_DESCRIPTOR = struct.Struct("<QQ")
EXCEPTION_STREAM = struct.Struct("<II II QQ II 15Q II")
SYSTEM_INFO_STREAM = struct.Struct("<HHHBBIIIIIHH24s")
THREAD_NAME = struct.Struct("<IQ")

# Caps that keep hostile values cheap; none is reached by a real dump.
MAX_STRING_BYTES = 64 * 1024
MAX_CV_RECORD = 64 * 1024
MAX_TEXT_STREAM = 16 * 1024 * 1024


@dataclass(frozen=True)
class SystemInfo:
    cpu_arch: str  # Breakpad's names: "amd64", "arm64", "x86", ...; "0x%04x" when unknown
    processor_architecture: int
    cpu_info: str
    cpu_count: int
    os: str  # "Linux", "Windows NT", "Mac OS X", ...
    os_short: str  # "linux", "windows", "mac", ...
    os_version: str  # "major.minor.build CSD", as Breakpad prints it
    platform_id: int
    major_version: int
    minor_version: int
    build_number: int
    csd_version: str | None
    cpu_vendor: str | None

    @property
    def pointer_size(self) -> int:
        return 4 if self.processor_architecture in ARCHS_32 else 8


@dataclass(frozen=True)
class Context:
    """A thread's registers. ``arch`` is "amd64", "x86" or "arm64"; ``registers`` maps the
    register names Breakpad's stack walkers use (without "$") to their values."""

    arch: str
    flags: int
    registers: dict[str, int]

    @property
    def pc(self) -> int:
        return self.registers[{"amd64": "rip", "x86": "eip", "arm64": "pc"}[self.arch]]

    @property
    def sp(self) -> int:
        return self.registers[{"amd64": "rsp", "x86": "esp", "arm64": "sp"}[self.arch]]


@dataclass(frozen=True)
class MemoryRegion:
    """Memory of the crashed process kept in the dump: ``size`` bytes at ``start`` in the process,
    found at ``offset`` in the dump."""

    start: int
    size: int
    offset: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Thread:
    index: int
    thread_id: int
    suspend_count: int
    priority_class: int
    priority: int
    teb: int
    stack_start: int
    stack: MemoryRegion | None  # the thread's stack memory, if the dump has it
    context: Context | None
    name: str | None = None


@dataclass(frozen=True)
class ExceptionInfo:
    thread_id: int
    code: int
    flags: int
    record: int
    address: int
    parameters: tuple[int, ...]
    context: Context | None


@dataclass(frozen=True)
class Module:
    index: int
    base: int
    size: int
    checksum: int
    time_date_stamp: int
    code_file: str  # the module's path as the dump names it
    version: str  # "a.b.c.d" from the version resource, or ""
    cv_signature: str | None  # "PDB70", "PDB20", "ELF" or None
    debug_file: str  # basename, as symbol stores key it ("" if unknown)
    debug_id: str  # uppercase hex ("" if unknown)
    code_id: str  # "" if unknown
    build_id: bytes = b""

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def filename(self) -> str:
        return basename(self.code_file)


@dataclass(frozen=True)
class MiscInfo:
    flags: int
    process_id: int | None
    process_create_time: int | None
    build_string: str | None = None


@dataclass(frozen=True)
class Stream:
    stream_type: int
    size: int
    rva: int


def basename(path: str) -> str:
    """The last component of a path written with either separator (Breakpad's PathnameStripper)."""
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[cut + 1 :]


class _Reader:
    """Bounds-checked reads from the dump."""

    def __init__(self, data: Any):
        try:
            self.view = memoryview(data).cast("B")
        except TypeError as exc:
            raise MinidumpError(f"a minidump is bytes, not {type(data).__name__}") from exc
        self.size = len(self.view)

    def check(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise MinidumpError(
                f"{what} at offset {offset:#x} needs {size} bytes, past the end of the "
                f"{self.size}-byte dump (truncated, or a wrong size or offset)"
            )

    def unpack(self, record: struct.Struct, offset: int, what: str) -> tuple[Any, ...]:
        self.check(offset, record.size, what)
        return record.unpack_from(self.view, offset)

    def u32(self, offset: int, what: str) -> int:
        self.check(offset, 4, what)
        return int.from_bytes(self.view[offset : offset + 4], "little")

    def bytes(self, offset: int, size: int, what: str) -> bytes:
        self.check(offset, size, what)
        return bytes(self.view[offset : offset + size])

    def string(self, rva: int, what: str) -> str:
        """A MINIDUMP_STRING: a byte length, then UTF-16LE."""
        length = self.u32(rva, what)
        if length % 2 or length > MAX_STRING_BYTES:
            raise MinidumpError(f"{what} at offset {rva:#x} claims {length} bytes")
        raw = self.bytes(rva + 4, length, what)
        return raw.decode("utf-16-le", errors="replace")


def _count_fits(count: int, entry: int, start: int, stream: Stream, what: str) -> int:
    """Where a list of ``count`` entries ends, after checking that its stream holds them; a
    padding word after the count (as some writers put) is accepted as Breakpad does."""
    needed = start + count * entry
    if needed <= stream.size:
        return start
    raise MinidumpError(
        f"the {what} stream claims {count} entries of {entry} bytes, "
        f"more than its {stream.size} bytes hold"
    )


def _list_start(count: int, entry: int, stream: Stream) -> int:
    # Entries follow the count directly, or after 4 bytes of padding (Breakpad's writers on some
    # platforms align them to 8).
    if stream.size == 4 + count * entry + 4:
        return 8
    return 4


def _utf8_z(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _guid_debug_id(guid: bytes, age: int) -> str:
    data1, data2, data3 = struct.unpack_from("<IHH", guid)
    return f"{data1:08X}{data2:04X}{data3:04X}{guid[8:16].hex().upper()}{age:X}"


def _version(fixed: tuple[int, ...]) -> str:
    signature, struct_version, version_hi, version_lo = fixed[:4]
    if signature != VS_FIXEDFILEINFO_SIGNATURE or not struct_version & 0x10000:
        return ""
    return f"{version_hi >> 16}.{version_hi & 0xFFFF}.{version_lo >> 16}.{version_lo & 0xFFFF}"


@dataclass
class Minidump:
    """A parsed minidump. Build one with ``Minidump.parse``."""

    size: int
    version: int
    flags: int
    time_date_stamp: int
    streams: list[Stream]
    system_info: SystemInfo | None
    exception: ExceptionInfo | None
    threads: list[Thread]
    modules: list[Module]
    memory: list[MemoryRegion]  # sorted by start
    misc_info: MiscInfo | None
    dump_thread_id: int | None  # Breakpad info: the thread that wrote the dump
    requesting_thread_id: int | None
    assertion: str | None
    linux_cpu_info: str | None
    linux_maps: str | None
    warnings: list[str] = field(default_factory=list)
    _view: memoryview | None = field(default=None, repr=False)
    _memory_starts: list[int] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Let go of the dump's bytes (an ``mmap`` can be closed only once no view of it is
        left). Memory reads answer None afterwards."""
        if self._view is not None:
            self._view.release()
            self._view = None
        self.memory = []
        self._memory_starts = []

    # -- reading process memory ---------------------------------------------------------------

    def region_for(self, address: int) -> MemoryRegion | None:
        """The memory region holding ``address``, if the dump kept it."""
        index = bisect_right(self._memory_starts, address) - 1
        if index >= 0:
            region = self.memory[index]
            if address < region.end:
                return region
        return None

    def region_bytes(self, region: MemoryRegion) -> memoryview:
        """A region's bytes, as a view into the dump (no copy)."""
        assert self._view is not None
        return self._view[region.offset : region.offset + region.size]

    def read(self, address: int, size: int) -> bytes | None:
        """``size`` bytes of process memory at ``address``, or None if the dump lacks them."""
        region = self.region_for(address)
        if region is None or address + size > region.end or self._view is None:
            return None
        start = region.offset + address - region.start
        return bytes(self._view[start : start + size])

    # -- parsing --------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: Any) -> Minidump:
        reader = _Reader(data)
        if reader.size < HEADER.size:
            raise MinidumpError(
                f"the file has {reader.size} bytes, fewer than a minidump header's {HEADER.size}"
            )
        signature, version, count, directory, _checksum, stamp, flags = reader.unpack(
            HEADER, 0, "the header"
        )
        if signature != SIGNATURE:
            raise MinidumpError(
                f"not a minidump: it starts with {reader.bytes(0, 4, 'the signature')!r}, "
                "not b'MDMP'"
            )
        if version & 0xFFFF != VERSION:
            raise MinidumpError(f"unknown minidump version {version & 0xFFFF:#x}")
        if count * DIRECTORY_ENTRY.size > reader.size:
            raise MinidumpError(f"the header claims {count} streams, more than the file can hold")
        reader.check(directory, count * DIRECTORY_ENTRY.size, "the stream directory")

        dump = cls(
            size=reader.size,
            version=version,
            flags=flags,
            time_date_stamp=stamp,
            streams=[],
            system_info=None,
            exception=None,
            threads=[],
            modules=[],
            memory=[],
            misc_info=None,
            dump_thread_id=None,
            requesting_thread_id=None,
            assertion=None,
            linux_cpu_info=None,
            linux_maps=None,
            _view=reader.view,
        )
        by_type: dict[int, Stream] = {}
        for index in range(count):
            kind, size, rva = DIRECTORY_ENTRY.unpack_from(
                reader.view, directory + index * DIRECTORY_ENTRY.size
            )
            if kind == 0:  # unused entry
                continue
            stream = Stream(kind, size, rva)
            dump.streams.append(stream)
            name = STREAM_NAMES.get(kind, f"{kind:#x}")
            if kind in by_type:
                # Breakpad reads the first of a type, and so does this parser.
                dump.warnings.append(f"a second {name} stream is ignored")
                continue
            by_type[kind] = stream
            if kind in STREAM_NAMES:
                reader.check(rva, size, f"the {name} stream")

        if SYSTEM_INFO in by_type:
            dump.system_info = _system_info(reader, by_type[SYSTEM_INFO])
            if dump.system_info.processor_architecture not in CONTEXT_ARCHS:
                dump.warnings.append(
                    f"{dump.system_info.cpu_arch} CPU contexts are not read: threads have no frames"
                )
        dump._read_memory(reader, by_type)
        if MODULE_LIST in by_type:
            dump.modules = _modules(reader, by_type[MODULE_LIST], dump.system_info)
        if THREAD_LIST in by_type:
            dump.threads = _threads(reader, by_type[THREAD_LIST], dump)
        if EXCEPTION in by_type:
            dump.exception = _exception(reader, by_type[EXCEPTION], dump.system_info)
        dump._read_optional(reader, by_type)
        return dump

    def _read_memory(self, reader: _Reader, by_type: dict[int, Stream]) -> None:
        regions: list[MemoryRegion] = []
        if MEMORY_LIST in by_type:
            stream = by_type[MEMORY_LIST]
            count = reader.u32(stream.rva, "the memory list's count")
            start = _count_fits(
                count,
                MEMORY_DESCRIPTOR.size,
                _list_start(count, MEMORY_DESCRIPTOR.size, stream),
                stream,
                "memory list",
            )
            for index in range(count):
                base, size, rva = MEMORY_DESCRIPTOR.unpack_from(
                    reader.view, stream.rva + start + index * MEMORY_DESCRIPTOR.size
                )
                reader.check(rva, size, f"memory region {index} ({base:#x})")
                if size:
                    regions.append(MemoryRegion(base, size, rva))
        if MEMORY64_LIST in by_type:
            stream = by_type[MEMORY64_LIST]
            if stream.size < 16:
                raise MinidumpError("the memory64 list stream is shorter than its header")
            count, base_rva = struct.unpack_from("<QQ", reader.view, stream.rva)
            _count_fits(count, MEMORY64_DESCRIPTOR.size, 16, stream, "memory64 list")
            offset = base_rva
            for index in range(count):
                base, size = MEMORY64_DESCRIPTOR.unpack_from(
                    reader.view, stream.rva + 16 + index * MEMORY64_DESCRIPTOR.size
                )
                reader.check(offset, size, f"memory64 region {index} ({base:#x})")
                if size:
                    regions.append(MemoryRegion(base, size, offset))
                offset += size
        regions.sort(key=lambda region: (region.start, -region.size))
        # Overlapping regions: the first (largest at a start) keeps the overlap, so lookups by
        # bisection stay right.
        kept: list[MemoryRegion] = []
        for region in regions:
            if kept and region.start < kept[-1].end:
                continue
            kept.append(region)
        self.memory = kept
        self._memory_starts = [region.start for region in kept]

    def _read_optional(self, reader: _Reader, by_type: dict[int, Stream]) -> None:
        def attempt(kind: int, read: Any) -> None:
            if kind not in by_type:
                return
            try:
                read(by_type[kind])
            except MinidumpError as exc:
                self.warnings.append(f"the {STREAM_NAMES[kind]} stream is unreadable: {exc}")

        def misc(stream: Stream) -> None:
            self.misc_info = _misc_info(reader, stream)

        def breakpad(stream: Stream) -> None:
            if stream.size < 12:
                raise MinidumpError("it is shorter than 12 bytes")
            validity, dump_thread, requesting = struct.unpack_from("<III", reader.view, stream.rva)
            self.dump_thread_id = dump_thread if validity & 1 else None
            self.requesting_thread_id = requesting if validity & 2 else None

        def names(stream: Stream) -> None:
            count = reader.u32(stream.rva, "the thread name list's count")
            _count_fits(count, THREAD_NAME.size, 4, stream, "thread name list")
            found = {}
            for index in range(count):
                thread_id, rva = THREAD_NAME.unpack_from(
                    reader.view, stream.rva + 4 + index * THREAD_NAME.size
                )
                found[thread_id] = reader.string(rva, f"thread {thread_id}'s name")
            self.threads = [
                _with_name(thread, found.get(thread.thread_id)) for thread in self.threads
            ]

        def assertion(stream: Stream) -> None:
            if stream.size < 3 * 256 + 8:
                raise MinidumpError("it is shorter than its fields")
            raw = reader.bytes(stream.rva, 3 * 256 + 8, "the assertion")

            def text(start: int) -> str:
                return raw[start : start + 256].decode("utf-16-le", errors="replace").split("\0")[0]

            expression, function, file = text(0), text(256), text(512)
            (line,) = struct.unpack_from("<I", raw, 768)
            if expression or function or file:
                # Breakpad's wording (minidump_processor.cc, GetAssertion).
                self.assertion = (
                    f"{expression or 'Assertion failed'} in function {function}, "
                    f"file {file}, line {line}"
                    if function or file
                    else expression
                )

        def cpu_info(stream: Stream) -> None:
            self.linux_cpu_info = _text(reader, stream)

        def maps(stream: Stream) -> None:
            self.linux_maps = _text(reader, stream)

        attempt(MISC_INFO, misc)
        attempt(BREAKPAD_INFO, breakpad)
        attempt(THREAD_NAME_LIST, names)
        attempt(ASSERTION_INFO, assertion)
        attempt(LINUX_CPU_INFO, cpu_info)
        attempt(LINUX_MAPS, maps)


def _with_name(thread: Thread, name: str | None) -> Thread:
    if name is None:
        return thread
    return Thread(
        thread.index,
        thread.thread_id,
        thread.suspend_count,
        thread.priority_class,
        thread.priority,
        thread.teb,
        thread.stack_start,
        thread.stack,
        thread.context,
        name,
    )


def _text(reader: _Reader, stream: Stream) -> str:
    size = min(stream.size, MAX_TEXT_STREAM)
    return reader.bytes(stream.rva, size, "a text stream").decode("utf-8", errors="replace")


def _system_info(reader: _Reader, stream: Stream) -> SystemInfo:
    if stream.size < SYSTEM_INFO_STREAM.size:
        raise MinidumpError(
            f"the system info stream has {stream.size} bytes, fewer than its "
            f"{SYSTEM_INFO_STREAM.size}"
        )
    (
        arch,
        level,
        revision,
        cpus,
        _product_type,
        major,
        minor,
        build,
        platform,
        csd_rva,
        _suite,
        _reserved,
        cpu,
    ) = reader.unpack(SYSTEM_INFO_STREAM, stream.rva, "the system info stream")
    csd = reader.string(csd_rva, "the OS version string (CSD)") if csd_rva else None
    vendor = None
    cpu_info = ""
    if arch == ARCH_X86:
        # Only 32-bit x86 dumps hold the CPUID vendor there (Breakpad's GetCPUVendor).
        vendor = cpu[:12].split(b"\0", 1)[0].decode("latin-1")
        cpu_info = vendor + " "
    if arch in (ARCH_X86, ARCH_AMD64):
        cpu_info += f"family {level} model {revision >> 8} stepping {revision & 0xFF}"
    os_name, os_short = OS_NAMES.get(platform, (f"0x{platform:08x}", ""))
    os_version = f"{major}.{minor}.{build}" + (f" {csd}" if csd is not None else "")
    return SystemInfo(
        cpu_arch=CPU_NAMES.get(arch, f"0x{arch:04x}"),
        processor_architecture=arch,
        cpu_info=cpu_info,
        cpu_count=cpus,
        os=os_name,
        os_short=os_short,
        os_version=os_version,
        platform_id=platform,
        major_version=major,
        minor_version=minor,
        build_number=build,
        csd_version=csd,
        cpu_vendor=vendor,
    )


# Architectures whose contexts are read; others' threads have no context (and so no frames).
CONTEXT_ARCHS = {ARCH_AMD64, ARCH_X86, ARCH_ARM64, ARCH_ARM64_OLD}


def _context(
    reader: _Reader, size: int, rva: int, system: SystemInfo | None, what: str
) -> Context | None:
    """A CONTEXT record, told apart by its size and flags as Breakpad does, checked against the
    system info's architecture."""
    reader.check(rva, size, what)
    arch = system.processor_architecture if system else None
    if arch is not None and arch not in CONTEXT_ARCHS:
        return None
    view = reader.view
    if size == AMD64_CONTEXT_SIZE or (
        arch == ARCH_AMD64 and AMD64_CONTEXT_SIZE <= size <= AMD64_CONTEXT_SIZE + MAX_XSAVE_AREA
    ):
        (flags,) = struct.unpack_from("<I", view, rva + 0x30)
        if flags & CONTEXT_CPU_MASK not in (0, CONTEXT_AMD64):
            raise MinidumpError(f"{what} has AMD64's size but flags {flags:#x}")
        values = struct.unpack_from("<17Q", view, rva + 0x78)
        registers = dict(zip(AMD64_REGISTERS, values, strict=True))
        (registers["eflags"],) = struct.unpack_from("<I", view, rva + 0x44)
        return _checked(Context("amd64", flags, registers), system, what)
    if size == ARM64_OLD_CONTEXT_SIZE:
        (flags,) = struct.unpack_from("<Q", view, rva)
        if flags & CONTEXT_ARM64_OLD == 0:
            raise MinidumpError(f"{what} has the old ARM64 context's size but flags {flags:#x}")
        values = struct.unpack_from("<33Q", view, rva + 8)
        registers = dict(zip(ARM64_REGISTERS, values, strict=True))
        (registers["cpsr"],) = struct.unpack_from("<I", view, rva + 272)
        return _checked(Context("arm64", flags & 0xFFFFFFFF, registers), system, what)
    if size >= 4:
        (flags,) = struct.unpack_from("<I", view, rva)
        cpu = flags & CONTEXT_CPU_MASK
        if cpu == 0 and arch is not None:
            cpu = {ARCH_X86: CONTEXT_X86, ARCH_ARM64: CONTEXT_ARM64}.get(arch, 0)
        if cpu == CONTEXT_X86 and size >= X86_CONTEXT_SIZE - 512:
            # Without the extended registers (CONTEXT_EXTENDED_REGISTERS), x86 is 204 bytes.
            values = struct.unpack_from("<11I", view, rva + 156)
            registers = dict(zip(X86_REGISTERS, values, strict=True))
            return _checked(Context("x86", flags, registers), system, what)
        if cpu == CONTEXT_ARM64 and size >= ARM64_CONTEXT_SIZE:
            values = struct.unpack_from("<33Q", view, rva + 8)
            registers = dict(zip(ARM64_REGISTERS, values, strict=True))
            (registers["cpsr"],) = struct.unpack_from("<I", view, rva + 4)
            return _checked(Context("arm64", flags, registers), system, what)
    raise MinidumpError(
        f"{what} is a {size}-byte CPU context of no supported kind (AMD64, ARM64, x86)"
    )


def _checked(context: Context, system: SystemInfo | None, what: str) -> Context:
    if system is None:
        return context
    expected = {
        ARCH_AMD64: "amd64",
        ARCH_X86: "x86",
        ARCH_ARM64: "arm64",
        ARCH_ARM64_OLD: "arm64",
    }.get(system.processor_architecture)
    if expected is not None and expected != context.arch:
        raise MinidumpError(
            f"{what} is an {context.arch} context in a dump whose system info says {expected}"
        )
    return context


def _threads(reader: _Reader, stream: Stream, dump: Minidump) -> list[Thread]:
    count = reader.u32(stream.rva, "the thread list's count")
    start = _count_fits(
        count, THREAD.size, _list_start(count, THREAD.size, stream), stream, "thread list"
    )
    threads = []
    for index in range(count):
        (
            thread_id,
            suspend,
            priority_class,
            priority,
            teb,
            stack_start,
            stack_size,
            stack_rva,
            context_size,
            context_rva,
        ) = THREAD.unpack_from(reader.view, stream.rva + start + index * THREAD.size)
        what = f"thread {index} (id {thread_id})"
        stack = None
        if stack_size and stack_rva:
            reader.check(stack_rva, stack_size, f"{what}'s stack")
            stack = MemoryRegion(stack_start, stack_size, stack_rva)
        elif stack_start:
            # Full-memory dumps keep stacks in the memory lists instead.
            stack = dump.region_for(stack_start)
        context = None
        if context_size and context_rva:
            context = _context(
                reader, context_size, context_rva, dump.system_info, f"{what}'s context"
            )
        threads.append(
            Thread(
                index,
                thread_id,
                suspend,
                priority_class,
                priority,
                teb,
                stack_start,
                stack,
                context,
            )
        )
    return threads


def _modules(reader: _Reader, stream: Stream, system: SystemInfo | None) -> list[Module]:
    count = reader.u32(stream.rva, "the module list's count")
    start = _count_fits(
        count, MODULE.size, _list_start(count, MODULE.size, stream), stream, "module list"
    )
    modules = []
    for index in range(count):
        fields = MODULE.unpack_from(reader.view, stream.rva + start + index * MODULE.size)
        base, size, checksum, stamp, name_rva = fields[:5]
        fixed = fields[5:18]
        cv_size, cv_rva, misc_size, misc_rva = fields[18:22]
        what = f"module {index}"
        name = reader.string(name_rva, f"{what}'s name")
        cv_signature: str | None = None
        debug_file = debug_id = ""
        build_id = b""
        if cv_size and cv_rva:
            if cv_size > MAX_CV_RECORD:
                raise MinidumpError(f"{what}'s CodeView record claims {cv_size} bytes")
            cv = reader.bytes(cv_rva, cv_size, f"{what}'s CodeView record")
            (signature,) = struct.unpack_from("<I", cv) if len(cv) > 4 else (0,)
            # A PDB record whose file name is not NUL-terminated is refused, as Breakpad does.
            if signature in (CV_PDB70, CV_PDB20) and cv[-1:] != b"\0":
                signature = 0
            if signature == CV_PDB70 and len(cv) >= 25:
                cv_signature = "PDB70"
                (age,) = struct.unpack_from("<I", cv, 20)
                debug_id = _guid_debug_id(cv[4:20], age)
                debug_file = _utf8_z(cv[24:])
            elif signature == CV_PDB20 and len(cv) >= 17:
                cv_signature = "PDB20"
                pdb_signature, age = struct.unpack_from("<II", cv, 8)
                debug_id = f"{pdb_signature:08X}{age:X}"
                debug_file = _utf8_z(cv[16:])
            elif signature == CV_ELF:
                cv_signature = "ELF"
                build_id = cv[4:]
                debug_id = _guid_debug_id(build_id[:16].ljust(16, b"\0"), 0)
                debug_file = name
        if not debug_file and misc_size and misc_rva and misc_size <= MAX_CV_RECORD:
            # IMAGE_DEBUG_MISC: an older way to name the debug file.
            misc = reader.bytes(misc_rva, misc_size, f"{what}'s misc debug record")
            if len(misc) >= 12:
                unicode = misc[8]
                data = misc[12:]
                debug_file = (
                    data.decode("utf-16-le", errors="replace")
                    if unicode
                    else data.decode("latin-1")
                ).split("\0")[0]
        code_id = ""
        platform = system.platform_id if system else None
        if platform in (OS_WIN32_NT, OS_WIN32_WINDOWS):
            code_id = f"{stamp:08X}{size:x}"
        elif cv_signature == "ELF" and build_id:
            code_id = build_id.hex()
        modules.append(
            Module(
                index=index,
                base=base,
                size=size,
                checksum=checksum,
                time_date_stamp=stamp,
                code_file=name,
                version=_version(fixed),
                cv_signature=cv_signature,
                debug_file=basename(debug_file),
                debug_id=debug_id,
                code_id=code_id,
                build_id=build_id,
            )
        )
    return modules


def _exception(reader: _Reader, stream: Stream, system: SystemInfo | None) -> ExceptionInfo:
    if stream.size < EXCEPTION_STREAM.size:
        raise MinidumpError(
            f"the exception stream has {stream.size} bytes, fewer than its {EXCEPTION_STREAM.size}"
        )
    fields = reader.unpack(EXCEPTION_STREAM, stream.rva, "the exception stream")
    thread_id, _align, code, flags, record, address, parameter_count, _align2 = fields[:8]
    information = fields[8:23]
    context_size, context_rva = fields[23:25]
    context = None
    if context_size and context_rva:
        context = _context(reader, context_size, context_rva, system, "the exception's context")
    return ExceptionInfo(
        thread_id=thread_id,
        code=code,
        flags=flags,
        record=record,
        address=address,
        parameters=tuple(information[: min(parameter_count, 15)]),
        context=context,
    )


def _misc_info(reader: _Reader, stream: Stream) -> MiscInfo:
    if stream.size < 24:
        raise MinidumpError("it is shorter than MINIDUMP_MISC_INFO")
    size, flags, process_id, create_time = struct.unpack_from("<IIII", reader.view, stream.rva)
    build_string = None
    # MINIDUMP_MISC_INFO_4 and later carry the OS build string (UTF-16, 260 characters).
    build_offset = 24 + 20 + 16 + 172
    if flags & 0x100 and min(size, stream.size) >= build_offset + 520:
        raw = reader.bytes(stream.rva + build_offset, 520, "the build string")
        build_string = raw.decode("utf-16-le", errors="replace").split("\0")[0]
    return MiscInfo(
        flags=flags,
        process_id=process_id if flags & 0x1 else None,
        process_create_time=create_time if flags & 0x2 else None,
        build_string=build_string,
    )
