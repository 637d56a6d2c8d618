"""Request validation (docs/symbolication.md, "Requests and errors"): order of checks, exact
titles, error bodies."""

from __future__ import annotations

import json

import markus
import pytest
from markus.testing import MetricsMock

from symbolon.symbolication import request

OK_MODULES = [["libxul.so", "ABCDEF"]]
OK_STACKS = [[[0, 1]]]


def job(modules=None, stacks=None):
    return {"memoryMap": OK_MODULES if modules is None else modules, "stacks": stacks or OK_STACKS}


def module_error(j: int, what: str, i: int = 0) -> str:
    return f"job {i} has invalid modules: module index {j} {what}"


def stack_error(s: int, f: int, what: str, i: int = 0) -> str:
    return f"job {i} has invalid stacks: stack {s} frame {f} {what}"


# (body, title, request_error reason or None); every title, and the reference's 500s made 400s.
CASES = [
    (b"", "Payload is not valid JSON", "bad_json"),
    (b"{", "Payload is not valid JSON", "bad_json"),
    (b"a=1&b=2", "Payload is not valid JSON", "bad_json"),
    (b'{"stacks": "\xff"}', "Payload is not valid JSON", "bad_json"),  # not UTF-8
    (
        {"jobs": [job()] * 11},
        "please limit number of jobs in a single request to <= 10",
        "too_many_jobs",
    ),
    (
        {"jobs": "abcdefghijk"},
        "please limit number of jobs in a single request to <= 10",
        "too_many_jobs",
    ),
    ({}, "job 0 is invalid: no stacks specified", None),
    ({"memoryMap": []}, "job 0 is invalid: no stacks specified", None),
    ({"stacks": []}, "job 0 is invalid: no memoryMap specified", None),
    ([job()], "job 0 is invalid", None),
    ("just a string", "job 0 is invalid", None),
    (5, "job 0 is invalid", None),
    (True, "job 0 is invalid", None),
    (None, "job 0 is invalid", None),
    ({"jobs": None}, "job 0 is invalid", None),
    ({"jobs": 3}, "job 0 is invalid", None),
    ({"jobs": "ab"}, "job 0 is invalid", None),
    ({"jobs": [job(), "x"]}, "job 1 is invalid", None),
    ({"jobs": [job(), {"memoryMap": []}]}, "job 1 is invalid: no stacks specified", None),
    (job(modules={}), "job 0 has invalid modules: modules must be a list", "invalid_modules"),
    (
        job(modules=[["a.so"]]),
        module_error(0, "does not have a debug_filename and debug_id"),
        "invalid_modules",
    ),
    (
        job(modules=["a.so"]),
        module_error(0, "does not have a debug_filename and debug_id"),
        "invalid_modules",
    ),
    (
        job(modules=[["a.so", "A", "B"]]),
        module_error(0, "does not have a debug_filename and debug_id"),
        "invalid_modules",
    ),
    (
        job(modules=[["a.so", "A"], ["(", "A"]]),
        module_error(1, "has an invalid debug_filename"),
        "invalid_modules",
    ),
    (
        job(modules=[["[abc.so", "A"]]),
        module_error(0, "has an invalid debug_filename"),
        "invalid_modules",
    ),
    (
        job(modules=[["a/b.so", "A"]]),
        module_error(0, "has an invalid debug_filename"),
        "invalid_modules",
    ),
    (
        job(modules=[["caf\u00e9.so", "A"]]),
        module_error(0, "has an invalid debug_filename"),
        "invalid_modules",
    ),
    (job(modules=[[5, "A"]]), module_error(0, "has an invalid debug_filename"), "invalid_modules"),
    (job(modules=[["a.so", "xyz"]]), module_error(0, "has an invalid debug_id"), "invalid_modules"),
    (
        job(modules=[["a.so", "  abc"]]),
        module_error(0, "has an invalid debug_id"),
        "invalid_modules",
    ),
    (job(modules=[["a.so", 123]]), module_error(0, "has an invalid debug_id"), "invalid_modules"),
    # Modules are checked before stacks.
    (
        {"stacks": "abc", "memoryMap": [["(", "A"]]},
        module_error(0, "has an invalid debug_filename"),
        "invalid_modules",
    ),
    (
        job(stacks="abc"),
        "job 0 has invalid stacks: stacks must be a list of lists",
        "invalid_stacks",
    ),
    (
        {"memoryMap": [], "stacks": []},
        "job 0 has invalid stacks: no stacks specified",
        "invalid_stacks",
    ),
    (
        job(stacks=[[[0, 1]], 5]),
        "job 0 has invalid stacks: stack 1 is not a list",
        "invalid_stacks",
    ),
    (
        job(stacks=[[[0, 1], [0]]]),
        stack_error(0, 1, "is not a list of two items"),
        "invalid_stacks",
    ),
    (job(stacks=[[[0, 1, 2]]]), stack_error(0, 0, "is not a list of two items"), "invalid_stacks"),
    (job(stacks=[[{"a": 1}]]), stack_error(0, 0, "is not a list of two items"), "invalid_stacks"),
    (job(stacks=[[["0", 1]]]), stack_error(0, 0, "has an invalid module_index"), "invalid_stacks"),
    (job(stacks=[[[0.0, 1]]]), stack_error(0, 0, "has an invalid module_index"), "invalid_stacks"),
    (
        job(stacks=[[[1, 1]]]),
        stack_error(0, 0, "has a module_index that isn't in modules"),
        "invalid_stacks",
    ),
    (
        job(stacks=[[[-2, 1]]]),
        stack_error(0, 0, "has a module_index that isn't in modules"),
        "invalid_stacks",
    ),
    (
        job(stacks=[[[0, 21376.0]]]),
        stack_error(0, 0, "has an invalid module_offset"),
        "invalid_stacks",
    ),
    (
        job(stacks=[[[0, "0x5380"]]]),
        stack_error(0, 0, "has an invalid module_offset"),
        "invalid_stacks",
    ),
    (
        job(stacks=[[[0, None]]]),
        stack_error(0, 0, "has an invalid module_offset"),
        "invalid_stacks",
    ),
    (job(stacks=[[[0, -2]]]), stack_error(0, 0, "has an invalid module_offset"), "invalid_stacks"),
    (
        b'{"memoryMap": [["a", "A"]], "stacks": [[[0, NaN]]]}',
        stack_error(0, 0, "has an invalid module_offset"),
        "invalid_stacks",
    ),
    (
        {"jobs": [job(), job(stacks=[[[0, 1]], [[0, 1], [0, -5]]])]},
        stack_error(1, 1, "has an invalid module_offset", i=1),
        "invalid_stacks",
    ),
    # Limits the reference did not have: each request's cost is bounded.
    (
        job(modules=[["a" * (request.MAX_DEBUG_FILENAME + 1), "AB"]]),
        module_error(0, "has an invalid debug_filename"),
        "invalid_modules",
    ),
    (
        job(modules=[["a.so", "A" * (request.MAX_DEBUG_ID + 1)]]),
        module_error(0, "has an invalid debug_id"),
        "invalid_modules",
    ),
    (
        job(modules=[["a.so", "AB"]] * (request.MAX_MODULES + 1)),
        f"job 0 has invalid modules: more than {request.MAX_MODULES} modules",
        "invalid_modules",
    ),
    (
        {"jobs": [job(stacks=[[[0, 1]] * (request.MAX_FRAMES // 2 + 1)])] * 2},
        f"please limit number of frames in a single request to <= {request.MAX_FRAMES}",
        "too_many_frames",
    ),
]


def body_of(payload) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


@pytest.mark.gen_test
@pytest.mark.parametrize(("payload", "title", "reason"), CASES)
async def test_bad_requests_answer_400_with_the_exact_title(
    http_client, base_url, payload, title, reason
):
    with MetricsMock() as mm:
        response = await http_client.fetch(
            base_url + "/symbolicate/v5", method="POST", body=body_of(payload), raise_error=False
        )
    assert response.code == 400
    assert response.body == json.dumps({"title": title}).encode()
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Vary"] == "Accept"
    errors = mm.filter_records("incr", stat="eliot.symbolicate.request_error")
    assert [r.tags for r in errors] == ([[f"reason:{reason}"]] if reason else [])
    assert not mm.filter_records("timing", stat="eliot.symbolicate.api")


@pytest.mark.gen_test
async def test_v4_ignores_jobs_and_has_no_job_limit(http_client, base_url):
    response = await http_client.fetch(
        base_url + "/symbolicate/v4",
        method="POST",
        body=json.dumps({"jobs": [job()] * 11}),
        raise_error=False,
    )
    assert response.code == 400
    assert json.loads(response.body) == {"title": "job 0 is invalid: no stacks specified"}


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/symbolicate/v5", "/symbolicate/v4"])
async def test_other_methods_answer_405(http_client, base_url, path):
    response = await http_client.fetch(base_url + path, raise_error=False)
    assert response.code == 405
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert json.loads(response.body) == {"title": "405 Method Not Allowed"}


@pytest.mark.gen_test
async def test_trailing_slash_is_not_routed(http_client, base_url):
    response = await http_client.fetch(
        base_url + "/symbolicate/v5/", method="POST", body="{}", raise_error=False
    )
    assert response.code == 404


@pytest.mark.gen_test
async def test_request_metrics(http_client, base_url):
    body = {"jobs": [{"memoryMap": [], "stacks": [[[-1, 1], [-1, 2]], [[-1, 3]]]}]}
    with MetricsMock() as mm:
        response = await http_client.fetch(
            base_url + "/symbolicate/v5",
            method="POST",
            body=json.dumps(body),
            headers={"TeckenProxied": "1"},
        )
        await http_client.fetch(
            base_url + "/symbolicate/v4", method="POST", body=json.dumps(body["jobs"][0])
        )
    assert response.code == 200
    proxied = mm.filter_records("incr", stat="eliot.symbolicate.proxied")
    assert [r.tags for r in proxied] == [["proxied:1"], ["proxied:0"]]
    jobs = mm.filter_records("histogram", stat="eliot.symbolicate.jobs_count")
    assert [(r.value, r.tags) for r in jobs] == [(1, ["version:v5"])]
    stacks = mm.filter_records("histogram", stat="eliot.symbolicate.stacks_count")
    assert [(r.value, r.tags) for r in stacks] == [(2, ["version:v5"]), (2, ["version:v4"])]
    frames = mm.filter_records("histogram", stat="eliot.symbolicate.frames_count")
    assert [r.value for r in frames] == [3, 3]
    api = mm.filter_records("timing", stat="eliot.symbolicate.api")
    assert [r.tags for r in api] == [["version:v5"], ["version:v4"]]


# -- the validation module on its own ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "<unknown>",
        "TestTuple",
        "IAccessible2proxy.dll.pdb",
        "libstdc++.so.6",
        "libgmodule-2.0.so.0.6600.1",
        "ASMO_449.so",
        "{e824f0e4-72f7-4295-8879-d8ff4bf348d2}.xpi",
        "Font Awesome 5 Free-Solid-900.otf",
        "",
        "a@b.so",
        "libfoo.so\n",  # the reference's "$" accepts one trailing newline
    ],
)
def test_valid_debug_filenames(name):
    assert request.validate_job(0, {"memoryMap": [[name, "ABC"]], "stacks": [[]]})


@pytest.mark.parametrize(
    "ident", ["000000000000000000000000000000000", "5F8599C48000", "12345", ""]
)
def test_valid_debug_ids(ident):
    assert request.validate_job(0, {"memoryMap": [["a.so", ident]], "stacks": [[]]})


def test_booleans_pass_as_integers_like_the_reference():
    parsed = request.validate_job(0, {"memoryMap": [["a", "A"]], "stacks": [[[False, True]]]})
    assert parsed.stacks == [[(0, 1)]]


def test_jobs_key_wins_over_a_top_level_job():
    payload = {"jobs": [], "stacks": [[[0, 1]]], "memoryMap": []}
    assert request.v5_jobs(payload) == []


def test_metrics_names_are_the_references():
    # The reference's names: eliot.* (plus STATSD_NAMESPACE when set).
    assert markus.get_metrics("eliot").prefix == "eliot"


def test_a_huge_jobs_string_is_refused_without_being_expanded():
    with pytest.raises(request.BadRequest) as caught:
        request.v5_jobs({"jobs": "x" * 10_000_000})
    assert caught.value.reason == "too_many_jobs"
