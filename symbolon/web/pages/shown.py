"""How the pages of uploads, crashes, users and status show the values the API gives."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime

from symbolon.filters import FilterError
from symbolon.web.parts import with_query

# What a filter never holds: the control characters Tornado scrubs from query arguments.
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def moment(value: str | None) -> datetime | None:
    """An API timestamp (``2025-01-31T10:20:30.123Z``) as a datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def shown_time(value: str | None) -> str | None:
    """An API timestamp as the pages show times, to the second."""
    found = moment(value)
    return found.strftime("%Y-%m-%d %H:%M:%S UTC") if found is not None else None


def duration(start: str | None, end: str | None) -> str | None:
    """How long from ``start`` to ``end`` (API timestamps), for people: ``1.2 s``, ``3 min 4 s``."""
    begun, done = moment(start), moment(end)
    if begun is None or done is None:
        return None
    seconds = max(0.0, (done - begun).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def query_of(arguments: Mapping[str, list[bytes]], names: tuple[str, ...]) -> dict[str, str]:
    """The non-empty query arguments among ``names``: empty form fields mean no filter. Bytes
    that are not UTF-8 read as U+FFFD; a control character (a NUL, which PostgreSQL refuses in
    text) is a :class:`FilterError` for its field."""
    found = {}
    for name in names:
        values = arguments.get(name)
        if values:
            value = values[-1].decode("utf-8", "replace").strip()
            if CONTROL.search(value):
                raise FilterError(name, "must not hold control characters (such as NUL)")
            if value:
                found[name] = value
    return found


def sorted_url(path: str, kept: Mapping[str, str]) -> Callable[[str, bool], str]:
    """The ``sort_url`` of a Table: ``path`` ordered by a column, with the filters ``kept``."""

    def url(column: str, descending: bool) -> str:
        return with_query(path, kept, sort=column, reverse="true" if descending else "false")

    return url
