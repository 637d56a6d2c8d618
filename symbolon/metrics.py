"""Metrics through markus: statsd when ``STATSD_HOST`` is set, the log otherwise.

In the log, metrics are lines of the ``markus`` logger, shown with ``LOGGING_LEVEL=DEBUG``.

To statsd, lines are buffered and sent several to a datagram (statsd's newline-separated
form): when the next line would not fit in ``MAX_DATAGRAM`` bytes, every ``FLUSH_SECONDS``,
and at exit. A send per metric cost a large share of a cached download's CPU.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from contextlib import suppress
from typing import Any

import markus
from markus.backends.logging import LoggingMetrics
from markus.backends.statsd import StatsdMetrics
from statsd import StatsClient

from symbolon.conf import Settings

metrics = markus.get_metrics("symbolon")
# Symbolication keeps the reference's metric names (eliot.symbolicate.api, ...): its dashboards
# and alerts keep working.
symbolication_metrics = markus.get_metrics("eliot")

# One Ethernet MTU packet less the IP and UDP headers, with room for IP options or tunnels.
MAX_DATAGRAM = 1400
FLUSH_SECONDS = 0.5


class QuietLoggingMetrics(LoggingMetrics):
    """Formats a metric only when it will be written: download's hot path emits on every request."""

    def emit(self, record: markus.main.MetricsRecord) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().emit(record)


class BatchingStatsClient(StatsClient):
    """statsd's client, sending its lines in batches. Safe from any thread; each process (a
    forked one too) has its own buffer and its own flushing thread, started on its first line.
    Sending never raises: metrics must not fail a request."""

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str | None,
        maxudpsize: int = MAX_DATAGRAM,
        interval: float | None = None,
    ) -> None:
        super().__init__(host=host, port=port, prefix=prefix, maxudpsize=maxudpsize)
        self._connected = False
        with suppress(OSError):  # connected, the kernel looks the route up once
            self._sock.connect(self._addr)
            self._connected = True
        self._interval = FLUSH_SECONDS if interval is None else interval
        self._closed = threading.Event()
        self._reset()
        _clients.add(self)

    def _reset(self) -> None:
        # Also in a forked child: the parent's lines are the parent's to send, and its lock may
        # have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        # A new event too: a fork while the parent's flusher was inside wait() leaves its lock
        # held here for good.
        closed = self._closed.is_set()
        self._closed = threading.Event()
        if closed:
            self._closed.set()
        self._lines: list[bytes] = []
        self._size = -1  # length of the lines joined by newlines; -1 for none
        self._flushing = False

    def _send(self, data: str) -> None:
        line = data.encode("ascii")
        if not self._flushing:
            self._start_flusher()
        with self._lock:
            size = self._size + 1 + len(line)
            if size > self._maxudpsize and self._lines:
                # Sent under the lock: datagrams leave in order, so a gauge's last value wins.
                self._transmit(b"\n".join(self._lines))
                self._lines = []
                size = len(line)
            self._lines.append(line)
            self._size = size

    def flush(self) -> None:
        with self._lock:
            if self._lines:
                self._transmit(b"\n".join(self._lines))
                self._lines = []
                self._size = -1

    def _transmit(self, packet: bytes) -> None:
        for _ in range(2):
            try:
                if self._connected:
                    self._sock.send(packet)
                else:
                    self._sock.sendto(packet, self._addr)
            except ConnectionRefusedError:
                # A connected socket reports an earlier datagram's refusal on the next send,
                # which is then not sent: once statsd is back, this one must be.
                continue
            except (OSError, AttributeError):  # closed, or the network is away
                pass
            return

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flushing or self._closed.is_set():
                return
            self._flushing = True
        thread = threading.Thread(
            target=_flush_periodically,
            args=(weakref.ref(self), self._interval, self._closed),
            name="statsd-flush",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (shutting down): lines go when full
            self._flushing = False

    def close(self) -> None:
        self._closed.set()
        self.flush()
        _clients.discard(self)
        super().close()


class BatchingStatsdMetrics(StatsdMetrics):
    """markus's statsd backend on a ``BatchingStatsClient``: same names, prefix and lines."""

    def _get_client(
        self, host: str, port: int, prefix: str | None, maxudpsize: int
    ) -> BatchingStatsClient:
        return BatchingStatsClient(host, port, prefix, maxudpsize)


def _flush_periodically(
    ref: weakref.ref[BatchingStatsClient], interval: float, closed: threading.Event
) -> None:
    while not closed.wait(interval):
        client = ref()
        if client is None:
            return
        client.flush()
        del client


_clients: weakref.WeakSet[BatchingStatsClient] = weakref.WeakSet()


def flush_metrics() -> None:
    """Send what is buffered: at exit, and before a process ends with ``os._exit``."""
    for client in list(_clients):
        client.flush()


def _after_fork() -> None:
    for client in list(_clients):
        client._reset()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(flush_metrics)


def configure_metrics(settings: Settings) -> None:
    backend: dict[str, Any]
    if settings.statsd_host:
        backend = {
            "class": "symbolon.metrics.BatchingStatsdMetrics",
            "options": {
                "statsd_host": settings.statsd_host,
                "statsd_port": settings.statsd_port,
                "statsd_prefix": settings.statsd_namespace or None,
                "statsd_maxudpsize": MAX_DATAGRAM,
            },
        }
    else:
        backend = {"class": "symbolon.metrics.QuietLoggingMetrics"}
    previous = list(_clients)
    markus.configure(backends=[backend])
    for client in previous:  # replaced: what they hold is sent, their threads end
        client.close()
