"""Indexed routing (server/routing.py): the same answers as Tornado's in-order rule search."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
import tornado.web
from tornado import httputil
from tornado.routing import PathMatches, Rule

from symbolon.handlers.base import NotFoundHandler
from symbolon.handlers.download import DownloadHandler
from symbolon.server.app import make_app
from symbolon.server.routing import IndexedRouter, RuleIndex, first_segments, path_segment

UUID = "de305d54-75b4-431b-adb2-eb6b9e546014"
# Values tried for each captured group of a route, to make a path the route matches.
GROUP_VALUES = ["1", "0123456789abcdef", UUID, "ABCDEF0123", "xul.pdb", "debuginfo", "x"]
# Paths no route's own regex spells: download paths whose first segment is another route's,
# routes that Tornado cannot reverse, near misses, unknown paths.
EXTRA_PATHS = [
    "/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym",
    "/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym?try=1",
    "/xul.pdb/NOTHEX/xul.sym",
    "/xul%2Fpdb/ABC/xul.sym",
    "/api/ABC/y",
    "/api/x/ABC/y",
    "/api/syminfo/xul.pdb/ABC",
    "/api/syminfo/xul.pdb/ABC/x",
    "/%61pi/syminfo/xul.pdb/ABC",
    "/Api/ABC/y",
    "/try/ABC/y",
    "/try/xul.pdb/ABC/xul.sym",
    "/try/xul.pdb/XYZ/xul.sym",
    "/firefox/ABC/y",
    "/firefox/xul.pdb/ABC/xul.sym",
    "/b2g/xul.pdb/ABC/xul.sym",
    "/firefoxx/xul.pdb/ABC/xul.sym",
    "/buildid/ABC/debuginfo",
    "/buildid/ABC/executable",
    "/buildid/ABC/section/.text",
    "/buildid/ABC/source/usr/src/a.c",
    "/uploads/ABC/x",
    "/uploads/a/b/c",
    "/uploads/",
    "/uploads",
    "/downloads/missing/x",
    "/downloads/ABC/x",
    "/crashes/bp-" + UUID,
    "/crashes/" + UUID + "/dumps/upload_file_minidump",
    "/help/x",
    "/status/ABC/x",
    "/static/ABC/x",
    "/storage/0123456789abcdef/a/b",
    "/storage/ABC/x",
    "/submit/",
    "/__heartbeat__/",
    "/status\n",
    "/__heartbeat__\n",
    "/",
    "//",
    "//ABC/x",
    "",
    "*",
    "http://example.com/xul.pdb/ABC/xul.sym",
    "/nothing",
    "/nothing/here",
    "/a/b/c/d",
]
METHODS = ["GET", "HEAD", "POST", "PUT"]


def request(
    method: str, path: str, host: str = "symbols.example.com"
) -> httputil.HTTPServerRequest:
    return httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine(method, path, "HTTP/1.1"),
        headers=httputil.HTTPHeaders({"Host": host}),
    )


def sample_paths(rule: Rule) -> list[str]:
    """Paths built from the rule's own pattern that its regex matches (none when Tornado
    cannot reverse it)."""
    matcher = rule.matcher
    assert isinstance(matcher, PathMatches)
    paths = []
    for values in itertools.product(GROUP_VALUES, repeat=matcher.regex.groups):
        try:
            path = matcher.reverse(*values)
        except ValueError:
            return []
        if path is not None and matcher.regex.match(path):
            paths.append(path)
            break
    return paths


def all_paths(rules: list[Rule]) -> list[str]:
    paths = [p for rule in rules for p in sample_paths(rule)]
    return [*dict.fromkeys([*paths, *EXTRA_PATHS])]


def dispatched(app: tornado.web.Application, method: str, path: str) -> tuple[Any, ...]:
    """The handler class and the arguments the app would give it."""
    asked = request(method, path)
    # Asks for timings: never answered from memory (server/immediate.py), always routed.
    asked.headers["Debug"] = "1"
    delegate: Any = app.find_handler(asked)
    delegate = getattr(delegate, "delegate", delegate)  # inside BoundedBody (server/app.py)
    return (
        delegate.handler_class,
        delegate.handler_kwargs,
        delegate.path_args,
        delegate.path_kwargs,
    )


def disagreements(
    app: tornado.web.Application, reference: tornado.web.Application, paths: list[str]
) -> list[tuple[str, str]]:
    return [
        (method, path)
        for method in METHODS
        for path in paths
        if dispatched(app, method, path) != dispatched(reference, method, path)
    ]


def plain_tornado(app: tornado.web.Application) -> tornado.web.Application:
    """The same rules, routed as Tornado routes them: each in order until one matches."""
    return tornado.web.Application(
        list(app.wildcard_router.rules), default_handler_class=NotFoundHandler
    )


@pytest.fixture
def routed(runtime):
    assert runtime.collector is not None, "the /submit route must be among those checked"
    return make_app(runtime)


def test_every_route_answers_as_plain_tornado_routing_does(routed):
    assert isinstance(routed.default_router.rules[-1].target, IndexedRouter)
    rules = routed.wildcard_router.rules
    paths = all_paths(rules)
    # Every route matches some of the paths (the next test's check covers them all).
    requests = [request(method, path) for method in METHODS for path in paths]
    unmatched = [r for r in rules if not any(r.matcher.match(req) is not None for req in requests)]
    assert unmatched == []
    assert disagreements(routed, plain_tornado(routed), paths) == []


def test_the_candidates_hold_every_rule_that_matches_in_order(routed):
    rules = routed.wildcard_router.rules
    index = RuleIndex(rules)
    for method, path in itertools.product(METHODS, all_paths(rules)):
        req = request(method, path)
        matching = [rule for rule in rules if rule.matcher.match(req) is not None]
        candidates = index.candidates(req.path)
        assert [rule for rule in candidates if rule in matching] == matching, (method, path)


def test_the_index_skips_the_other_routes_of_a_download(routed):
    index = RuleIndex(routed.wildcard_router.rules)
    hit = index.candidates("/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym")
    assert len(hit) <= 3, hit  # the storage upload route (by method) and the download route
    assert hit[-1].target is DownloadHandler


@pytest.mark.parametrize("broken", ["dropped", "reversed"])
def test_an_index_that_drops_or_reorders_a_candidate_is_caught(routed, broken):
    reference = plain_tornado(routed)
    router = routed.default_router.rules[-1].target
    rules = routed.wildcard_router.rules
    paths = all_paths(rules)

    class Broken(RuleIndex):
        def candidates(self, path: str) -> list[Rule]:
            found = super().candidates(path)
            return found[1:] if broken == "dropped" else found[::-1]

    router.index = Broken(rules)
    assert disagreements(routed, reference, paths) != []


def test_rules_added_later_are_routed(routed):
    class Added(tornado.web.RequestHandler):
        pass

    # Before the download route, which would also match it.
    routed.wildcard_router.rules.insert(0, Rule(PathMatches("/added/ABC/x"), Added))
    assert dispatched(routed, "GET", "/added/ABC/x")[0] is Added
    routed.wildcard_router.add_rules([Rule(PathMatches(r"/named/(\d+)"), Added, name="named")])
    assert dispatched(routed, "GET", "/named/1")[0] is Added
    assert routed.reverse_url("named", 7) == "/named/7"
    routed.add_handlers(r"other\.example$", [("/xul.pdb/ABC/xul.sym", Added)])
    req = request("GET", "/xul.pdb/ABC/xul.sym", host="other.example")
    delegate: Any = routed.find_handler(req)
    assert getattr(delegate, "delegate", delegate).handler_class is Added
    assert dispatched(routed, "GET", "/xul.pdb/ABC/xul.sym")[0] is DownloadHandler


@pytest.mark.parametrize(
    ("pattern", "segments"),
    [
        ("/api/stats/", {"api"}),
        ("/__heartbeat__$", {"__heartbeat__"}),
        (r"/missingsymbols\.csv$", {"missingsymbols.csv"}),
        ("/$", {""}),
        ("^/x/y", {"x"}),
        ("/(?:a|b/c|d)/.*$", {"a", "b", "d"}),
        ("/(?![^/]+/x$)(?:a|b)/.*$", {"a", "b"}),
        ("/([^/]+)/x$", None),
        ("/abc", None),  # no ``$``: matches /abcd too
        ("/abc/?x$", None),
        ("/ab?/x$", None),
        ("/ab*/x$", None),
        ("/ab{2}/x$", None),
        ("/a|/b", None),
        ("/a/x|/b/x", None),
        ("/(?:a|b)?/x$", None),
        ("/(?:a/c)?/x$", None),
        ("/(?:a|b[c])/x$", None),
        (r"/a\d/x$", None),
        (r"/a\x2f", None),
        ("(?i)/a/", None),
        ("/a.b/", None),
    ],
)
def test_first_segments(pattern, segments):
    expected = None if segments is None else frozenset(segments)
    assert first_segments(re.compile(pattern)) == expected


def test_first_segments_hold_for_every_path_a_regex_matches():
    patterns = [
        "/api/stats/",
        "/(?:a|b/c|d)/.*$",
        "/(?![^/]+/x$)(?:a|b)/.*$",
        r"/a\.b$",
        "/a/b$",
        "/a$",
        "/$",
        "//x",
    ]
    pieces = ["", "/", "a", "b", "c", "d", "x", "a.b", "api", "stats", "\n", "ab"]
    paths = {"".join(p) for n in range(1, 6) for p in itertools.product(pieces, repeat=n)}
    for pattern in patterns:
        regex = re.compile(pattern)
        segments = first_segments(regex)
        assert segments is not None, pattern
        for path in paths:
            segment = path_segment(path)
            if regex.match(path) and not (segment or "").endswith("\n"):
                assert segment in segments, (pattern, path)


@pytest.mark.gen_test
async def test_a_download_and_an_api_route_answer_through_the_server(http_client, base_url):
    download = await http_client.fetch(
        base_url + "/api/ABC/xul.sym", follow_redirects=False, raise_error=False
    )
    assert download.code == 404
    assert download.body == b"Symbol Not Found"  # the download route's, not the JSON 404
    api = await http_client.fetch(base_url + "/api/openapi.json", raise_error=False)
    assert api.code == 200 and api.headers["Content-Type"] == "application/json"
    unknown = await http_client.fetch(base_url + "/api/ABC", raise_error=False)
    assert unknown.code == 404 and b'"Not Found"' in unknown.body
