"""Stack walking: every thread of a minidump, frame by frame, as Breakpad's stack walkers do.

``stackwalk(dump_bytes, cfi_for)`` parses the dump, then walks each thread from its context (the
exception's context for the crashing thread). For each frame it asks, in order: the module's CFI
(``STACK CFI``; ``STACK WIN`` first on 32-bit x86), the frame pointer chain, then stack scanning
for a word that looks like a return address. Each caller frame says how it was found (its
``trust``). ``cfi_for(module)`` supplies a module's ``CfiIndex`` or None; it is asked at most once
per module, and only for modules a walk reaches. Rules and limits follow Breakpad's
stackwalker_amd64.cc, stackwalker_arm64.cc and stackwalker_x86.cc; docs/processing.md describes
them and the few places this walker differs.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from symbolon.processing import minidump as md
from symbolon.processing.cfi import CfiIndex, WinFrameInfo, evaluate_program
from symbolon.processing.crash_reason import crash_reason

__all__ = [
    "CrashInfo",
    "Frame",
    "ModuleInfo",
    "StackwalkResult",
    "ThreadStack",
    "stackwalk",
]

# Trust, as minidump_stackwalk's JSON names it.
CONTEXT = "context"
CFI = "cfi"
CFI_SCAN = "cfi_scan"
FRAME_POINTER = "frame_pointer"
SCAN = "scan"
LEAF = "leaf"  # Windows x64: a return simulated from a leaf function without unwind data

# Breakpad's limits (stackwalker.cc): words searched for a return address, 4 times as many
# below the context frame; scanning stops being tried after this many scanned frames.
RA_SEARCH_WORDS = 40
MAX_SCANNED_FRAMES = 1 << 14
MAX_FRAMES = 10_000
MAX_TOTAL_FRAMES = 200_000
# x86: a saved %ebp further than this above its slot is not believed (stackwalker_x86.cc).
MAX_REASONABLE_GAP = 128 * 1024

CfiFor = Callable[[md.Module], CfiIndex | None]


@dataclass
class Frame:
    index: int
    offset: int  # the frame's address: the pc for the context frame, the return address above
    module_index: int | None
    module_offset: int | None
    trust: str
    registers: dict[str, int]  # the registers known in this frame
    # Where in its module symbols are looked up: inside the call instruction for a caller frame.
    lookup_offset: int | None = None

    def to_json(self, modules: list[ModuleInfo]) -> dict[str, Any]:
        module = modules[self.module_index].filename if self.module_index is not None else None
        return {
            "frame": self.index,
            "module": module,
            "module_offset": f"{self.module_offset:#x}" if self.module_offset is not None else None,
            "offset": f"{self.offset:#x}",
            "trust": self.trust,
        }


@dataclass
class ThreadStack:
    index: int
    thread_id: int
    name: str | None
    frames: list[Frame]
    frames_truncated: bool = False

    def to_json(self, modules: list[ModuleInfo]) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "thread_name": self.name,
            "frame_count": len(self.frames),
            "frames_truncated": self.frames_truncated,
            "frames": [frame.to_json(modules) for frame in self.frames],
        }


@dataclass
class ModuleInfo:
    index: int
    filename: str
    code_file: str
    code_id: str | None
    debug_file: str | None
    debug_id: str | None
    version: str | None
    base: int
    end: int
    loaded_symbols: bool = False  # whether cfi_for gave an index for it
    missing_symbols: bool = False  # set by the caller, who knows where symbols were looked for

    def to_json(self) -> dict[str, Any]:
        return {
            "base_addr": f"{self.base:#x}",
            "end_addr": f"{self.end:#x}",
            "filename": self.filename,
            "code_id": self.code_id,
            "debug_file": self.debug_file,
            "debug_id": self.debug_id,
            "version": self.version,
            "loaded_symbols": self.loaded_symbols,
            "missing_symbols": self.missing_symbols,
        }


@dataclass
class CrashInfo:
    type: str | None
    address: int | None
    crashing_thread: int | None
    assertion: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "address": f"{self.address:#x}" if self.address is not None else None,
            "crashing_thread": self.crashing_thread,
            "assertion": self.assertion,
        }


@dataclass
class StackwalkResult:
    system_info: md.SystemInfo | None
    crash_info: CrashInfo
    threads: list[ThreadStack]
    modules: list[ModuleInfo]
    main_module: int | None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The shape of minidump_stackwalk's ``--json`` output (frames without function, file and
        line, which symbolication adds)."""
        system = self.system_info
        return {
            "status": "OK",
            "system_info": {
                "os": system.os if system else None,
                "os_ver": system.os_version if system else None,
                "cpu_arch": system.cpu_arch if system else None,
                "cpu_info": system.cpu_info if system else None,
                "cpu_count": system.cpu_count if system else None,
            },
            "crash_info": self.crash_info.to_json(),
            "main_module": self.main_module,
            "modules": [module.to_json() for module in self.modules],
            "thread_count": len(self.threads),
            "threads": [thread.to_json(self.modules) for thread in self.threads],
        }


# -- the walk's shared parts ----------------------------------------------------------------------


@dataclass
class _State:
    """One frame during the walk: register values (also stale ones, as Breakpad keeps them in
    its context structures) and which of them are valid."""

    regs: dict[str, int]
    valid: set[str]
    trust: str
    instruction: int = 0  # the address symbols are looked up at
    win_info: WinFrameInfo | None = None


class _Modules:
    """Module lookup by address; of overlapping modules the lower one is cut short (Breakpad's
    kTruncateLower)."""

    def __init__(self, modules: list[md.Module]):
        ranges = sorted(
            (module.base, module.base + module.size, module.index)
            for module in modules
            if module.size and module.base + module.size <= 1 << 64
        )
        kept: list[tuple[int, int, int]] = []
        for base, end, index in ranges:
            if kept and base < kept[-1][1]:
                low_base, _low_end, low_index = kept[-1]
                if base == low_base:
                    continue
                kept[-1] = (low_base, base, low_index)
            kept.append((base, end, index))
        self.ranges = kept
        self.starts = [base for base, _, _ in kept]

    def find(self, address: int) -> int | None:
        position = bisect_right(self.starts, address) - 1
        if position >= 0 and address < self.ranges[position][1]:
            return self.ranges[position][2]
        return None


class _Walker:
    """What every architecture's walk uses: the thread's stack memory, modules, symbols."""

    width = 8
    mask = (1 << 64) - 1
    pc = sp = ""

    def __init__(
        self,
        dump: md.Minidump,
        stack: md.MemoryRegion | None,
        modules: _Modules,
        symbols: Callable[[int], CfiIndex | None],
        module_bases: list[int],
    ):
        self.dump = dump
        self.os_short = dump.system_info.os_short if dump.system_info else ""
        self.stack = stack
        self.stack_bytes = dump.region_bytes(stack) if stack is not None else None
        self.modules = modules
        self.symbols = symbols
        self.module_bases = module_bases

    def read(self, address: int, size: int | None = None) -> int | None:
        """A little-endian word of the thread's stack memory (the only memory Breakpad's walkers
        read), or None."""
        size = size or self.width
        stack = self.stack
        if stack is None or self.stack_bytes is None:
            return None
        if address < stack.start or address - stack.start + size > stack.size:
            return None
        start = address - stack.start
        return int.from_bytes(self.stack_bytes[start : start + size], "little")

    def read_word(self, address: int) -> int | None:
        return self.read(address & self.mask)

    def index_for(self, address: int) -> tuple[CfiIndex | None, int]:
        module = self.modules.find(address)
        if module is None:
            return None, 0
        return self.symbols(module), self.module_bases[module]

    def seems_valid(self, address: int) -> bool:
        """Breakpad's InstructionAddressSeemsValid: in a module, and in a function when the
        module's symbols are known."""
        module = self.modules.find(address)
        if module is None:
            return False
        index = self.symbols(module)
        if index is None:
            return True
        return index.has_function(address - self.module_bases[module])

    def scan(self, start: int, words: int) -> tuple[int, int] | None:
        """The first word at or above ``start`` (``words`` + 1 of them) that looks like a return
        address: (where it is, its value)."""
        width, mask = self.width, self.mask
        if start + words * width > mask:
            return None
        for step in range(words + 1):
            location = start + step * width
            value = self.read(location)
            if value is None:
                return None
            candidate = (value - 1) & mask
            if self.modules.find(candidate) is not None and self.seems_valid(candidate):
                return location, value
        return None

    def scan_for_caller(self, start: int, context_frame: bool) -> tuple[int, int] | None:
        return self.scan(start, RA_SEARCH_WORDS * 4 if context_frame else RA_SEARCH_WORDS)

    def cfi_caller(
        self, last: _State, names: tuple[tuple[str, str | None, bool, str], ...], fill: int
    ) -> _State | None:
        """Breakpad's SimpleCFIWalker: registers the rules recover, by name or as ``.cfa``/``.ra``,
        and callee-saves registers the rules leave alone."""
        index, base = self.index_for(last.instruction)
        if index is None:
            return None
        rules = index.find_cfi((last.instruction - base) & self.mask)
        if rules is None:
            return None
        callee = {cfi: last.regs[reg] for cfi, _alt, _saved, reg in names if reg in last.valid}
        found = rules.caller_registers(callee, self.read_word, self.mask)
        if found is None:
            return None
        regs = {reg: fill for _cfi, _alt, _saved, reg in names}
        valid: set[str] = set()
        for cfi, alternate, callee_saves, reg in names:
            if cfi in found:
                regs[reg] = found[cfi]
            elif alternate is not None and alternate in found:
                regs[reg] = found[alternate]
            elif callee_saves and reg in last.valid:
                regs[reg] = last.regs[reg]
            else:
                continue
            valid.add(reg)
        return _State(regs, valid, CFI)

    def caller(self, frames: list[_State], scan_allowed: bool) -> _State | None:
        raise NotImplementedError

    @staticmethod
    def terminate(caller_ip: int, caller_sp: int, callee_sp: int, first_unwind: bool) -> bool:
        """Breakpad's TerminateWalk: the end of the stack, or a broken invariant."""
        if caller_ip < 1 << 12:
            return True
        return caller_sp < callee_sp if first_unwind else caller_sp <= callee_sp


# -- AMD64 ----------------------------------------------------------------------------------------

AMD64_CFI = (
    ("$rax", None, False, "rax"),
    ("$rdx", None, False, "rdx"),
    ("$rcx", None, False, "rcx"),
    ("$rbx", None, True, "rbx"),
    ("$rsi", None, False, "rsi"),
    ("$rdi", None, False, "rdi"),
    ("$rbp", None, True, "rbp"),
    ("$rsp", ".cfa", False, "rsp"),
    ("$r8", None, False, "r8"),
    ("$r9", None, False, "r9"),
    ("$r10", None, False, "r10"),
    ("$r11", None, False, "r11"),
    ("$r12", None, True, "r12"),
    ("$r13", None, True, "r13"),
    ("$r14", None, True, "r14"),
    ("$r15", None, True, "r15"),
    ("$rip", ".ra", False, "rip"),
)


class _Amd64(_Walker):
    pc = "rip"
    sp = "rsp"

    def caller(self, frames: list[_State], scan_allowed: bool) -> _State | None:
        last = frames[-1]
        new = self.cfi_caller(last, AMD64_CFI, 0xDADADADADADADADA)
        if new is not None and (
            not {"rip", "rsp"} <= new.valid or not new.regs["rip"] or not new.regs["rsp"]
        ):
            new = None
        windows = self.os_short == "windows"
        if new is None and last.trust == CONTEXT and windows:
            new = self.by_leaf_return(last)
        if new is None and not windows:
            new = self.by_frame_pointer(last)
        if new is None and scan_allowed:
            new = self.by_scan(last)
        if new is None:
            return None
        if self.terminate(
            new.regs["rip"], new.regs["rsp"], last.regs["rsp"], last.trust == CONTEXT
        ):
            return None
        new.instruction = (new.regs["rip"] - 1) & self.mask
        return new

    def by_frame_pointer(self, last: _State) -> _State | None:
        rbp = last.regs["rbp"]
        if rbp % 8:
            return None
        caller_rip = self.read(rbp + 8)
        caller_rbp = self.read(rbp)
        if caller_rip is None or caller_rbp is None:
            return None
        caller_rsp = rbp + 16
        # A non-canonical return address means %rbp was not a frame pointer.
        if 0x7FFFFFFFFFFF < caller_rip < 0xFFFF800000000000:
            return None
        if caller_rsp > self.mask or caller_rbp < caller_rsp:
            return None
        if self.read(caller_rbp) is None:
            return None
        regs = dict(last.regs)
        regs.update(rip=caller_rip, rsp=caller_rsp, rbp=caller_rbp)
        return _State(regs, {"rip", "rsp", "rbp"}, FRAME_POINTER)

    def by_leaf_return(self, last: _State) -> _State | None:
        found = self.scan(last.regs["rsp"], 1)
        if found is None:
            return None
        location, rip = found
        regs = dict(last.regs)
        regs.update(rip=rip, rsp=location + 8)
        return _State(regs, set(last.valid), LEAF)

    def by_scan(self, last: _State) -> _State | None:
        found = self.scan_for_caller(last.regs["rsp"], last.trust == CONTEXT)
        if found is None:
            return None
        location, rip = found
        regs = dict(last.regs)
        regs.update(rip=rip, rsp=location + 8)
        valid = {"rip", "rsp"}
        if "rbp" in last.valid:
            rbp = last.regs["rbp"]
            # A callee that pushed %rbp on entry and pointed %rbp at it.
            if location - 8 == rbp:
                saved = self.read(rbp)
                if saved is not None and saved > location:
                    regs["rbp"] = saved
                    valid.add("rbp")
            elif rbp >= location + 8:
                valid.add("rbp")
        return _State(regs, valid, SCAN)


# -- ARM64 ----------------------------------------------------------------------------------------

ARM64_NAMES = md.ARM64_REGISTERS  # x0..x30, sp, pc


class _Arm64(_Walker):
    pc = "pc"
    sp = "sp"

    def __init__(self, *args: Any):
        super().__init__(*args)
        # Pointer authentication codes live in a pointer's high bits: the walk strips them with a
        # mask guessed from the highest module's end (stackwalker_arm64.cc).
        self.address_mask = self.mask
        if self.modules.ranges:
            _base, end, _index = self.modules.ranges[-1]
            mask = end
            for shift in (1, 2, 4, 8, 16, 32):
                mask |= mask >> shift
            self.address_mask = mask

    def strip(self, pointer: int) -> int:
        stripped = pointer & self.address_mask
        return stripped if self.modules.find(stripped) is not None else pointer

    def caller(self, frames: list[_State], scan_allowed: bool) -> _State | None:
        last = frames[-1]
        new = self.by_cfi(last)
        if new is None:
            new = self.by_frame_pointer(frames, last)
        if new is None and scan_allowed:
            new = self.by_scan(last)
        if new is None:
            return None
        if self.terminate(new.regs["pc"], new.regs["sp"], last.regs["sp"], last.trust == CONTEXT):
            return None
        new.instruction = (new.regs["pc"] - 4) & self.mask
        return new

    def by_cfi(self, last: _State) -> _State | None:
        index, base = self.index_for(last.instruction)
        if index is None:
            return None
        rules = index.find_cfi((last.instruction - base) & self.mask)
        if rules is None:
            return None
        callee = {name: last.regs[name] for name in ARM64_NAMES if name in last.valid}
        found = rules.caller_registers(callee, self.read_word, self.mask)
        if found is None:
            return None
        regs = dict.fromkeys(ARM64_NAMES, 0)
        valid: set[str] = set()
        for number, name in enumerate(ARM64_NAMES):
            if name in found:
                regs[name] = found[name]
                valid.add(name)
            elif 19 <= number <= 29 and name in last.valid:
                # Callee-saves registers the rules do not mention keep their values.
                regs[name] = last.regs[name]
                valid.add(name)
        if "pc" not in valid and ".ra" in found:
            regs["pc"] = found[".ra"]
            valid.add("pc")
        if "sp" not in valid and ".cfa" in found:
            regs["sp"] = found[".cfa"]
            valid.add("sp")
        if not {"pc", "sp"} <= valid:
            return None
        regs["pc"] = self.strip(regs["pc"])
        return _State(regs, valid, CFI)

    def correct_lr(self, frames: list[_State], last: _State) -> None:
        """A frame whose link register is unknown may find it through the frame pointer chain,
        when that chain agrees with the CFI (CorrectRegLRByFramePointer)."""
        if len(frames) < 2 or last.regs["x29"] <= last.regs["sp"]:
            return
        last_last_fp = frames[-2].regs["x29"]
        last_fp = 0
        if last_last_fp:
            read = self.read(last_last_fp)
            if read is None:
                return
            last_fp = read
        if last.regs["x29"] != last_fp:
            return
        last_lr = 0
        if last_last_fp:
            read = self.read(last_last_fp + 8)
            if read is None:
                return
            last_lr = read
        last.regs["x30"] = self.strip(last_lr)

    def by_frame_pointer(self, frames: list[_State], last: _State) -> _State | None:
        if "x30" not in last.valid:
            self.correct_lr(frames, last)
        last_fp = last.regs["x29"]
        caller_fp = caller_lr = 0
        if last_fp:
            fp = self.read(last_fp)
            lr = self.read(last_fp + 8)
            if fp is None or lr is None:
                return None
            caller_fp, caller_lr = fp, lr
        caller_lr = self.strip(caller_lr)
        caller_sp = last_fp + 16 if last_fp else last.regs["sp"]
        regs = dict(last.regs)
        regs.update(x29=caller_fp, sp=caller_sp & self.mask, pc=last.regs["x30"], x30=caller_lr)
        return _State(regs, {"pc", "x30", "x29", "sp"}, FRAME_POINTER)

    def by_scan(self, last: _State) -> _State | None:
        found = self.scan_for_caller(last.regs["sp"], last.trust == CONTEXT)
        if found is None:
            return None
        location, pc = found
        regs = dict(last.regs)
        regs.update(pc=pc, sp=location + 8)
        return _State(regs, {"pc", "sp"}, SCAN)


# -- x86 ------------------------------------------------------------------------------------------

X86_CFI = (
    ("$eip", ".ra", False, "eip"),
    ("$esp", ".cfa", False, "esp"),
    ("$ebp", None, True, "ebp"),
    ("$eax", None, False, "eax"),
    ("$ebx", None, True, "ebx"),
    ("$ecx", None, False, "ecx"),
    ("$edx", None, False, "edx"),
    ("$esi", None, True, "esi"),
    ("$edi", None, True, "edi"),
)
X86_ALL = {"eip", "esp", "ebp", "ebx", "esi", "edi", "eax", "ecx", "edx", "eflags"}


class _X86(_Walker):
    width = 4
    mask = 0xFFFFFFFF
    pc = "eip"
    sp = "esp"

    def __init__(self, *args: Any):
        super().__init__(*args)
        # Breakpad refuses stack memory that does not fit in 32 bits.
        if self.stack is not None and self.stack.start + self.stack.size - 1 > 0xFFFFFFFF:
            self.stack = None
            self.stack_bytes = None

    def caller(self, frames: list[_State], scan_allowed: bool) -> _State | None:
        if self.stack is None:
            return None
        last = frames[-1]
        new = None
        index, base = self.index_for(last.instruction)
        if index is not None:
            info = index.find_win((last.instruction - base) & self.mask)
            if info is not None:
                last.win_info = info
                new = self.by_win_info(frames, last, info, scan_allowed)
        if new is None:
            new = self.cfi_caller(last, X86_CFI, 0xDADADADA)
            if new is not None and not {"eip", "esp", "ebp"} <= new.valid:
                new = None
        if new is None:
            new = self.by_ebp(last, scan_allowed)
        if new is None:
            return None
        if self.terminate(
            new.regs["eip"], new.regs["esp"], last.regs["esp"], last.trust == CONTEXT
        ):
            return None
        new.instruction = (new.regs["eip"] - 1) & self.mask
        return new

    def by_win_info(
        self, frames: list[_State], last: _State, info: WinFrameInfo, scan_allowed: bool
    ) -> _State | None:
        """Breakpad's GetCallerByWindowsFrameInfo, for STACK WIN FrameData and FPO records."""
        if not info.valid_all:
            return None
        mask = self.mask
        # The callee's parameter size, from the frames below; as Breakpad's loop runs, the
        # innermost frame that knows it decides.
        callee_parameters = 0
        for frame in frames[-2::-1]:
            if frame.win_info is not None:
                callee_parameters = frame.win_info.parameter_size
        dictionary: dict[str, int] = {
            "$ebp": last.regs["ebp"],
            "$esp": last.regs["esp"],
            ".cbCalleeParams": callee_parameters,
            ".cbSavedRegs": info.saved_register_size,
            ".cbLocals": info.local_size,
            ".cbParams": info.parameter_size,
        }
        if "ebx" in last.valid:
            dictionary["$ebx"] = last.regs["ebx"]
        search_start = (
            last.regs["esp"] + callee_parameters + info.local_size + info.saved_register_size
        ) & mask
        original = search_start
        found = self.scan(search_start, 3)
        if found is not None:
            search_start = found[0]
            if (
                last.trust == CONTEXT
                and info.type == 0
                and original == search_start
                and found[1] == last.regs["eip"]
            ):
                # The context frame's own return address, pushed by a call not yet made.
                search_start = (search_start + 4) & mask
                again = self.scan(search_start, 3)
                if again is not None:
                    search_start = again[0]
        recover_ebp = True
        trust = CFI
        if info.program_string:
            program = info.program_string
        elif info.allocates_base_pointer:
            program = (
                "$eip .raSearchStart ^ = "
                "$ebp $esp .cbCalleeParams + .cbSavedRegs + 8 - ^ = "
                "$esp .raSearchStart 4 + ="
            )
        else:
            program = "$eip .raSearchStart ^ = $esp .raSearchStart 4 + ="
            if "ebx" in last.valid:
                program += " $ebx $ebx ="
            recover_ebp = False
        if "ebp" in last.valid and "@" in program:
            search_start = (last.regs["ebp"] + 4) & mask
        dictionary[".raSearchStart"] = search_start
        dictionary[".raSearch"] = search_start
        ok, assigned = evaluate_program(program, dictionary, self.read_word, mask)
        if not ok or "$eip" not in assigned or "$esp" not in assigned:
            if not scan_allowed:
                return None
            found = self.scan_for_caller(last.regs["esp"], last.trust == CONTEXT)
            if found is None:
                return None
            dictionary["$eip"] = found[1]
            dictionary["$esp"] = (found[0] + 4) & mask
            trust = SCAN
        eip = dictionary.get("$eip", 0)
        if eip or dictionary.get("$ebp", 0):
            offset = 0
            if self.modules.find(eip) is None:
                location_start = (dictionary[".raSearchStart"] + 4) & mask
                found = (
                    self.scan_for_caller(location_start, last.trust == CONTEXT)
                    if scan_allowed
                    else None
                )
                if found is not None:
                    dictionary["$eip"] = found[1]
                    dictionary["$esp"] = (found[0] + 4) & mask
                    offset = found[0] - location_start
                    trust = CFI_SCAN
            if recover_ebp:
                ebp = dictionary.get("$ebp", 0)
                skipped = trust != CFI and ebp <= search_start + offset
                if skipped or self.read(ebp) is None:
                    # Look for a saved %ebp that points at readable stack.
                    search_bytes = info.saved_register_size + offset
                    location_end = (last.regs["esp"] + callee_parameters) & mask
                    location = location_end + search_bytes
                    while location >= location_end:
                        candidate = self.read(location & mask)
                        if candidate is None:
                            break
                        if self.read(candidate) is not None:
                            dictionary["$ebp"] = candidate
                            break
                        location -= 4
        regs = dict(last.regs)
        regs.update(
            eip=dictionary.get("$eip", 0),
            esp=dictionary.get("$esp", 0),
            ebp=dictionary.get("$ebp", 0),
        )
        valid = {"eip", "esp", "ebp"}
        for name in ("ebx", "esi", "edi"):
            if f"${name}" in assigned:
                regs[name] = dictionary[f"${name}"]
                valid.add(name)
        return _State(regs, valid, trust)

    def by_ebp(self, last: _State, scan_allowed: bool) -> _State | None:
        """Breakpad's GetCallerByEBPAtBase: the %ebp chain, else scanning."""
        mask = self.mask
        ebp, esp = last.regs["ebp"], last.regs["esp"]
        caller_eip = self.read((ebp + 4) & mask)
        caller_ebp = self.read(ebp)
        if caller_eip is not None and caller_ebp is not None:
            caller_esp = (ebp + 8) & mask
            trust = FRAME_POINTER
        else:
            if not scan_allowed:
                return None
            found = self.scan_for_caller(esp, last.trust == CONTEXT)
            if found is None:
                return None
            caller_esp = (found[0] + 4) & mask
            caller_eip = found[1]
            chain = (caller_esp - 8) & mask
            saved = self.read(chain)
            if saved is None or saved <= chain or saved - chain > MAX_REASONABLE_GAP:
                saved = ebp
            caller_ebp = saved
            trust = SCAN
        regs = dict(last.regs)
        regs.update(eip=caller_eip, esp=caller_esp, ebp=caller_ebp)
        return _State(regs, {"eip", "esp", "ebp"}, trust)


ARCH_WALKERS: dict[str, type[_Walker]] = {"amd64": _Amd64, "arm64": _Arm64, "x86": _X86}
ALL_VALID = {
    "amd64": set(md.AMD64_REGISTERS),
    "arm64": set(md.ARM64_REGISTERS),
    "x86": X86_ALL,
}


# -- the whole dump -------------------------------------------------------------------------------


def stackwalk(
    dump_bytes: Any,
    cfi_for: CfiFor,
    *,
    max_frames: int = MAX_FRAMES,
    max_total_frames: int = MAX_TOTAL_FRAMES,
) -> StackwalkResult:
    """Walk every thread of a minidump. Raises ``MinidumpError`` for a dump that cannot be read
    (and nothing else for any dump); ``cfi_for`` is the caller's and may raise what it likes."""
    dump = md.Minidump.parse(dump_bytes)
    try:
        return walk_dump(dump, cfi_for, max_frames=max_frames, max_total_frames=max_total_frames)
    finally:
        dump.close()


def walk_dump(
    dump: md.Minidump,
    cfi_for: CfiFor,
    *,
    max_frames: int = MAX_FRAMES,
    max_total_frames: int = MAX_TOTAL_FRAMES,
) -> StackwalkResult:
    if not any(stream.stream_type == md.THREAD_LIST for stream in dump.streams):
        raise md.MinidumpError("the dump has no thread list, so there is no stack to walk")
    modules = _Modules(dump.modules)
    module_bases = [module.base for module in dump.modules]
    infos = [
        ModuleInfo(
            index=module.index,
            filename=module.filename,
            code_file=module.code_file,
            code_id=module.code_id or None,
            debug_file=module.debug_file or None,
            debug_id=module.debug_id or None,
            version=module.version or None,
            base=module.base,
            end=module.base + module.size,
        )
        for module in dump.modules
    ]
    loaded: dict[int, CfiIndex | None] = {}

    def symbols(index: int) -> CfiIndex | None:
        if index not in loaded:
            found = cfi_for(dump.modules[index])
            loaded[index] = found
            infos[index].loaded_symbols = found is not None
        return loaded[index]

    exception = dump.exception
    requesting = exception.thread_id if exception is not None else dump.requesting_thread_id
    threads: list[ThreadStack] = []
    crashing_index: int | None = None
    budget = max_total_frames
    for thread in dump.threads:
        if dump.dump_thread_id is not None and thread.thread_id == dump.dump_thread_id:
            continue  # the thread that wrote the dump
        context = thread.context
        if requesting is not None and thread.thread_id == requesting:
            if crashing_index is not None:
                raise md.MinidumpError(f"two threads have the crashing thread's id {requesting:#x}")
            crashing_index = len(threads)
            if exception is not None and exception.context is not None:
                context = exception.context
        frames, truncated = _walk_thread(
            dump, thread, context, modules, symbols, module_bases, min(max_frames, budget)
        )
        budget = max(budget - len(frames), 1)
        stack = ThreadStack(len(threads), thread.thread_id, thread.name, frames, truncated)
        threads.append(stack)

    reason = crash_reason(dump)
    crash = CrashInfo(
        type=reason[0] if reason else None,
        address=reason[1] if reason else None,
        crashing_thread=crashing_index,
        assertion=dump.assertion,
    )
    return StackwalkResult(
        system_info=dump.system_info,
        crash_info=crash,
        threads=threads,
        modules=infos,
        main_module=0 if infos else None,
        warnings=list(dump.warnings),
    )


def _walk_thread(
    dump: md.Minidump,
    thread: md.Thread,
    context: md.Context | None,
    modules: _Modules,
    symbols: Callable[[int], CfiIndex | None],
    module_bases: list[int],
    limit: int,
) -> tuple[list[Frame], bool]:
    if context is None or context.arch not in ARCH_WALKERS:
        return [], False
    walker = ARCH_WALKERS[context.arch](dump, thread.stack, modules, symbols, module_bases)
    regs = dict(context.registers)
    first = _State(regs, set(ALL_VALID[context.arch]), CONTEXT, instruction=regs[walker.pc])
    if context.arch == "arm64":
        assert isinstance(walker, _Arm64)
        regs["x30"] = walker.strip(regs["x30"])
    states = [first]
    scanned = 0
    truncated = False
    # Without stack memory there is no caller to find (Breakpad walks no further either).
    while walker.stack is not None:
        last = states[-1]
        if last.trust in (SCAN, CFI_SCAN):
            scanned += 1
        caller = walker.caller(states, scanned < MAX_SCANNED_FRAMES)
        if caller is None:
            break
        if (caller.regs[walker.pc], caller.regs[walker.sp]) == (
            last.regs[walker.pc],
            last.regs[walker.sp],
        ):
            break  # the same frame again: a loop
        if len(states) >= limit:
            truncated = True
            break
        states.append(caller)
    if walker.stack_bytes is not None:
        walker.stack_bytes.release()
    frames = []
    for number, state in enumerate(states):
        module = modules.find(state.instruction)
        offset = state.regs[walker.pc]
        frames.append(
            Frame(
                index=number,
                offset=offset,
                module_index=module,
                module_offset=(offset - module_bases[module]) & walker.mask
                if module is not None
                else None,
                trust=state.trust,
                registers={name: state.regs[name] for name in sorted(state.valid)},
                lookup_offset=(state.instruction - module_bases[module]) & walker.mask
                if module is not None
                else None,
            )
        )
    return frames, truncated
