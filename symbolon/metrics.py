"""Metrics through markus: statsd when ``STATSD_HOST`` is set, the log otherwise.

In the log, metrics are lines of the ``markus`` logger, shown with ``LOGGING_LEVEL=DEBUG``.
"""

from __future__ import annotations

import logging

import markus
from markus.backends.logging import LoggingMetrics

from symbolon.conf import Settings

metrics = markus.get_metrics("symbolon")
# Symbolication keeps the reference's metric names (eliot.symbolicate.api, ...): its dashboards
# and alerts keep working.
symbolication_metrics = markus.get_metrics("eliot")


class QuietLoggingMetrics(LoggingMetrics):
    """Formats a metric only when it will be written: download's hot path emits on every request."""

    def emit(self, record: markus.main.MetricsRecord) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().emit(record)


def configure_metrics(settings: Settings) -> None:
    if settings.statsd_host:
        backend = {
            "class": "markus.backends.statsd.StatsdMetrics",
            "options": {
                "statsd_host": settings.statsd_host,
                "statsd_port": settings.statsd_port,
                "statsd_prefix": settings.statsd_namespace or None,
            },
        }
    else:
        backend = {"class": "symbolon.metrics.QuietLoggingMetrics"}
    markus.configure(backends=[backend])
