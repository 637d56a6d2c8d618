"""Metrics through markus: statsd when ``STATSD_HOST`` is set, the log otherwise."""

from __future__ import annotations

import markus

from symbolon.conf import Settings

metrics = markus.get_metrics("symbolon")


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
        backend = {"class": "markus.backends.logging.LoggingMetrics"}
    markus.configure(backends=[backend])
