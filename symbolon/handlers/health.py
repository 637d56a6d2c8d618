"""Dockerflow endpoints: lbheartbeat, heartbeat, version and broken."""

from __future__ import annotations

from symbolon import health
from symbolon.handlers.base import BaseHandler
from symbolon.metrics import metrics


class HealthHandler(BaseHandler):
    def prepare(self) -> None:
        """Served before any authentication: probes never carry tokens that matter."""


class LBHeartbeatHandler(HealthHandler):
    """The load balancer's probe: answers while the process serves, touches nothing else."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish()

    head = get


class HeartbeatHandler(HealthHandler):
    async def get(self) -> None:
        metrics.incr("health_resource.heartbeat.count")
        healthy, body = await health.heartbeat(self.runtime)
        self.write_json(body, status=200 if healthy else 500)


class VersionHandler(HealthHandler):
    def initialize(self) -> None:
        self._version = self.application.settings["version_info"]

    def get(self) -> None:
        self.write_json(self._version)


class BrokenHandler(HealthHandler):
    """Raises on purpose so that operators can see error reporting work."""

    def get(self) -> None:
        raise RuntimeError("/__broken__ raises on purpose, to test error reporting")


ROUTES = [
    (r"/__lbheartbeat__", LBHeartbeatHandler),
    (r"/__heartbeat__", HeartbeatHandler),
    (r"/__version__", VersionHandler),
    (r"/__broken__", BrokenHandler),
]
