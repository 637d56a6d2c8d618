"""Crash signatures: the crashing thread's top frames, normalised and joined (docs/processing.md,
"Signatures").

As Socorro's signature generation does it for C and C++: each frame becomes a short text
(function without its parameters and with templates collapsed, else ``file#line``, else
``module@0xoffset``, else ``@0xaddress``); frames matching the *irrelevant* expression are left
out; a frame matching the *prefix* expression is kept and the next one joined after it with
`` | ``, so an allocator, ``abort`` or ``memcpy`` on top is followed by the code that called it.
An expression matches a frame when it matches the frame's whole text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SEPARATOR = " | "
# Frames examined for a signature: past these, the top of the stack was all prefixes.
MAX_EXAMINED = 40
# Longer signatures are cut, as Socorro cuts them: they are grouped and indexed by.
MAX_LENGTH = 255
NO_THREAD = "EMPTY: no crashing thread identified"
NO_FRAMES = "EMPTY: no frame data available"

# Frames that say nothing about the crash: the signal machinery, exception dispatch, and
# addresses outside every module.
DEFAULT_IRRELEVANT = (
    r"@0x[0-9a-fA-F]+",
    r"__GI_raise",
    r"raise",
    r"gsignal",
    r"pthread_kill",
    r"__pthread_kill",
    r"__pthread_kill_implementation",
    r"__pthread_kill_internal",
    r"__restore_rt",
    r"__kernel_rt_sigreturn",
    r"_sigtramp",
    r"linux-gate\.so@0x[0-9a-fA-F]+",
    r"linux-vdso\.so\.1@0x[0-9a-fA-F]+",
    r"KiFastSystemCallRet",
    r"KiUserExceptionDispatcher",
    r"RtlRaiseException",
    r"RaiseException",
    r"_CxxThrowException",
    r"NtRaiseException",
    r"ZwRaiseException",
    r"__cxa_throw",
    r"__cxa_rethrow",
    r"_Unwind_.*",
)

# Frames where a crash is seldom the frame's own fault: the caller is named after them.
DEFAULT_PREFIX = (
    r"@0x0",
    r"(__GI_|__libc_)?abort",
    r"__assert_fail(_base)?",
    r"__assert_rtn",
    r"_w?assert",
    r"__malloc_assert",
    r"malloc_printerr",
    r"__libc_message",
    r"__fortify_fail(_abort)?",
    r"__chk_fail",
    r"__\w+_chk",
    r"__stack_chk_fail",
    r"std::terminate",
    r"std::__terminate",
    r"std::__throw_\w+",
    r"__gnu_cxx::__verbose_terminate_handler",
    r"__cxxabiv1::\w+",
    r"(__libc_|_int_)?(malloc|calloc|realloc|free)",
    r"cfree",
    r"posix_memalign",
    r"aligned_alloc",
    r"operator new(\[\])?",
    r"operator delete(\[\])?",
    r"(__)?(mem|wmem)(cpy|move|set|cmp|chr)(_\w+)?",
    r"(__)?(str|wcs)(len|nlen|cmp|ncmp|cpy|ncpy|cat|ncat|chr|rchr|str|dup)(_\w+)?",
    r"pthread_mutex_(lock|unlock)",
    r"pthread_cond_(wait|timedwait|signal|broadcast)",
    r"_purecall",
    r"__report_gsfailure",
    r"_invalid_parameter(_noinfo)?(_noreturn)?",
    r"RtlFreeHeap",
    r"RtlAllocateHeap",
    r"HeapFree",
    r"HeapAlloc",
    r"objc_msgSend",
    r"objc_release",
    r"objc_retain",
    r"objc_exception_throw",
)


def joined(patterns: Iterable[str]) -> str:
    """One expression matching any of ``patterns``."""
    return "|".join(f"(?:{pattern})" for pattern in patterns)


@dataclass(frozen=True)
class SignatureRules:
    prefix: re.Pattern[str]
    irrelevant: re.Pattern[str]
    max_frames: int

    @classmethod
    def make(
        cls, prefix: str | None = None, irrelevant: str | None = None, max_frames: int = 10
    ) -> SignatureRules:
        """Rules from the settings' expressions; None: the built-in lists."""
        return cls(
            prefix=re.compile(joined(DEFAULT_PREFIX) if prefix is None else prefix),
            irrelevant=re.compile(joined(DEFAULT_IRRELEVANT) if irrelevant is None else irrelevant),
            max_frames=max_frames,
        )


# Function names longer than this are cut before they are normalised.
MAX_FUNCTION = 1024


def collapse(text: str, opening: str, closing: str, replacement: str) -> str:
    """Every outermost ``opening``…``closing`` group replaced by ``replacement``, except
    ``(anonymous namespace)`` and the parentheses naming ``operator()``. Unbalanced text is
    returned as it is."""
    out: list[str] = []
    # The last characters written, and those before any trailing whitespace: enough to tell
    # "operator" ahead of a group without joining everything written for each group.
    tail = ""
    kept = ""
    depth = 0
    start = 0

    def write(piece: str) -> None:
        nonlocal tail, kept
        if not piece:
            return
        out.append(piece)
        joined = tail + piece
        if piece.strip():
            kept = joined.rstrip()[-len("operator") :]
        tail = joined[-2 * len("operator") :]

    for index, char in enumerate(text):
        if char == opening:
            if depth == 0:
                start = index
            depth += 1
        elif char == closing and depth:
            depth -= 1
            if depth == 0:
                group = text[start : index + 1]
                if group == "(anonymous namespace)" or (group == "()" and kept == "operator"):
                    write(group)
                else:
                    write(replacement)
        elif depth == 0:
            write(char)
    if depth:
        return text
    return "".join(out)


def normalize_function(function: str) -> str:
    """A C++ function as signatures name it: no parameters or trailing qualifiers, templates as
    ``<T>``, commas without spaces."""
    name = function.strip()
    # "operator<" and "operator<<" are names, not template brackets.
    for operator in ("operator<<=", "operator<<", "operator<=", "operator<"):
        name = name.replace(operator, operator.replace("<", "\x00"))
    for operator in ("operator>>=", "operator>>", "operator>=", "operator->", "operator>"):
        name = name.replace(operator, operator.replace(">", "\x01"))
    name = collapse(name, "(", ")", "")
    name = collapse(name, "<", ">", "<T>")
    name = name.replace("\x00", "<").replace("\x01", ">")
    for qualifier in (" const", " volatile", " &&", " &", " noexcept"):
        name = name.removesuffix(qualifier)
    return re.sub(r"\s+", " ", name.replace(", ", ",")).strip()


def frame_signature(frame: Mapping[str, Any]) -> str:
    function = frame.get("function")
    if function:
        # Cut first: a symbol file's (or a dump's) huge names cost no more than this.
        name = normalize_function(str(function)[:MAX_FUNCTION])
        if name:
            return name
        # A name that normalises to nothing (all parameters, say): as a frame without one.
    file, line = frame.get("file"), frame.get("line")
    if file and line:
        return f"{str(file).replace(chr(92), '/').rsplit('/', 1)[-1]}#{line}"
    module = frame.get("module")
    if module:
        return f"{module}@{frame.get('module_offset') or '0x0'}"
    return f"@{frame.get('offset') or '0x0'}"


def signature_of(frames: Iterable[Mapping[str, Any]], rules: SignatureRules) -> str:
    """The signature of a crashing thread's frames (top first)."""
    parts: list[str] = []
    examined = 0
    for frame in frames:
        examined += 1
        if examined > MAX_EXAMINED:
            break
        text = frame_signature(frame)
        if rules.irrelevant.fullmatch(text):
            continue
        parts.append(text)
        if len(parts) >= rules.max_frames or not rules.prefix.fullmatch(text):
            break
    signature = SEPARATOR.join(parts) if parts else NO_FRAMES
    if len(signature) > MAX_LENGTH:
        signature = signature[: MAX_LENGTH - 3] + "..."
    return signature
