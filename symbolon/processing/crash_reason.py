"""The crash reason and address as Breakpad words them (minidump_processor.cc, GetCrashReason):
``SIGSEGV /SEGV_MAPERR`` (sic, no space after the slash), ``EXCEPTION_ACCESS_VIOLATION_READ``,
``EXC_BAD_ACCESS / KERN_INVALID_ADDRESS``, and ``0x%08x / 0x%08x`` for codes it does not name."""

from __future__ import annotations

from symbolon.processing import minidump as md

LINUX_SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
    7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
    13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT",
    19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU",
    25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR",
    31: "SIGSYS", 0xFFFFFFFF: "DUMP_REQUESTED",
}  # fmt: skip
LINUX_CODES = {
    4: ["ILL_ILLOPC", "ILL_ILLOPN", "ILL_ILLADR", "ILL_ILLTRP", "ILL_PRVOPC", "ILL_PRVREG",
        "ILL_COPROC", "ILL_BADSTK"],
    7: ["BUS_ADRALN", "BUS_ADRERR", "BUS_OBJERR", "BUS_MCEERR_AR", "BUS_MCEERR_AO"],
    8: ["FPE_INTDIV", "FPE_INTOVF", "FPE_FLTDIV", "FPE_FLTOVF", "FPE_FLTUND", "FPE_FLTRES",
        "FPE_FLTINV", "FPE_FLTSUB"],
    11: ["SEGV_MAPERR", "SEGV_ACCERR", "SEGV_BNDERR", "SEGV_PKUERR"],
}  # fmt: skip

WINDOWS_CODES = {
    0x40010005: "DBG_CONTROL_C",
    0x80000001: "EXCEPTION_GUARD_PAGE",
    0x80000002: "EXCEPTION_DATATYPE_MISALIGNMENT",
    0x80000003: "EXCEPTION_BREAKPOINT",
    0x80000004: "EXCEPTION_SINGLE_STEP",
    0xC0000008: "EXCEPTION_INVALID_HANDLE",
    0xC000001D: "EXCEPTION_ILLEGAL_INSTRUCTION",
    0xC0000025: "EXCEPTION_NONCONTINUABLE_EXCEPTION",
    0xC0000026: "EXCEPTION_INVALID_DISPOSITION",
    0xC000008C: "EXCEPTION_BOUNDS_EXCEEDED",
    0xC000008D: "EXCEPTION_FLT_DENORMAL_OPERAND",
    0xC000008E: "EXCEPTION_FLT_DIVIDE_BY_ZERO",
    0xC000008F: "EXCEPTION_FLT_INEXACT_RESULT",
    0xC0000090: "EXCEPTION_FLT_INVALID_OPERATION",
    0xC0000091: "EXCEPTION_FLT_OVERFLOW",
    0xC0000092: "EXCEPTION_FLT_STACK_CHECK",
    0xC0000093: "EXCEPTION_FLT_UNDERFLOW",
    0xC0000094: "EXCEPTION_INT_DIVIDE_BY_ZERO",
    0xC0000095: "EXCEPTION_INT_OVERFLOW",
    0xC0000096: "EXCEPTION_PRIV_INSTRUCTION",
    0xC00000FD: "EXCEPTION_STACK_OVERFLOW",
    0xC00000FF: "EXCEPTION_BAD_FUNCTION_TABLE",
    0xC0000194: "EXCEPTION_POSSIBLE_DEADLOCK",
    0xC0000374: "EXCEPTION_HEAP_CORRUPTION",
    0xE0000008: "Out of Memory",
    0xE06D7363: "Unhandled C++ Exception",
    0x0517A7ED: "Simulated Exception",
}
WINDOWS_ACCESS_VIOLATION = 0xC0000005
WINDOWS_IN_PAGE_ERROR = 0xC0000006
WINDOWS_STACK_BUFFER_OVERRUN = 0xC0000409
ACCESS_KINDS = {0: "_READ", 1: "_WRITE", 8: "_EXEC"}
# __fastfail codes Breakpad names (FAST_FAIL_*); 0 and unknown ones stay a stack buffer overrun.
FAST_FAIL = (
    None, "VTGUARD_CHECK_FAILURE", "STACK_COOKIE_CHECK_FAILURE", "CORRUPT_LIST_ENTRY",
    "INCORRECT_STACK", "INVALID_ARG", "GS_COOKIE_INIT", "FATAL_APP_EXIT", "RANGE_CHECK_FAILURE",
    "UNSAFE_REGISTRY_ACCESS", "GUARD_ICALL_CHECK_FAILURE", "GUARD_WRITE_CHECK_FAILURE",
    "INVALID_FIBER_SWITCH", "INVALID_SET_OF_CONTEXT", "INVALID_REFERENCE_COUNT", None, None,
    None, "INVALID_JUMP_BUFFER", "MRDATA_MODIFIED", "CERTIFICATION_FAILURE",
    "INVALID_EXCEPTION_CHAIN", "CRYPTO_LIBRARY", "INVALID_CALL_IN_DLL_CALLOUT",
    "INVALID_IMAGE_BASE", "DLOAD_PROTECTION_FAILURE", "UNSAFE_EXTENSION_CALL",
    "DEPRECATED_SERVICE_INVOKED", "INVALID_BUFFER_ACCESS", "INVALID_BALANCED_TREE",
    "INVALID_NEXT_THREAD", "GUARD_ICALL_CHECK_SUPPRESSED", "APCS_DISABLED", "INVALID_IDLE_STATE",
    "MRDATA_PROTECTION_FAILURE", "UNEXPECTED_HEAP_EXCEPTION", "INVALID_LOCK_STATE",
    "GUARD_JUMPTABLE", "INVALID_LONGJUMP_TARGET", "INVALID_DISPATCH_CONTEXT", "INVALID_THREAD",
    "INVALID_SYSCALL_NUMBER", "INVALID_FILE_OPERATION", "LPAC_ACCESS_DENIED", "GUARD_SS_FAILURE",
    "LOADER_CONTINUITY_FAILURE", "GUARD_EXPORT_SUPPRESSION_FAILURE", "INVALID_CONTROL_STACK",
    "SET_CONTEXT_DENIED", "INVALID_IAT", "HEAP_METADATA_CORRUPTION",
    "PAYLOAD_RESTRICTION_VIOLATION", "LOW_LABEL_ACCESS_DENIED", "ENCLAVE_CALL_FAILURE",
    "UNHANDLED_LSS_EXCEPTON", "ADMINLESS_ACCESS_DENIED", "UNEXPECTED_CALL",
    "CONTROL_INVALID_RETURN_ADDRESS", "UNEXPECTED_HOST_BEHAVIOR", "FLAGS_CORRUPTION",
    "VEH_CORRUPTION", "ETW_CORRUPTION", "RIO_ABORT", "INVALID_PFN",
    "GUARD_ICALL_CHECK_FAILURE_XFG", "CAST_GUARD", "HOST_VISIBILITY_CHANGE",
    "KERNEL_CET_SHADOW_STACK_ASSIST", "PATCH_CALLBACK_FAILED", "NTDLL_PATCH_FAILED",
    "INVALID_FLS_DATA",
)  # fmt: skip

MAC_BAD_ACCESS = {
    1: "KERN_INVALID_ADDRESS",
    2: "KERN_PROTECTION_FAILURE",
    8: "KERN_NO_ACCESS",
    9: "KERN_MEMORY_FAILURE",
    10: "KERN_MEMORY_ERROR",
    50: "KERN_CODESIGN_ERROR",
}
MAC_X86_BAD_INSTRUCTION = {
    1: "EXC_I386_INVOP",
    10: "EXC_I386_INVTSSFLT",
    11: "EXC_I386_SEGNPFLT",
    12: "EXC_I386_STKFLT",
    13: "EXC_I386_GPFLT",
    17: "EXC_I386_ALIGNFLT",
}
MAC_X86_ARITHMETIC = {
    1: "EXC_I386_DIV",
    2: "EXC_I386_INTO",
    3: "EXC_I386_NOEXT",
    4: "EXC_I386_EXTOVR",
    5: "EXC_I386_EXTERR",
    6: "EXC_I386_EMERR",
    7: "EXC_I386_BOUND",
    8: "EXC_I386_SSEEXTERR",
}
MAC_SOFTWARE = {
    0x00010002: "SIGABRT",
    0xDEADC0DE: "UNCAUGHT_NS_EXCEPTION",
    0x00000001: "EXC_PPC_TRAP",
    0x00010100: "EXC_PPC_MIGRATE",
}
MAC_PLAIN = {
    4: "EXC_EMULATION",
    7: "EXC_SYSCALL",
    8: "EXC_MACH_SYSCALL",
    9: "EXC_RPC_ALERT",
    11: "EXC_RESOURCE",
    12: "EXC_GUARD",
}


def crash_reason(dump: md.Minidump) -> tuple[str, int] | None:
    """(reason, address) for a dump with an exception stream, else None."""
    exception = dump.exception
    if exception is None:
        return None
    code, flags = exception.code, exception.flags
    address = exception.address
    flags_text = f"0x{flags:08x}"
    reason = f"0x{code:08x} / {flags_text}"
    system = dump.system_info
    if system is None:
        return reason, address
    platform, arch = system.platform_id, system.processor_architecture
    params = exception.parameters
    if platform in (md.OS_LINUX, md.OS_ANDROID):
        name = LINUX_SIGNALS.get(code)
        if name is not None:
            reason = name
            if code in LINUX_CODES:
                names = LINUX_CODES[code]
                detail = names[flags - 1] if 1 <= flags <= len(names) else flags_text
                # Breakpad writes "SIGSEGV /" and the others with a space after the slash.
                reason = f"{name} /{detail}" if code == 11 else f"{name} / {detail}"
    elif platform in (md.OS_WIN32_NT, md.OS_WIN32_WINDOWS):
        if code in WINDOWS_CODES:
            reason = WINDOWS_CODES[code]
        elif code in (WINDOWS_ACCESS_VIOLATION, WINDOWS_IN_PAGE_ERROR):
            base = (
                "EXCEPTION_ACCESS_VIOLATION"
                if code == WINDOWS_ACCESS_VIOLATION
                else "EXCEPTION_IN_PAGE_ERROR"
            )
            reason = base + (ACCESS_KINDS.get(params[0], "") if params else "")
            if len(params) >= 2:
                address = params[1]
            if code == WINDOWS_IN_PAGE_ERROR and len(params) >= 3:
                reason += f" / 0x{params[2] & 0xFFFFFFFF:08x}"
        elif code == WINDOWS_STACK_BUFFER_OVERRUN:
            name = None
            if params and params[0] < len(FAST_FAIL):
                name = FAST_FAIL[params[0]]
            reason = f"FAST_FAIL_{name}" if name else "EXCEPTION_STACK_BUFFER_OVERRUN"
    elif platform in (md.OS_MAC, md.OS_IOS):
        reason = _mac_reason(code, flags, arch, flags_text) or reason
    if arch in md.ARCHS_32:
        address &= 0xFFFFFFFF
    return reason, address


def _mac_reason(code: int, flags: int, arch: int, flags_text: str) -> str | None:
    x86 = arch in (md.ARCH_X86, md.ARCH_AMD64)
    arm = arch in (md.ARCH_ARM, md.ARCH_ARM64_OLD)
    if code == 1:
        detail = MAC_BAD_ACCESS.get(flags)
        if detail is None:
            if arm:
                detail = {0x101: "EXC_ARM_DA_ALIGN", 0x102: "EXC_ARM_DA_DEBUG"}.get(flags)
            elif arch == md.ARCH_PPC:
                detail = {0x101: "EXC_PPC_VM_PROT_READ", 0x102: "EXC_PPC_BADSPACE",
                          0x103: "EXC_PPC_UNALIGNED"}.get(flags)  # fmt: skip
            elif x86 and flags == 13:
                detail = "EXC_I386_GPFLT"
        return f"EXC_BAD_ACCESS / {detail or flags_text}"
    if code == 2:
        detail = None
        if arm and flags == 1:
            detail = "EXC_ARM_UNDEFINED"
        elif x86:
            detail = MAC_X86_BAD_INSTRUCTION.get(flags)
        return f"EXC_BAD_INSTRUCTION / {detail or flags_text}"
    if code == 3:
        detail = MAC_X86_ARITHMETIC.get(flags) if x86 else None
        return f"EXC_ARITHMETIC / {detail or flags_text}"
    if code == 5:
        return f"EXC_SOFTWARE / {MAC_SOFTWARE.get(flags, flags_text)}"
    if code == 6:
        detail = None
        if arm:
            detail = {0x101: "EXC_ARM_DA_ALIGN", 0x102: "EXC_ARM_DA_DEBUG",
                      1: "EXC_ARM_BREAKPOINT"}.get(flags)  # fmt: skip
        elif x86:
            detail = {1: "EXC_I386_SGL", 2: "EXC_I386_BPT"}.get(flags)
        return f"EXC_BREAKPOINT / {detail or flags_text}"
    if code in MAC_PLAIN:
        return f"{MAC_PLAIN[code]} / {flags_text}"
    if code == 0x43507378:
        return "Simulated Exception"
    if code == 0x43506E78:
        return "Uncaught NSException"
    return None
