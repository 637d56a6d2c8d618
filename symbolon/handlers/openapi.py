"""``GET /api/openapi.json``: the OpenAPI description of the JSON API (docs/api.md)."""

from __future__ import annotations

import json
from functools import cache

from symbolon import openapi
from symbolon.handlers.base import BaseHandler


@cache
def _document() -> str:
    return json.dumps(openapi.description())


class OpenApiHandler(BaseHandler):
    def prepare(self) -> None:
        """Public, like the API's documentation: no token is checked, none is needed."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Access-Control-Allow-Origin", "*")  # for API explorers in a browser
        self.finish(_document())


ROUTES = [(r"/api/openapi\.json", OpenApiHandler)]
