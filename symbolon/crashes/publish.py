"""Publishing crash ids to the processing queue: one dramatiq message per saved crash.

The message calls ``CRASHMOVER_CRASHPUBLISH_ACTOR_NAME`` (default ``process_crash``) on
``CRASHMOVER_CRASHPUBLISH_QUEUE_NAME`` (default ``socorro.standard``) with the crash id as its only
argument. The processor that consumes them declares that actor: Symbolon's own
(docs/processing.md), unless ``ENABLE_CRASH_PROCESSOR`` is off. At start-up the id ``test`` is
published; consumers drop it (docs/crashes.md, "The processing queue").

Messages are enqueued the way dramatiq's ``RedisBroker.enqueue`` does it (its ``dispatch`` script,
with the broker's own arguments), but from the event loop over one asyncio connection of
redis-py's: no thread hop per crash. Ids published while a round trip is under way wait for it
and then go together, pipelined: each is still its own message and its own answer, and a quiet
server sends each at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import dramatiq
import redis
import redis.asyncio
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from redis.exceptions import NoScriptError, ResponseError

from symbolon.conf import Settings
from symbolon.queues import NAMESPACE

logger = logging.getLogger("symbolon.crashes")
TEST_MESSAGE = "test"
# At most this many ids in one round trip.
MAX_BATCH = 100


class Publisher:
    def __init__(self, settings: Settings):
        assert settings.redis_url
        self.settings = settings
        self.redis_url = settings.redis_url
        self.queue_name = settings.crashpublish_queue_name
        self.actor_name = settings.crashpublish_actor_name
        # The broker gives the dispatch script and the arguments its consumers expect (broker id,
        # timeouts, the Lua stack bound, which it asks Redis once): a client with timeouts too.
        client = redis.Redis.from_url(
            self.redis_url,
            socket_timeout=settings.redis_socket_timeout,
            socket_connect_timeout=settings.redis_socket_connect_timeout,
        )
        self.broker = RedisBroker(client=client, namespace=NAMESPACE, middleware=[])
        self._dispatch = self.broker.scripts["dispatch"]
        self._unpack_size: int | None = None
        self._connection: redis.asyncio.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def publish(self, crash_id: str) -> None:
        """Raises whatever the broker raised; the caller decides what a failure means."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((crash_id, done))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_waiting())
        await done

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                results: list[Any] = await self._enqueue([crash_id for crash_id, _ in batch])
            except Exception as exc:  # nothing was sent
                results = [exc] * len(batch)
            for (crash_id, done), result in zip(batch, results, strict=True):
                if not done.done():
                    if isinstance(result, Exception):
                        done.set_exception(result)
                    else:
                        done.set_result(None)
                elif isinstance(result, Exception):
                    # Its request was cancelled (a shutdown): its publishing mark, written before
                    # the save, gets it published by the next process's re-publish loop.
                    logger.error(
                        "%s: not published (%r) and its request is gone; published again once "
                        "its publishing mark is old enough, or by "
                        "`symbolon crashes republish --date 20%s`",
                        crash_id,
                        result,
                        crash_id[-6:],
                    )

    async def _enqueue(self, crash_ids: list[str]) -> list[Any]:
        """One result per id: None once enqueued, else the exception that stopped it."""
        if self._unpack_size is None:  # asks Redis once (a script call), as dramatiq does
            self._unpack_size = await asyncio.to_thread(self.broker._max_unpack_size)
        sha = self._dispatch.sha
        commands = [
            pack_command("EVALSHA", sha, 1, NAMESPACE, *self._enqueue_args(crash_id))
            for crash_id in crash_ids
        ]
        results = await self._round_trip(commands)
        # A Redis server that restarted has forgotten the script: load it, then send again
        # only what it refused (another client may have loaded it in the meantime).
        again = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if again:
            load = pack_command("SCRIPT", "LOAD", self._dispatch.script)
            (loaded,) = await self._round_trip([load])
            answers = [loaded] * len(again)
            if not isinstance(loaded, Exception):
                answers = await self._round_trip([commands[i] for i in again])
            for i, answer in zip(again, answers, strict=True):
                results[i] = answer
        return results

    async def _round_trip(self, commands: list[bytes]) -> list[Any]:
        """Send commands and read one answer each: an error answer is that command's result.
        When the connection fails, the commands not answered get that failure (they may or may
        not have run: publishing is at least once) and the connection is dropped."""
        connection = self._connection_for_loop()
        results: list[Any] = []
        try:
            await connection.send_packed_command(b"".join(commands), check_health=False)
            for _ in commands:
                try:
                    results.append(await connection.read_response())
                except ResponseError as exc:
                    results.append(exc)
        except Exception as exc:
            await connection.disconnect(nowait=True)
            results += [exc] * (len(commands) - len(results))
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        return results

    def _enqueue_args(self, crash_id: str) -> list[Any]:
        """The arguments of dramatiq's ``do_enqueue`` for one message."""
        broker = self.broker
        message_id = str(uuid.uuid4())  # unique per enqueue, as RedisBroker.enqueue makes it
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            args=(crash_id,),
            kwargs={},
            options={"redis_message_id": message_id},
        )
        return [
            "enqueue",
            current_millis(),
            self.queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            broker._should_do_maintenance("enqueue"),
            self._unpack_size,
            message_id,
            message.encode(),
        ]

    def _connection_for_loop(self) -> redis.asyncio.Connection:
        # One connection, since round trips go one at a time; it belongs to the loop it was
        # made in (the CLI runs several loops). The URL's host, database, password and TLS
        # come through redis-py's own parsing.
        loop = asyncio.get_running_loop()
        if self._connection is None or self._loop is not loop:
            pool = redis.asyncio.ConnectionPool.from_url(
                self.redis_url,
                socket_timeout=self.settings.redis_socket_timeout,
                socket_connect_timeout=self.settings.redis_socket_connect_timeout,
            )
            self._connection = pool.make_connection()
            self._loop = loop
        return self._connection

    async def close(self) -> None:
        """After the collector went idle: nothing is waiting to be published."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        if self._connection is not None and self._loop is asyncio.get_running_loop():
            await self._connection.disconnect()
        self._connection = None
        self.broker.client.close()


def pack_command(*args: str | int | bytes | memoryview) -> bytes:
    """A command in the Redis protocol (RESP), as redis-py would send it."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = bytes(arg) if isinstance(arg, bytes | memoryview) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)
