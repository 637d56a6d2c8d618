"""Minidumps written byte by byte, for what a crashing program here cannot give: other
architectures and systems (ARM64, 32-bit x86 Windows), and stacks laid out on purpose."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from symbolon.processing import minidump as md

ARCH = {"amd64": md.ARCH_AMD64, "x86": md.ARCH_X86, "arm64": md.ARCH_ARM64}
PLATFORM = {"linux": md.OS_LINUX, "windows": md.OS_WIN32_NT, "mac": md.OS_MAC}


def context(arch: str, registers: dict[str, int]) -> bytes:
    """A CPU context as Crashpad and Windows write it."""
    if arch == "amd64":
        data = bytearray(md.AMD64_CONTEXT_SIZE)
        struct.pack_into("<I", data, 0x30, md.CONTEXT_AMD64 | 0xF)
        values = [registers.get(name, 0) for name in md.AMD64_REGISTERS]
        struct.pack_into("<17Q", data, 0x78, *values)
        return bytes(data)
    if arch == "x86":
        data = bytearray(md.X86_CONTEXT_SIZE)
        struct.pack_into("<I", data, 0, md.CONTEXT_X86 | 0x7)
        values = [registers.get(name, 0) for name in md.X86_REGISTERS]
        struct.pack_into("<11I", data, 156, *values)
        return bytes(data)
    if arch == "arm64":
        data = bytearray(md.ARM64_CONTEXT_SIZE)
        struct.pack_into("<I", data, 0, md.CONTEXT_ARM64 | 0x7)
        values = [registers.get(name, 0) for name in md.ARM64_REGISTERS]
        struct.pack_into("<33Q", data, 8, *values)
        return bytes(data)
    raise ValueError(arch)


def cv_elf(build_id: bytes) -> bytes:
    return struct.pack("<I", md.CV_ELF) + build_id


def cv_pdb70(guid: uuid.UUID, age: int, pdb: str) -> bytes:
    record = struct.pack("<I", md.CV_PDB70) + guid.bytes_le + struct.pack("<I", age)
    return record + pdb.encode() + b"\0"


@dataclass
class SynthModule:
    base: int
    size: int
    name: str
    cv: bytes = b""
    stamp: int = 0


@dataclass
class SynthThread:
    thread_id: int
    stack_start: int
    stack: bytes
    registers: dict[str, int]


@dataclass
class Synth:
    arch: str = "amd64"
    platform: str = "linux"
    csd: str = "Linux 6.1.0 #1 SMP x86_64"
    cpus: int = 4
    modules: list[SynthModule] = field(default_factory=list)
    threads: list[SynthThread] = field(default_factory=list)
    # (thread id, code, flags, address, parameters, registers); registers None: no context
    exception: tuple[int, int, int, int, tuple[int, ...], dict[str, int] | None] | None = None
    extra_streams: list[tuple[int, bytes]] = field(default_factory=list)

    def build(self) -> bytes:
        out = bytearray(32)
        directory: list[tuple[int, int, int]] = []

        def blob(data: bytes) -> int:
            while len(out) % 8:
                out.append(0)
            rva = len(out)
            out.extend(data)
            return rva

        def string(text: str) -> int:
            raw = text.encode("utf-16-le")
            return blob(struct.pack("<I", len(raw)) + raw + b"\0\0")

        def stream(kind: int, body: bytes) -> None:
            directory.append((kind, len(body), blob(body)))

        csd = string(self.csd)
        system = struct.pack(
            "<HHHBBIIIIIHH24s",
            ARCH[self.arch],
            6,
            0x1101,
            self.cpus,
            1,
            6,
            1,
            7601,
            PLATFORM[self.platform],
            csd,
            0,
            0,
            b"GenuineIntel" if self.arch == "x86" else b"",
        )
        stream(md.SYSTEM_INFO, system)

        entries = []
        for module in self.modules:
            name = string(module.name)
            cv = blob(module.cv) if module.cv else 0
            fixed = [md.VS_FIXEDFILEINFO_SIGNATURE, 0x10000, 0x10002, 0x30004] + [0] * 9
            entries.append(
                struct.pack(
                    "<QIIII13III II QQ",
                    module.base,
                    module.size,
                    0,
                    module.stamp,
                    name,
                    *fixed,
                    len(module.cv),
                    cv,
                    0,
                    0,
                    0,
                    0,
                )
            )
        stream(md.MODULE_LIST, struct.pack("<I", len(entries)) + b"".join(entries))

        thread_entries = []
        memory_entries = []
        for thread in self.threads:
            stack = blob(thread.stack)
            ctx = context(self.arch, thread.registers)
            ctx_rva = blob(ctx)
            thread_entries.append(
                struct.pack(
                    "<IIIIQQIIII",
                    thread.thread_id,
                    0,
                    0,
                    0,
                    0,
                    thread.stack_start,
                    len(thread.stack),
                    stack,
                    len(ctx),
                    ctx_rva,
                )
            )
            memory_entries.append(struct.pack("<QII", thread.stack_start, len(thread.stack), stack))
        stream(md.THREAD_LIST, struct.pack("<I", len(thread_entries)) + b"".join(thread_entries))
        stream(md.MEMORY_LIST, struct.pack("<I", len(memory_entries)) + b"".join(memory_entries))

        if self.exception is not None:
            thread_id, code, flags, address, parameters, registers = self.exception
            ctx_size = ctx_rva = 0
            if registers is not None:
                ctx = context(self.arch, registers)
                ctx_size, ctx_rva = len(ctx), blob(ctx)
            params = list(parameters) + [0] * (15 - len(parameters))
            body = struct.pack(
                "<IIIIQQII15QII",
                thread_id,
                0,
                code,
                flags,
                0,
                address,
                len(parameters),
                0,
                *params,
                ctx_size,
                ctx_rva,
            )
            stream(md.EXCEPTION, body)
        for kind, body in self.extra_streams:
            stream(kind, body)

        directory_rva = blob(b"".join(struct.pack("<III", *entry) for entry in directory))
        struct.pack_into("<IIIIIIQ", out, 0, md.SIGNATURE, md.VERSION, len(directory),
                         directory_rva, 0, 0x5F000000, 0)  # fmt: skip
        return bytes(out)
