"""Helpers for the web page tests: fetch a page as a caller, and read what a person would see."""

from __future__ import annotations

import html.parser
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.accounts import Caller


@dataclass
class Page:
    status: int
    headers: Any
    body: str
    title: str = ""
    headings: list[tuple[str, str]] = field(default_factory=list)  # (tag, text)
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, href)
    forms: list[dict[str, Any]] = field(default_factory=list)  # action, method, fields
    text: str = ""

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def h1(self) -> str:
        return next(text for tag, text in self.headings if tag == "h1")

    def navigation(self) -> dict[str, str]:
        """The header's navigation entries: label → path."""
        found = re.search(r'<nav class="site-nav".*?</nav>', self.body, re.DOTALL)
        return dict(read(200, {}, found.group(0)).links) if found else {}

    def form(self, action: str) -> dict[str, Any]:
        return next(f for f in self.forms if f["action"] == action)


class _Reader(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.headings: list[tuple[str, str]] = []
        self.links: list[tuple[str, str]] = []
        self.forms: list[dict[str, Any]] = []
        self.texts: list[str] = []
        self._open: list[tuple[str, dict[str, str | None], list[str]]] = []
        self._form: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("title", "h1", "h2", "h3", "a"):
            self._open.append((tag, a, []))
        if tag == "form":
            self._form = {"action": a.get("action"), "method": a.get("method"), "fields": {}}
            self.forms.append(self._form)
        if self._form is not None and tag in ("input", "select", "textarea", "button"):
            name = a.get("name")
            if name:
                value = a.get("value") or ""
                if a.get("type") == "checkbox":
                    self._form["fields"].setdefault(name, []).append(value)
                else:
                    self._form["fields"][name] = value

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                _, a, parts = self._open.pop(i)
                text = " ".join("".join(parts).split())
                if tag == "title":
                    self.title = text
                elif tag == "a":
                    self.links.append((text, a.get("href") or ""))
                else:
                    self.headings.append((tag, text))
                break

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        for _, _, parts in self._open:
            parts.append(data)


def read(status: int, headers: Any, body: str) -> Page:
    reader = _Reader()
    reader.feed(body)
    return Page(
        status=status,
        headers=headers,
        body=body,
        title=reader.title,
        headings=reader.headings,
        links=reader.links,
        forms=reader.forms,
        text=" ".join(" ".join(reader.texts).split()),
    )


async def fetch_page(
    http_client: Any,
    base_url: str,
    caller: Caller,
    path: str,
    method: str = "GET",
    form: dict[str, Any] | None = None,
    csrf: bool = True,
    headers: dict[str, str] | None = None,
) -> Page:
    """A page as ``caller`` sees it, redirects not followed. A POST sends ``form`` (a list
    value repeats its field) with the caller's CSRF token as a form field unless ``csrf`` is
    False, as the pages' own forms do."""
    sent = {**caller.headers, **(headers or {})}
    body = None
    if method != "GET":
        fields = dict(form or {})
        if caller.csrf and csrf:
            fields["csrf_token"] = caller.csrf
        body = urllib.parse.urlencode(fields, doseq=True)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    response = await http_client.fetch(
        base_url + path,
        method=method,
        headers=sent,
        body=body,
        raise_error=False,
        follow_redirects=False,
    )
    return read(response.code, response.headers, response.body.decode() if response.body else "")
