"""Publishing crash ids to the processing queue: one dramatiq message per saved crash.

The message calls ``CRASHMOVER_CRASHPUBLISH_ACTOR_NAME`` (default ``process_crash``) on
``CRASHMOVER_CRASHPUBLISH_QUEUE_NAME`` (default ``socorro.standard``) with the crash id as its only
argument. Symbolon declares no such actor, so its own workers never take these messages: the
processor that consumes them declares it. At start-up the id ``test`` is published; consumers
drop it (spec/crashes.md §8.3).
"""

from __future__ import annotations

import asyncio

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from symbolon.conf import Settings
from symbolon.tasks.broker import NAMESPACE

TEST_MESSAGE = "test"


class Publisher:
    def __init__(self, settings: Settings):
        assert settings.redis_url
        self.queue_name = settings.crashpublish_queue_name
        self.actor_name = settings.crashpublish_actor_name
        # A client of its own with timeouts: a paused broker must not hold a request forever.
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_socket_timeout,
            socket_connect_timeout=settings.redis_socket_connect_timeout,
        )
        self.broker = RedisBroker(client=client, namespace=NAMESPACE, middleware=[])

    def _send(self, crash_id: str) -> None:
        message = dramatiq.Message(
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            args=(crash_id,),
            kwargs={},
            options={},
        )
        self.broker.enqueue(message)

    async def publish(self, crash_id: str) -> None:
        """Raises whatever the broker raised; the caller decides what a failure means."""
        await asyncio.to_thread(self._send, crash_id)

    def close(self) -> None:
        self.broker.close()
        self.broker.client.close()
