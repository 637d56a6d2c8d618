"""Publishing crash ids (docs/crashes.md): each id is one dramatiq message that a dramatiq
consumer takes, also when many are pipelined in one round trip or Redis lost the script."""

from __future__ import annotations

import asyncio

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from symbolon.crashes.publish import MAX_BATCH, Publisher, pack_command
from symbolon.queues import NAMESPACE
from tests.crashes import unique_queue


@pytest.fixture
def publish_settings(live_settings):
    return live_settings.replace(crashpublish_queue_name=unique_queue())


def consume(settings, expected: int) -> list[tuple[str, str, tuple]]:
    """What a dramatiq consumer of the queue takes: (actor, message id, args) per message."""
    broker = RedisBroker(client=redis.Redis.from_url(settings.redis_url), namespace=NAMESPACE)
    broker.declare_queue(settings.crashpublish_queue_name)
    consumer = broker.consume(settings.crashpublish_queue_name, prefetch=1000, timeout=200)
    taken = []
    try:
        for _ in range(expected + 20):  # a few empty polls past the end
            message = next(consumer)
            if message is None:
                if len(taken) >= expected:
                    break
                continue
            taken.append((message.actor_name, message.message_id, tuple(message.args)))
            consumer.ack(message)
    finally:
        consumer.close()
        broker.close()
    return taken


@pytest.mark.gen_test(timeout=30)
async def test_ids_that_arrive_during_a_round_trip_share_the_next_ones(publish_settings):
    publisher = Publisher(publish_settings)
    round_trips: list[int] = []
    first_sent = asyncio.Event()
    go_on = asyncio.Event()
    enqueue = publisher._enqueue

    async def held(crash_ids):
        round_trips.append(len(crash_ids))
        if len(round_trips) == 1:
            first_sent.set()
            await go_on.wait()  # the first round trip takes a while
        return await enqueue(crash_ids)

    publisher._enqueue = held
    ids = [f"id-{n:03d}" for n in range(150)]
    try:
        first = asyncio.ensure_future(publisher.publish("first"))
        await first_sent.wait()
        waiting = asyncio.gather(*(publisher.publish(crash_id) for crash_id in ids))
        await asyncio.sleep(0.05)
        go_on.set()
        await asyncio.gather(first, waiting)
        await publisher.publish("alone")
    finally:
        await publisher.close()
    assert round_trips == [1, MAX_BATCH, 150 - MAX_BATCH, 1]

    taken = await asyncio.to_thread(consume, publish_settings, 152)
    assert sorted(args[0] for _, _, args in taken) == sorted(["first", *ids, "alone"])
    assert {actor for actor, _, _ in taken} == {publish_settings.crashpublish_actor_name}
    assert len({message_id for _, message_id, _ in taken}) == 152


@pytest.mark.gen_test(timeout=30)
async def test_a_redis_that_lost_the_script_gets_it_again(publish_settings, own_redis):
    settings = publish_settings.replace(redis_url=own_redis)
    publisher = Publisher(settings)
    try:
        await publisher.publish("first")
        admin = redis.Redis.from_url(own_redis)
        admin.script_flush()  # as after a restart
        admin.close()
        await asyncio.gather(publisher.publish("second"), publisher.publish("third"))
    finally:
        await publisher.close()
    taken = await asyncio.to_thread(consume, settings, 3)
    assert sorted(args[0] for _, _, args in taken) == ["first", "second", "third"]


EVALSHA = b"*14\r\n$7\r\nEVALSHA\r\n"


@pytest.mark.gen_test(timeout=30)
async def test_only_the_commands_refused_for_want_of_the_script_are_sent_again(
    publish_settings, own_redis
):
    """Another client may load the script in the middle of a batch: what ran must not run
    twice. Here the batch itself loads it after its first command."""
    settings = publish_settings.replace(redis_url=own_redis)
    publisher = Publisher(settings)
    round_trip = publisher._round_trip
    sent: list[int] = []

    async def load_midway(commands):
        sent.append(len(commands))
        if len(sent) > 1 or len(commands) < 2:
            return await round_trip(commands)
        assert all(c.startswith(EVALSHA) for c in commands)
        load = pack_command("SCRIPT", "LOAD", publisher._dispatch.script)
        answers = await round_trip([commands[0], load, *commands[1:]])
        return [answers[0], *answers[2:]]

    try:
        admin = redis.Redis.from_url(own_redis)
        admin.script_flush()
        admin.close()
        publisher._round_trip = load_midway
        await asyncio.gather(*(publisher.publish(name) for name in ("a", "b", "c")))
    finally:
        await publisher.close()
    assert sent == [3, 1, 1]  # the batch, SCRIPT LOAD, then "a" alone
    taken = await asyncio.to_thread(consume, settings, 3)
    assert sorted(args[0] for _, _, args in taken) == ["a", "b", "c"]


@pytest.mark.gen_test(timeout=30)
async def test_a_failed_round_trip_fails_every_id_in_it_and_the_next_one_works(
    publish_settings, own_redis
):
    settings = publish_settings.replace(redis_url=own_redis, redis_socket_timeout=0.3)
    publisher = Publisher(settings)
    try:
        await publisher.publish("before")
        admin = redis.Redis.from_url(own_redis)
        admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        admin.close()
        results = await asyncio.gather(
            *(publisher.publish(f"during-{n}") for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Exception) for r in results), results
        await asyncio.sleep(1.5)  # the pause ends
        await publisher.publish("after")
    finally:
        await publisher.close()
    taken = await asyncio.to_thread(consume, settings, 2)
    assert sorted(args[0] for _, _, args in taken) == ["after", "before"]


@pytest.mark.gen_test(timeout=30)
async def test_an_id_whose_request_went_away_during_a_failure_is_logged(
    publish_settings, own_redis, caplog
):
    settings = publish_settings.replace(redis_url=own_redis, redis_socket_timeout=0.3)
    publisher = Publisher(settings)
    crash_id = "de0e4f1a-8a46-4a6e-9b5c-6f2a5e261122"
    try:
        await publisher.publish("before")  # connected, script known
        admin = redis.Redis.from_url(own_redis)
        admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        admin.close()
        request = asyncio.ensure_future(publisher.publish(crash_id))
        await asyncio.sleep(0.05)
        request.cancel()  # as at a shutdown
        await asyncio.sleep(0.6)  # the round trip times out
    finally:
        await asyncio.sleep(0.5)
        await publisher.close()
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(crash_id in m and "republish --date 20261122" in m for m in logged), logged
