"""Property-based fuzzing of the JSON API from its OpenAPI description (docs/api.md).

Schemathesis generates requests for every described operation, valid ones and invalid ones, and
each answer must be no 5xx, a documented status and match its documented JSON shape. The server
runs on an event loop of its own in a thread, so that schemathesis' blocking client can call it;
its database is a fresh one, seeded with a little of everything so that listings have rows.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from symbolon import openapi
from symbolon.accounts.permissions import Permission
from tests.accounts import Caller, make_upload, make_user, token_of
from tests.conftest import served

# Per operation, caller and generation mode; small enough for about a minute on two cores.
EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 5}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations a caller holding permissions does not fuzz, and why.
ANONYMOUS_ONLY = {
    # Completing a pending upload (the fuzzer's own v2 uploads have small ids it will guess)
    # hands a task to the broker; no worker of this test's runs it.
    ("POST", "/upload/v2/{id}/complete"): "hands work to the task queue",
}
# Last: the fuzzer may delete the very token it calls with, or take the superuser's rights away.
LAST = {("DELETE", "/api/tokens/token/{id}"), ("POST", "/api/_users/user/{id}")}
# Values that break parsers: beyond 64 bits, the ends of the calendar, control characters.
EDGE_VALUES = (
    str(2**63),
    "9" * 40,
    "9999-12-31",
    ">9999-12-31T23:59:59",
    "<0001-01-01T00:00:00+14:00",
    ">=99999999999gb",
    "\x00",
    "",
)


class ThreadServer:
    """The app served on an event loop in a thread of its own."""

    def __init__(self, settings: Any):
        self.server = served(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def __enter__(self) -> str:
        self.thread.start()
        _, base = self.run(self.server.__aenter__())
        return base

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.__aexit__())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=60)
            self.loop.close()


async def seed(rt: Any) -> dict[str, dict[str, str]]:
    """A superuser with uploads, files, missing symbols, a token and a browser session; returns
    the headers of each kind of caller."""
    owner = await make_user(rt, superuser=True)
    other = await make_user(rt)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    await make_upload(rt, owner, files=("v1/xul.pdb/ABC/xul.sym", "v1/xul.pdb/ABC/xul.pd_"))
    await make_upload(rt, other, try_symbols=True, completed=False, created_at=long_ago)
    await rt.db.execute(
        """UPDATE file_uploads SET debug_filename = 'xul.pdb', debug_id = 'ABC',
                  code_file = 'xul.dll', code_id = 'C0DE', generator = 'dump_syms'"""
    )
    await rt.db.execute(
        """INSERT INTO missing_symbols (hash, symbol, debugid, filename, code_file, count)
           VALUES ('h1', 'a.pdb', 'AAAA', 'a.sym', 'a.dll', 3), ('h2', 'b.pdb', 'BB', 'b.sym',
                   NULL, 1)"""
    )
    # Every permission a token may carry: upload_try_symbols cannot go with upload_symbols.
    permissions = (Permission.UPLOAD_SYMBOLS, Permission.VIEW_ALL_UPLOADS, Permission.MANAGE_TOKENS)
    key = await token_of(rt, owner, tuple(permissions))
    session = await Caller.with_session(rt, owner)
    assert session.csrf is not None
    return {
        "anonymous": {},
        "token": {"Auth-Token": key},
        "session": {**session.headers, "X-CSRFToken": session.csrf},
    }


@pytest.fixture
def fuzzed(settings, fresh_database) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """(base URL, each caller's headers)."""
    # An upload that is accepted answers 202 at once instead of waiting for a worker.
    own = settings.replace(database_url=fresh_database, upload_wait_seconds=0.1)
    server = ThreadServer(own)
    with server as base:
        callers = server.run(seed(server.server.runtime))
        yield base, callers


def operations(schema: Any) -> list[Any]:
    found = [result.ok() for result in schema.get_all_operations()]
    return sorted(found, key=lambda op: (op.method.upper(), op.path) in LAST)


def chosen_cases(operation: Any) -> Iterator[Any]:
    """A valid request the fuzzer is unlikely to make, then one case per edge value and query
    parameter, form field or numeric path parameter."""
    form = "application/x-www-form-urlencoded"
    if (operation.method.upper(), operation.path) == ("POST", "/api/tokens/"):
        # Permission ids are 1 to 4 in a fresh database: 4 is manage_tokens.
        yield operation.Case(body={"permissions": "4", "expires": "30"}, media_type=form)
    path = {p.name: "1" for p in operation.path_parameters if "[0-9]" in str(p.definition)}
    if len(path) != len(list(operation.path_parameters)):
        return  # the path's own syntax decides, and the fuzzer covers it
    forms = [body for body in operation.body if body.media_type == form]
    fields = [name for body in forms for name in body.definition["schema"]["properties"]]
    for value in EDGE_VALUES:
        for parameter in operation.query:
            yield operation.Case(path_parameters=path, query={parameter.name: value})
        for name in fields:
            yield operation.Case(
                path_parameters=path,
                body={name: value},
                media_type=form,
            )
        if value and "/" not in value:
            for name in path:
                yield operation.Case(path_parameters={**path, name: value})


def fuzz(base: str, headers: dict[str, str], skip: dict[tuple[str, str], str]) -> list[str]:
    """Fuzz every operation; returns a description of each failure (the first per operation)."""
    schema = schemathesis.openapi.from_dict(openapi.description())
    session = requests.Session()
    failures = []
    for operation in operations(schema):
        if (operation.method.upper(), operation.path) in skip:
            continue
        for case in chosen_cases(operation):
            response = case.call(base_url=base, session=session, headers=headers, timeout=60)
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(
                    f"{operation.method.upper()} {operation.path} (chosen): {exc}"[:3000]
                )
                break  # the first is enough to go on
        for mode, examples in EXAMPLES.items():

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=examples,
                derandomize=True,  # the same examples on every run
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                response = case.call(base_url=base, session=session, headers=headers, timeout=60)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                pass  # nothing to get wrong in a request without parameters or body
            except (Exception, BaseExceptionGroup) as exc:  # all operations, then all failures
                failures.append(
                    f"{operation.method.upper()} {operation.path} ({mode}): {exc}"[:3000]
                )
    return failures


@pytest.mark.parametrize("caller", ["anonymous", "token", "session"])
def test_fuzz(fuzzed, caller):
    """Anonymous; a token with every permission a token may hold; a superuser's browser session
    (the only caller user administration accepts)."""
    base, callers = fuzzed
    failures = fuzz(base, callers[caller], {} if caller == "anonymous" else ANONYMOUS_ONLY)
    assert not failures, "\n\n".join(failures)
