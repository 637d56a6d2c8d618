"""Crash ids and the receipt timestamp (docs/throttling.md, "Crash ids").

A crash id is a UUID4 whose last seven characters are rewritten: one throttle digit, then the UTC
date of receipt as ``YYMMDD``. Storage keys and downstream consumers read both back from the id, so
the date must come from the same instant as ``submitted_timestamp``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

# Lowercase only and anchored at both ends (fullmatch): a trailing newline must not pass.
CRASH_ID_RE = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{6}[0-9]{6}")

# The throttle digit is the throttler's result (throttling.engine.Result);
# CONTINUE (4) never decides.
ACCEPT_DIGIT, DEFER_DIGIT, REJECT_DIGIT, FAKEACCEPT_DIGIT = 0, 1, 2, 3
THROTTLE_DIGITS = frozenset({ACCEPT_DIGIT, DEFER_DIGIT, REJECT_DIGIT, FAKEACCEPT_DIGIT})
# Digits a stored crash can carry; strict validation (client-supplied ids) allows only these.
STORED_DIGITS = "01"


def _as_utc(dt: datetime) -> datetime:
    # A naive datetime could be local time or UTC; guessing would shift the date near midnight.
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(
            f"{dt!r} has no time zone; pass an aware datetime such as datetime.now(UTC)"
        )
    return dt.astimezone(UTC)


def create_crash_id(timestamp: datetime, throttle_result: int) -> str:
    """A new crash id: 29 characters of a random UUID4, the throttle digit, ``YYMMDD`` in UTC.

    ``timestamp`` must be aware and should be the one given to :func:`submitted_timestamp`.
    """
    valid = isinstance(throttle_result, int) and not isinstance(throttle_result, bool)
    if not valid or throttle_result not in THROTTLE_DIGITS:
        raise ValueError(f"throttle result {throttle_result!r} is not one of 0, 1, 2, 3")
    utc = _as_utc(timestamp)
    return f"{str(uuid.uuid4())[:29]}{int(throttle_result)}{utc:%y%m%d}"


def is_valid_crash_id(value: str, strict: bool = True) -> bool:
    """Whether ``value`` has the crash id shape; ``strict`` also wants throttle digit 0 or 1.

    The date digits are not checked as a calendar date (neither does the reference).
    """
    if not isinstance(value, str) or CRASH_ID_RE.fullmatch(value) is None:
        return False
    return not strict or value[-7] in STORED_DIGITS


def crash_date(crash_id: str) -> str:
    """The storage date ``YYYYMMDD`` carried by the id (``"20"`` + its last six characters)."""
    return "20" + crash_id[-6:]


def throttle_digit(crash_id: str) -> int:
    """The throttle result digit carried by the id (the seventh character from the end)."""
    return int(crash_id[-7])


def submitted_timestamp(dt: datetime) -> str:
    """``dt`` in UTC as Python's ``isoformat()``: ``2011-09-06T00:00:00+00:00``.

    Microseconds are left out when they are zero, as the reference's raw crashes do.
    """
    return _as_utc(dt).isoformat()
