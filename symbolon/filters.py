"""The filter expressions of the JSON API (docs/accounts.md, "Filters"), as SQL conditions.

Every parser returns SQL fragments with numbered placeholders, so user input never reaches SQL
text. A value that cannot be parsed raises FilterError, answered as
``400 {"errors": {field: [message]}}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

OPERATORS = ("<=", ">=", "<", ">", "=")
SIZE_UNITS = {
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
}
SIZE_TERM = re.compile(r"^(<=|>=|<|>|=)?\s*(\d+(?:\.\d+)?)\s*([a-z]*)$", re.IGNORECASE)
COUNT_TERM = re.compile(r"^(<=|>=|<|>|=)?\s*(\d+)$")
# The largest value of PostgreSQL's bigint and integer: a filter value must fit its column.
BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1


class FilterError(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"errors": {self.field: [self.message]}}


@dataclass
class Query:
    """WHERE conditions and their arguments, built up filter by filter."""

    conditions: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, sql: str, *values: Any) -> None:
        """``sql`` uses ``{}`` for each value; they become $n placeholders."""
        placeholders = []
        for value in values:
            self.args.append(value)
            placeholders.append(f"${len(self.args)}")
        self.conditions.append(sql.format(*placeholders))

    @property
    def where(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "TRUE"


def _split_operator(term: str) -> tuple[str, str]:
    for op in OPERATORS:
        if term.startswith(op):
            return op, term[len(op) :].strip()
    return "=", term


def _parse_moment(value: str, now: datetime) -> tuple[datetime, bool] | None:
    """A datetime and whether it names a whole day; None for null/incomplete."""
    lowered = value.lower()
    if lowered in ("null", "incomplete"):
        return None
    today = datetime.combine(now.date(), time(), tzinfo=UTC)
    if lowered == "today":
        return today, True
    if lowered == "yesterday":
        return today - timedelta(days=1), True
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC), True
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(value) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    whole_day = parsed.time() == time() and parsed.microsecond == 0
    return parsed, whole_day


def date_filter(
    query: Query, column: str, name: str, expression: str, now: datetime | None = None
) -> None:
    now = now or datetime.now(UTC)
    for raw in expression.split(","):
        term = raw.strip()
        if not term:
            continue
        op, value = _split_operator(term)
        try:
            moment = _parse_moment(value, now)
        except ValueError:
            raise FilterError(name, f"Unable to parse '{raw.strip()}'") from None
        if moment is None:
            query.add(f"{column} IS NULL")
            continue
        when, whole_day = moment
        try:
            # In UTC, the bounds must stay within Python's years 1 to 9999.
            when = when.astimezone(UTC)
            if op == "=" and whole_day:
                bounds: tuple[datetime, ...] = (when, when + timedelta(days=1))
                sql = f"{column} >= {{}} AND {column} < {{}}"
            elif op == ">":
                bounds, sql = (when + timedelta(seconds=1),), f"{column} >= {{}}"
            else:
                bounds, sql = (when,), f"{column} {op} {{}}"
        except OverflowError:
            raise FilterError(name, f"'{raw.strip()}' is out of range") from None
        query.add(sql, *bounds)


def count_filter(
    query: Query, column: str, name: str, expression: str, maximum: int = BIGINT_MAX
) -> None:
    """``maximum``: the largest value the column can hold."""
    for raw in expression.split(","):
        term = raw.strip()
        if not term:
            continue
        match = COUNT_TERM.match(term)
        if not match:
            raise FilterError(name, f"'{term}' is not a valid count")
        digits = match.group(2).lstrip("0")
        # Compared by length first: a long enough string of digits is more than int() takes.
        if len(digits) > len(str(maximum)) or int(digits or "0") > maximum:
            raise FilterError(name, f"'{term}' is too large: counts go up to {maximum}")
        query.add(f"{column} {match.group(1) or '='} {{}}", int(digits or "0"))


def size_filter(query: Query, column: str, name: str, expression: str) -> None:
    for raw in expression.split(","):
        term = raw.strip()
        if not term:
            continue
        match = SIZE_TERM.match(term)
        unit = (match.group(3) or "b").lower() if match else ""
        if not match or unit not in SIZE_UNITS:
            raise FilterError(name, f"'{term}' is not a valid size")
        value = int(Decimal(match.group(2)) * SIZE_UNITS[unit])
        if value > BIGINT_MAX:
            raise FilterError(name, f"'{term}' is too large: sizes go up to {BIGINT_MAX} bytes")
        query.add(f"{column} {match.group(1) or '='} {{}}", value)


# Far past any real last page, and small enough that page * batch fits PostgreSQL's bigint.
MAX_PAGE = 10**12


def page_number(value: str | None) -> int:
    if value is None or value == "":
        return 1
    try:
        return min(max(1, int(value)), MAX_PAGE)
    except ValueError:
        raise FilterError("page", f"Not a number '{value}'") from None


def ordering(
    sort: str | None, reverse: str | None, allowed: tuple[str, ...], default: str
) -> tuple[str, bool]:
    """(column, descending); the default sort is newest first."""
    if sort is None:
        return default, True
    if sort not in allowed:
        raise FilterError("sort", f"Invalid sort '{sort}'")
    return sort, reverse == "true"


def like_pattern(text: str) -> str:
    """``%text%`` for LIKE/ILIKE, with the wildcards in ``text`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
