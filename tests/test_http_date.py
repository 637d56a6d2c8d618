"""The Date header, formatted once a second (handlers/dates.py): right, and moving on."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest
import tornado.web

from symbolon.handlers.dates import CachedDate, http_date
from tests.conftest import wait_until

PATHS = [
    "/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym",  # the download route
    "/api/openapi.json",
    "/nothing/here",  # NotFoundHandler
    "/uploads",  # Tornado's RedirectHandler, to /uploads/
]


def test_clear_leaves_a_handler_as_tornados_clear_does():
    handler = CachedDate.__new__(CachedDate)  # clear alone, without a request
    CachedDate.clear(handler)
    ours = dict(vars(handler))
    tornado.web.RequestHandler.clear(handler)
    theirs = dict(vars(handler))
    assert ours.keys() == theirs.keys()
    ours_headers = [h for h in ours.pop("_headers").get_all() if h[0] != "Date"]
    theirs_headers = [h for h in theirs.pop("_headers").get_all() if h[0] != "Date"]
    assert ours_headers == theirs_headers
    assert ours == theirs


def date_of(response) -> int:
    return int(parsedate_to_datetime(response.headers["Date"]).timestamp())


@pytest.mark.gen_test(timeout=30)
async def test_every_answer_carries_the_current_date(http_client, base_url):
    for path in PATHS:
        before = int(time.time())
        response = await http_client.fetch(
            base_url + path, follow_redirects=False, raise_error=False
        )
        assert before <= date_of(response) <= time.time(), path
        assert response.headers.get_list("Date") == [response.headers["Date"]]


@pytest.mark.gen_test(timeout=30)
async def test_the_date_moves_on_with_the_clock(http_client, base_url):
    path = base_url + PATHS[0]
    first = await http_client.fetch(path, raise_error=False)
    assert await wait_until(lambda: time.time() >= date_of(first) + 1, seconds=5)
    second = await http_client.fetch(path, raise_error=False)
    assert date_of(second) > date_of(first)
    assert date_of(second) <= time.time()


def test_http_date_is_tornados_date_for_now():
    before = int(time.time())
    date = int(parsedate_to_datetime(http_date()).timestamp())
    assert before <= date <= time.time()
