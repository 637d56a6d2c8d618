"""The OpenAPI description (docs/api.md): valid, served, and true to the route table."""

from __future__ import annotations

import json
import re

import pytest
import tornado.web
from openapi_spec_validator import validate

from symbolon import openapi
from symbolon.server.app import make_app


def route_table(app: tornado.web.Application) -> dict[str, type]:
    """Every route pattern of the app (without Tornado's trailing ``$``) and its handler."""
    routes = {}
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern  # type: ignore[attr-defined]
        routes[pattern.removesuffix("$")] = rule.target
    return routes


def template(pattern: str) -> str:
    """A route pattern as a path with ``{}`` for each captured segment."""
    return re.sub(r"\((?!\?:)[^()]*\)", "{}", pattern).replace("\\", "")


def described(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_the_description_is_valid_openapi():
    validate(openapi.description())


def test_every_route_is_described_or_excluded_with_a_reason(runtime):
    assert runtime.collector is not None, "the route to /submit must be in the table checked"
    routes = route_table(make_app(runtime))
    paths = {described(p) for p in openapi.description()["paths"]}
    # The redirects to a path with its trailing slash go with that path.
    slash_paths = {p[:-1] for p in [*paths, *openapi.EXCLUDED] if p.endswith("/")}
    unaccounted = [
        pattern
        for pattern, target in routes.items()
        if pattern not in openapi.EXCLUDED
        and template(pattern) not in paths
        and not (target is tornado.web.RedirectHandler and template(pattern) in slash_paths)
    ]
    assert unaccounted == []
    assert all(reason.strip() for reason in openapi.EXCLUDED.values())


def test_every_described_path_and_exclusion_is_routed(runtime):
    routes = route_table(make_app(runtime))
    templates = {template(p) for p in routes}
    assert [p for p in openapi.description()["paths"] if described(p) not in templates] == []
    assert [p for p in openapi.EXCLUDED if p not in routes] == []


def test_path_templates_name_their_parameters():
    for path, item in openapi.description()["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


@pytest.mark.gen_test
async def test_the_server_serves_it(http_client, base_url):
    response = await http_client.fetch(
        base_url + "/api/openapi.json", headers={"Auth-Token": "not a token"}, raise_error=False
    )
    assert response.code == 200  # public: a bad token is not even looked at
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == openapi.description()
