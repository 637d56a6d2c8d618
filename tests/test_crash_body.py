"""Receiving a report's body with bounded memory (docs/crashes.md)."""

from __future__ import annotations

import gzip
import os

import pytest

from symbolon.crashes.body import BodyTooLarge, ByteBudget, ReceivedBody, SpoolBudget, SpoolFull
from symbolon.crashes.payload import Malformed

SPOOL_AFTER = 64 * 1024


def feed_all(body: ReceivedBody, data: bytes, step: int = 8192) -> None:
    for start in range(0, len(data), step):
        body.feed(data[start : start + step])


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_body_past_the_threshold_is_kept_in_a_file_not_in_memory(tmp_path, gzipped):
    data = os.urandom(3 * SPOOL_AFTER)
    body = ReceivedBody(gzipped, max_inflated=10 * SPOOL_AFTER, spool_dir=tmp_path)
    body.spool_after = SPOOL_AFTER
    feed_all(body, gzip.compress(data) if gzipped else data)
    assert body._file is not None and body._chunks == []  # nothing piles up in memory
    assert body.size == len(data)
    whole = body.finish()
    assert bytes(whole) == data
    body.close()
    assert body._file is None


def test_a_small_body_stays_in_memory(tmp_path):
    body = ReceivedBody(False, 10 * SPOOL_AFTER, spool_dir=tmp_path, spool_after=SPOOL_AFTER)
    feed_all(body, b"x" * SPOOL_AFTER)  # the threshold itself is not past it
    assert body._file is None
    assert body.finish() == b"x" * SPOOL_AFTER
    assert list(tmp_path.iterdir()) == []


def test_a_gzip_bomb_stops_at_the_inflated_limit_in_bounded_steps():
    bomb = gzip.compress(b"\0" * 50_000_000)
    body = ReceivedBody(True, max_inflated=1_000_000)
    with pytest.raises(BodyTooLarge) as caught:
        body.feed(bomb)  # one chunk holding the whole bomb
    assert caught.value.inflated
    assert body.size <= 1_000_000 + 1024 * 1024  # at most one inflate step past the limit
    body.close()


@pytest.mark.parametrize("wire", [b"not gzip at all", gzip.compress(b"abc" * 1000)[:-12]])
def test_bad_or_truncated_gzip_is_malformed(wire):
    body = ReceivedBody(True, max_inflated=1_000_000)
    with pytest.raises(Malformed) as caught:
        body.feed(wire)
        body.finish()
    assert caught.value.reason == "bad_gzip"
    body.close()


def test_spool_files_share_one_budget_and_give_it_back(tmp_path):
    budget = SpoolBudget(5 * SPOOL_AFTER)
    first = ReceivedBody(True, 100 * SPOOL_AFTER, tmp_path, SPOOL_AFTER, budget)
    feed_all(first, gzip.compress(b"\0" * 3 * SPOOL_AFTER))
    assert budget.used == first.spooled == 3 * SPOOL_AFTER
    second = ReceivedBody(True, 100 * SPOOL_AFTER, tmp_path, SPOOL_AFTER, budget)
    with pytest.raises(SpoolFull):
        feed_all(second, gzip.compress(b"\0" * 3 * SPOOL_AFTER))
    second.close()
    assert budget.used == 3 * SPOOL_AFTER  # what the refused body held is back
    first.close()
    assert budget.used == 0
    third = ReceivedBody(True, 100 * SPOOL_AFTER, tmp_path, SPOOL_AFTER, budget)
    feed_all(third, gzip.compress(b"\0" * 3 * SPOOL_AFTER))  # now it fits
    third.close()
    assert budget.used == 0


def test_a_body_larger_than_the_whole_budget_is_too_large(tmp_path):
    budget = SpoolBudget(2 * SPOOL_AFTER)
    body = ReceivedBody(False, 100 * SPOOL_AFTER, tmp_path, SPOOL_AFTER, budget)
    with pytest.raises(BodyTooLarge):
        feed_all(body, b"x" * 3 * SPOOL_AFTER)
    body.close()
    assert budget.used == 0


def placed_body(budget: ByteBudget, length: int, gzipped: bool = False):
    body = ReceivedBody(gzipped, 100 * SPOOL_AFTER, spool_after=SPOOL_AFTER)
    return body, body.place(length, budget)


def test_a_plain_body_of_declared_length_is_received_in_one_buffer_without_copies():
    data = os.urandom(SPOOL_AFTER)
    budget = ByteBudget(SPOOL_AFTER)
    body, buffer = placed_body(budget, len(data))
    assert buffer is not None and budget.used == len(data)
    buffer[: len(data) // 2] = data[: len(data) // 2]  # read there by the connection
    body.feed(buffer[: len(data) // 2])
    body.feed(data[len(data) // 2 :])  # a piece from elsewhere is copied into place
    whole = body.finish()
    assert whole == data and whole is buffer.obj
    body.close()
    assert budget.used == 0


def test_buffers_made_beforehand_share_a_budget_and_the_rest_come_piece_by_piece():
    budget = ByteBudget(SPOOL_AFTER)
    first, buffer = placed_body(budget, SPOOL_AFTER // 2 + 1)
    assert buffer is not None
    second, refused = placed_body(budget, SPOOL_AFTER // 2)
    assert refused is None and budget.used == SPOOL_AFTER // 2 + 1
    feed_all(second, b"y" * (SPOOL_AFTER // 2))  # received as before
    assert second.finish() == b"y" * (SPOOL_AFTER // 2)
    first.close()
    second.close()
    assert budget.used == 0


@pytest.mark.parametrize(("length", "gzipped"), [(0, False), (SPOOL_AFTER + 1, False), (10, True)])
def test_no_buffer_beforehand_for_an_empty_a_large_or_a_gzip_body(length, gzipped):
    budget = ByteBudget(100 * SPOOL_AFTER)
    body, buffer = placed_body(budget, length, gzipped)
    assert buffer is None and budget.used == 0
    body.close()


def test_more_bytes_than_declared_are_kept_whole_and_the_buffer_given_back():
    budget = ByteBudget(SPOOL_AFTER)
    body, buffer = placed_body(budget, 10)
    assert buffer is not None
    body.feed(b"0123456789")
    body.feed(b"abc")
    assert budget.used == 0
    assert body.finish() == b"0123456789abc"
    body.close()
