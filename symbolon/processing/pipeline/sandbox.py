"""Walking dumps in processes of their own, each bounded in time and memory (docs/processing.md,
"Walking processes: time and memory").

A dump is untrusted input: walking one may take long or need much memory. Each walk runs in a
walking process whose address space is limited (``PROCESSOR_WALK_MEMORY``), and the walk has
``PROCESSOR_WALK_TIMEOUT`` seconds of the process's time; past it the process is killed and
replaced. Either way the crash gets a failure with a reason, and the worker goes on.

The walking process asks for each module's CFI index while it walks, over its pipe; the time the
parent takes to fetch and build an index is not counted against ``PROCESSOR_WALK_TIMEOUT``, but
the whole walk, fetching included, must end within ``PROCESSOR_WALK_DEADLINE`` of wall-clock
time, so a dump that makes the walker ask for symbols of many modules cannot hold a worker long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger(__name__)

# A walking process is replaced after this many walks, so that what a large dump made its
# allocator keep is given back.
WALKS_PER_PROCESS = 200
# A module key as the walking process asks for it: (debug_file, debug_id).
ModuleKey = tuple[str, str]
# Answers a walking process's question for a module's CFI index file (None: there is none).
CfiProvider = Callable[[ModuleKey], Awaitable[str | None]]
START_SECONDS = 60.0


class WalkFailed(Exception):
    """The dump could not be walked; the message says why, for people."""


class WalkUnavailable(Exception):
    """No walk could be had, through no fault of the dump (no walking process started, the dump
    could not be handed over, the process was killed from outside): try again later."""


@dataclass
class Walked:
    """A walk's result (the child's rendering) and what it cost."""

    result: dict[str, Any]
    seconds: float
    cfi_requests: list[ModuleKey] = field(default_factory=list)


def _limit_memory(limit: int) -> None:
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent:
        os._exit(0)


def _serve(conn: multiprocessing.connection.Connection, parent: int, memory: int) -> None:
    """A walking process: one walk at a time, until the pipe closes."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this one stops
    from symbolon.processing.pipeline.walk_job import NotWalkable, walk

    _limit_memory(memory)
    conn.send(("ready", None))  # imports done: what follows is the walks' own time
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        dump = request

        def ask(key: ModuleKey) -> str | None:
            conn.send(("cfi", key))
            answer: str | None = conn.recv()
            return answer

        try:
            conn.send(("done", walk(dump, ask)))
        except MemoryError:
            # What is left of this process's memory is not to be trusted: answer and end.
            with contextlib.suppress(Exception):
                conn.send(("failed", "the dump needs more memory than PROCESSOR_WALK_MEMORY"))
            os._exit(3)
        except NotWalkable as exc:
            conn.send(("failed", str(exc)))
        except RecursionError:
            conn.send(("failed", "the dump nests deeper than the walker follows"))
        except Exception as exc:
            logger.exception("walking a dump failed")
            conn.send(("failed", f"the walker failed: {type(exc).__name__}: {exc}"))
        del dump


class _Worker:
    def __init__(self, memory: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(child, os.getpid(), memory), name="symbolon-walk", daemon=True
        )
        self.process.start()
        child.close()
        self.walks = 0

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.process.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()

    def how_it_ended(self) -> str:
        self.process.join(1)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the walking process was killed by {name}"
        if code == 3:
            return "the dump needs more memory than PROCESSOR_WALK_MEMORY"
        return f"the walking process ended (exit status {code})"

    def ended(self) -> Exception:
        """What the end of this process during a walk means: the dump's fault (WalkFailed), or,
        killed by SIGKILL, the machine's. Its address space is limited, so the dump cannot have
        taken it past its own memory limit: SIGKILL came from outside (the kernel's
        out-of-memory killer, an operator)."""
        reason = self.how_it_ended()
        if self.process.exitcode == -signal.SIGKILL:
            return WalkUnavailable(reason)
        return WalkFailed(reason)


class WalkPool:
    """Walking processes, started on first use and replaced when they fail or time out."""

    def __init__(self, processes: int, memory: int, timeout: float, deadline: float | None = None):
        self.processes = max(1, processes)
        self.memory = memory
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else 10 * timeout
        self._idle: list[_Worker] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._slots, self._loop = asyncio.Semaphore(self.processes), loop
        return self._slots

    async def walk(self, dump: bytes, provide: CfiProvider) -> Walked:
        """Walk ``dump``; WalkFailed with the reason when it cannot be walked, WalkUnavailable
        when no walk could be had for reasons other than the dump."""
        if self._closed:
            raise RuntimeError("the walk pool is closed")
        async with self._semaphore():
            worker = self._idle.pop() if self._idle else None
            if worker is None or not worker.process.is_alive():
                if worker is not None:
                    worker.kill()
                worker = await asyncio.to_thread(_Worker, self.memory)
                ready = await asyncio.to_thread(_receive, worker.conn, START_SECONDS)
                if ready is None or ready[0] != "ready":
                    await asyncio.to_thread(worker.kill)
                    raise WalkUnavailable(f"no walking process started: {worker.how_it_ended()}")
            ok = False
            try:
                walked = await self._run(worker, dump, provide)
                ok = True
                return walked
            finally:
                worker.walks += 1
                if ok and worker.walks < WALKS_PER_PROCESS and not self._closed:
                    self._idle.append(worker)
                else:
                    await asyncio.to_thread(worker.kill)

    async def _run(self, worker: _Worker, dump: bytes, provide: CfiProvider) -> Walked:
        conn = worker.conn
        requests: list[ModuleKey] = []
        budget = self.timeout
        busy = 0.0
        ends = time.monotonic() + self.deadline
        try:
            await asyncio.to_thread(conn.send, dump)
        except (OSError, ValueError) as exc:
            raise WalkUnavailable(f"could not hand the dump to a walking process: {exc}") from None
        while True:
            started = time.monotonic()
            wait = min(budget - busy, ends - started)
            message = await asyncio.to_thread(_receive, conn, max(0.0, wait))
            busy += time.monotonic() - started
            if message is None:
                if busy >= budget:
                    raise WalkFailed(f"walking the dump took longer than {budget:g} s")
                if time.monotonic() >= ends:
                    raise WalkFailed(self._late())
                raise worker.ended()
            kind, body = message
            if kind == "cfi":
                key = (str(body[0]), str(body[1]))
                requests.append(key)
                try:
                    path = await asyncio.wait_for(provide(key), ends - time.monotonic())
                except TimeoutError:
                    raise WalkFailed(self._late()) from None
                except Exception:
                    logger.exception("obtaining the CFI index of %s/%s failed", *key)
                    path = None
                try:
                    await asyncio.to_thread(conn.send, path)
                except (OSError, ValueError):
                    raise worker.ended() from None
                continue
            if kind == "done":
                return Walked(body, busy, requests)
            # The process may be in any state after a failure: it is replaced (see walk).
            raise WalkFailed(str(body))

    def _late(self) -> str:
        return (
            f"walking the dump with its symbols took longer than {self.deadline:g} s "
            "(PROCESSOR_WALK_DEADLINE)"
        )

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


def _receive(conn: multiprocessing.connection.Connection, timeout: float) -> Any:
    """The next message, or None when the timeout passed or the process is gone."""
    try:
        if not conn.poll(timeout):
            return None
        return conn.recv()
    except (EOFError, OSError):
        return None
