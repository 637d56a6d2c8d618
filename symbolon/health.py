"""Dependency checks behind ``/__heartbeat__`` (docs/operations.md, "Health (Dockerflow)")."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symbolon import __version__
from symbolon.db import migrate
from symbolon.runtime import Runtime

OK, WARNING, ERROR = 0, 30, 40
STATUS = {OK: "ok", WARNING: "warning", ERROR: "error"}
CHECK_TIMEOUT_SECONDS = 5.0


@dataclass
class CheckResult:
    level: int = OK
    messages: dict[str, str] = field(default_factory=dict)


async def check_database_connected(rt: Runtime) -> CheckResult:
    try:
        await rt.db.fetchval("SELECT 1")
    except Exception as exc:
        return CheckResult(
            ERROR, {"symbolon.health.E010": f"could not query the database: {exc!r}"}
        )
    return CheckResult()


async def check_migrations_applied(rt: Runtime) -> CheckResult:
    async with rt.db.acquire() as conn:
        missing = await migrate.pending(conn)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        return CheckResult(WARNING, {"symbolon.health.W001": f"unapplied migrations: {names}"})
    return CheckResult()


async def _ping(cache: Any, message_id: str) -> CheckResult:
    try:
        await cache.ping()
    except Exception as exc:
        return CheckResult(
            ERROR, {message_id: f"Redis ({cache.name}) did not answer PING: {exc!r}"}
        )
    return CheckResult()


async def check_redis_connected(rt: Runtime) -> CheckResult:
    # The cache's Redis is also the task broker.
    return await _ping(rt.cache, "symbolon.health.E020")


async def check_redis_store_connected(rt: Runtime) -> CheckResult:
    return await _ping(rt.store, "symbolon.health.E021")


async def check_storage_urls(rt: Runtime) -> CheckResult:
    problems = await rt.stores.problems(rt.storage)
    messages = {}
    for i, message in enumerate(problems.values()):
        code = "E001" if message.endswith("bucket not found") else "E002"
        messages[f"symbolon.health.{code}" + (f".{i}" if i else "")] = message
    return CheckResult(ERROR if messages else OK, messages)


async def check_crash_storage(rt: Runtime) -> CheckResult:
    if rt.collector is None:
        return CheckResult()
    problem = await rt.collector.storage.check()
    if problem:
        return CheckResult(ERROR, {"symbolon.health.E030": problem})
    return CheckResult()


CHECKS: dict[str, Callable[[Runtime], Awaitable[CheckResult]]] = {
    "check_database_connected": check_database_connected,
    "check_migrations_applied": check_migrations_applied,
    "check_redis_connected": check_redis_connected,
    "check_redis_store_connected": check_redis_store_connected,
    "check_storage_urls": check_storage_urls,
    "check_crash_storage": check_crash_storage,
}


async def _run_one(name: str, check: Callable[[Runtime], Awaitable[CheckResult]], rt: Runtime):
    try:
        return await asyncio.wait_for(check(rt), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # a check that fails to run is itself a failed check
        return CheckResult(ERROR, {"symbolon.health.E000": f"{name} failed: {exc!r}"})


async def heartbeat(rt: Runtime) -> tuple[bool, dict[str, Any]]:
    """Run every check concurrently; returns (healthy, body)."""
    results = await asyncio.gather(*(_run_one(n, c, rt) for n, c in CHECKS.items()))
    by_name = dict(zip(CHECKS, results, strict=True))
    worst = max(r.level for r in results)
    body = {
        "status": STATUS[worst],
        "checks": {name: STATUS[r.level] for name, r in by_name.items()},
        "details": {
            name: {"status": STATUS[r.level], "level": r.level, "messages": r.messages}
            for name, r in by_name.items()
            if r.level > OK
        },
    }
    return worst < ERROR, body


def version_info(base_dir: Path) -> dict[str, Any]:
    """The deployment's version.json, or one built from the package version and git."""
    try:
        data = json.loads((base_dir / "version.json").read_text())
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    return {"source": "", "version": __version__, "commit": _git_commit(base_dir), "build": ""}


def _git_commit(base_dir: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=base_dir, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""
