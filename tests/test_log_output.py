"""JSON log lines: the text ``json.dumps`` of the mozlog-like entry gives, in every process."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

from symbolon.logs import JsonFormatter
from tests.conftest import repo_root


def reference(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """The entry as ``json.dumps`` writes it: the keys and their order pipelines rely on."""
    fields = {"msg": record.getMessage()}
    entry = {
        "Timestamp": int(record.created * 1e9),
        "Time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
        "Type": record.name,
        "Logger": "symbolon",
        "Hostname": socket.gethostname(),
        "Pid": os.getpid(),
        "Severity": record.levelname,
        "Fields": fields,
    }
    if record.exc_info:
        fields["traceback"] = formatter.formatException(record.exc_info)
    return json.dumps(entry)


def record(
    name: str, level: int, msg: str, *args: object, exc_info: bool = False
) -> logging.LogRecord:
    info = sys.exc_info() if exc_info else None
    return logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, info)


def test_lines_are_those_of_json_dumps() -> None:
    formatter = JsonFormatter()
    records = [
        record("tornado.access", logging.INFO, "%s %s %d %.1fms", "GET", "/a/b?c=d", 302, 0.41),
        record("symbolon.x", logging.WARNING, 'quote " backslash \\ tab \t newline \n'),
        record("symbolon.ü", logging.ERROR, "non-ASCII é ✓ 𝄞 and control \x00\x1f\x7f"),
        record("x", logging.DEBUG, "%r", {"a": [1, 2]}),
        record("y", logging.CRITICAL, ""),
    ]
    try:
        raise ValueError('bad ✓ "value"')
    except ValueError:
        records.append(record("symbolon.z", logging.ERROR, "failed", exc_info=True))
    later = record("x", logging.INFO, "a second later")
    later.created += 1.5  # a new second: the cached time is redone
    records.append(later)
    for each in records:
        line = formatter.format(each)
        assert line == reference(each, formatter)
        assert list(json.loads(line)) == [
            "Timestamp", "Time", "Type", "Logger", "Hostname", "Pid", "Severity", "Fields",
        ]  # fmt: skip
    assert "traceback" in json.loads(formatter.format(records[-2]))["Fields"]


def test_a_forked_process_writes_its_own_pid() -> None:
    formatter = JsonFormatter()
    formatter.format(record("x", logging.INFO, "before the fork"))  # the parent's pid cached
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, formatter.format(record("x", logging.INFO, "child")).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    assert json.loads(data)["Pid"] == pid
    assert json.loads(formatter.format(record("x", logging.INFO, "parent")))["Pid"] == os.getpid()


def test_a_process_logs_json_lines_to_a_pipe() -> None:
    script = """
import logging
from symbolon.conf import Settings
from symbolon.logs import configure_logging
configure_logging(Settings(log_format="json", logging_level="INFO"))
for i in range(200):
    logging.getLogger("symbolon.test").info("line %d é", i)
logging.getLogger("symbolon.test").warning("done")
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo_root(),
        stderr=subprocess.PIPE,
        check=True,
        timeout=60,
    )
    entries = [json.loads(line) for line in done.stderr.decode().splitlines()]
    assert [e["Fields"]["msg"] for e in entries] == [f"line {i} é" for i in range(200)] + ["done"]
    assert {(e["Type"], e["Logger"], e["Pid"]) for e in entries} == {
        ("symbolon.test", "symbolon", entries[0]["Pid"])
    }
    assert entries[-1]["Severity"] == "WARNING"


def test_records_skip_the_lookups_no_format_shows() -> None:
    """The caller's frame, thread and process are looked up for every record unless told not to:
    neither format shows them, and the JSON lines' pid is the process's all the same."""
    script = """
import logging, os
from symbolon.conf import Settings
from symbolon.logs import configure_logging
configure_logging(Settings(log_format="json", logging_level="INFO"))
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)
logging.getLogger().addHandler(Keep())
logging.getLogger("symbolon.test").info("one")
r = records[0]
print(r.funcName, r.lineno, r.threadName, r.process, r.processName, os.getpid(), sep="|")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root(), capture_output=True, check=True, timeout=60
    )
    *looked_up, pid = done.stdout.decode().strip().split("|")
    assert looked_up == ["(unknown function)", "0", "None", "None", "None"]
    assert json.loads(done.stderr)["Pid"] == int(pid)
