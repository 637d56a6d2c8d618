"""The data of the shared template parts: tables, pagination (docs/web.md).

Templates lay these out with ``{% module Template("parts/table.html", table=...) %}`` and
``{% module Template("parts/pager.html", pager=...) %}``; every value goes through the
template's escaping, so cells may hold anything a user typed.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Link:
    """A cell that links somewhere on this site."""

    text: str
    href: str
    kind = "link"


@dataclass(frozen=True)
class Code:
    """A cell shown in a monospace font (ids, file names)."""

    text: str
    kind = "code"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sort: str | None = None  # the ``sort`` value that orders by this column, if any
    numeric: bool = False
    time: bool = False  # a date and time: kept on one line
    wrap: bool = False  # a long id that may break anywhere to fit


@dataclass
class Table:
    """Rows of cells under ``columns``; a cell is text, a number, None, a Link or a Code."""

    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Any]]
    caption: str = ""
    empty: str = "Nothing to show."
    sort: str | None = None
    reverse: bool = False
    # The URL of the page ordered by a column: (sort, reverse) → URL.
    sort_url: Callable[[str, bool], str] | None = None
    stack: bool = True  # on a phone, each row becomes a block of labelled lines

    def header_link(self, column: Column) -> str | None:
        if column.sort is None or self.sort_url is None:
            return None
        # Clicking the current column flips it; another column starts newest or largest first.
        reverse = not self.reverse if column.sort == self.sort else True
        return self.sort_url(column.sort, reverse)

    def aria_sort(self, column: Column) -> str | None:
        if column.sort is None or column.sort != self.sort:
            return None
        return "descending" if self.reverse else "ascending"


def with_query(path: str, query: Mapping[str, str | None], **changes: str | None) -> str:
    """``path`` with ``query`` changed by ``changes`` (None or "" drops a key)."""
    merged = {**query, **changes}
    kept = {k: v for k, v in merged.items() if v not in (None, "")}
    return f"{path}?{urllib.parse.urlencode(kept)}" if kept else path


@dataclass
class Pager:
    """Page ``page`` of ``total`` items, ``per_page`` a page, with links that keep ``query``."""

    page: int
    per_page: int
    total: int
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    window: int = 2  # page numbers shown either side of the current one

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def beyond(self) -> bool:
        """Past the last page of a listing that has items (a stale link, a typed number)."""
        return self.total > 0 and self.page > self.pages

    @property
    def first_item(self) -> int:
        return 0 if self.total == 0 or self.beyond else (self.page - 1) * self.per_page + 1

    @property
    def last_item(self) -> int:
        return 0 if self.beyond else min(self.total, self.page * self.per_page)

    def empty(self, text: str) -> str:
        """What an empty table on this page says: ``text``, or that the page is past the last."""
        return f"No items on page {self.page:,}." if self.beyond else text

    def url(self, page: int) -> str:
        return with_query(self.path, self.query, page=str(page) if page > 1 else None)

    def numbers(self) -> list[int | None]:
        """Page numbers to link, None where some are left out."""
        shown = {1, self.pages, *range(self.page - self.window, self.page + self.window + 1)}
        numbers = sorted(n for n in shown if 1 <= n <= self.pages)
        out: list[int | None] = []
        for n in numbers:
            if out and n - (out[-1] or 0) > 1:
                out.append(None)
            out.append(n)
        return out
