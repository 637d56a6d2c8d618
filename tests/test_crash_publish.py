"""Publishing crash ids (spec/crashes.md §8.3): each id is one dramatiq message that a dramatiq
consumer takes, also when many are pipelined in one round trip or Redis lost the script."""

from __future__ import annotations

import asyncio

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from symbolon.crashes.publish import Publisher
from symbolon.tasks.broker import NAMESPACE
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
async def test_concurrent_ids_share_round_trips_and_each_is_its_own_message(publish_settings):
    publisher = Publisher(publish_settings)
    round_trips = []
    enqueue = publisher._enqueue

    async def counted(crash_ids):
        round_trips.append(len(crash_ids))
        return await enqueue(crash_ids)

    publisher._enqueue = counted
    ids = [f"id-{n:03d}" for n in range(60)]
    try:
        await asyncio.gather(*(publisher.publish(crash_id) for crash_id in ids))
        await publisher.publish("alone")
    finally:
        await publisher.close()
    assert sum(round_trips) == 61
    assert len(round_trips) < 61  # ids that arrived during a round trip went together
    assert round_trips[-1] == 1  # a quiet publisher does not wait to fill a batch

    taken = await asyncio.to_thread(consume, publish_settings, 61)
    assert sorted(args[0] for _, _, args in taken) == sorted([*ids, "alone"])
    assert {actor for actor, _, _ in taken} == {publish_settings.crashpublish_actor_name}
    assert len({message_id for _, message_id, _ in taken}) == 61


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
    names = sorted(args[0] for _, _, args in taken)
    assert names[0] == "after" and names[-1] == "before"
