"""Task actors. Import only through ``setup_broker`` (see broker.py)."""

from __future__ import annotations

import dramatiq

PING_TTL_SECONDS = 300


@dramatiq.actor(max_retries=0)
def ping(token: str) -> None:
    """Leaves a mark in the broker's Redis: proof that some worker consumes the queue."""
    broker = dramatiq.get_broker()
    broker.client.set(f"symbolon:ping:{token}", "pong", ex=PING_TTL_SECONDS)  # type: ignore[attr-defined]
