"""Demangling the C++ names native debug files hold (a ``.sym``'s are demangled already).

Symcaches made from DWARF keep linkage names (``_ZN3foo3barEv``); answers give what dump_syms
and llvm-symbolizer print (``foo::bar()``). The Itanium demangler of the C++ runtime
(``__cxa_demangle``) does it, through ctypes; where it cannot be loaded, names stay as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

logger = logging.getLogger(__name__)

_demangler: Any = None
_loaded = False


def _load() -> Any:
    global _demangler, _loaded
    if _loaded:
        return _demangler
    _loaded = True
    for name in (ctypes.util.find_library("stdc++"), "libstdc++.so.6", "libc++.so.1"):
        if not name:
            continue
        try:
            library = ctypes.CDLL(name)
            function = library.__cxa_demangle
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_void_p
        function.argtypes = [
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
        ]
        free = ctypes.CDLL(None).free
        free.argtypes = [ctypes.c_void_p]
        _demangler = (function, free)
        return _demangler
    logger.warning("no C++ demangler: native modules' names stay mangled")
    return None


def demangle(name: str) -> str:
    """The demangled form of an Itanium C++ name; anything else, or a name that does not
    demangle, as it is."""
    if not name.startswith("_Z"):
        return name
    loaded = _load()
    if loaded is None:
        return name
    function, free = loaded
    status = ctypes.c_int(0)
    result = function(name.encode("utf-8", "surrogateescape"), None, None, ctypes.byref(status))
    if status.value != 0 or not result:
        return name
    try:
        text = ctypes.string_at(result)
    finally:
        free(result)
    return text.decode("utf-8", "replace")
