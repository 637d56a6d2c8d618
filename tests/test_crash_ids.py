import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from symbolon.crashes.crashid import (
    crash_date,
    create_crash_id,
    is_valid_crash_id,
    submitted_timestamp,
    throttle_digit,
)
from symbolon.crashes.throttling.engine import Result

DOCS_ID = "de1bb258-cbbf-4589-a673-34f800160918"  # the example of docs/throttling.md, "Crash ids"
WHEN = datetime(2026, 11, 22, 14, 31, 7, 900770, tzinfo=UTC)


def test_format_of_a_new_id():
    crash_id = create_crash_id(WHEN, Result.ACCEPT)
    assert len(crash_id) == 36
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", crash_id
    )
    assert crash_id.endswith("0261122")
    assert is_valid_crash_id(crash_id)


def test_first_29_characters_come_from_a_uuid4(monkeypatch):
    import uuid

    fixed = uuid.UUID("577b6d8b-d6d1-4442-9d42-b42bd0261122")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    assert create_crash_id(WHEN, 0) == "577b6d8b-d6d1-4442-9d42-b42bd0261122"
    assert create_crash_id(WHEN, 3) == "577b6d8b-d6d1-4442-9d42-b42bd3261122"


def test_ids_are_random():
    assert len({create_crash_id(WHEN, 0) for _ in range(100)}) == 100


@pytest.mark.parametrize("result", list(Result)[:4])
def test_throttle_digit_is_the_result(result):
    crash_id = create_crash_id(WHEN, result)
    assert crash_id[-7] == str(int(result))
    assert throttle_digit(crash_id) == result


@pytest.mark.parametrize("bad", [4, -1, 10, True, "0", 0.0, None])
def test_only_the_four_final_results_make_a_digit(bad):
    with pytest.raises(ValueError):
        create_crash_id(WHEN, bad)


def test_date_is_the_utc_date_of_the_timestamp():
    assert create_crash_id(datetime(2016, 9, 18, 0, 0, tzinfo=UTC), 0).endswith("0160918")


def test_date_near_midnight_with_a_zone_behind_utc():
    # 23:30 in New York (UTC-5) is already the next day in UTC.
    evening = datetime(2026, 11, 22, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    crash_id = create_crash_id(evening, 0)
    assert crash_id.endswith("0261123")
    assert crash_date(crash_id) == "20261123"
    assert submitted_timestamp(evening) == "2026-11-23T04:30:00+00:00"


def test_date_near_midnight_with_a_zone_ahead_of_utc():
    # 00:30 on New Year's Day in UTC+2 is still the previous year in UTC.
    morning = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert create_crash_id(morning, 1).endswith("1251231")
    assert submitted_timestamp(morning) == "2025-12-31T22:30:00+00:00"


def test_naive_datetimes_are_refused():
    # Naive could mean local time or UTC; guessing would put crashes under the wrong date.
    with pytest.raises(ValueError, match="time zone"):
        create_crash_id(datetime(2026, 11, 22, 12, 0), 0)
    with pytest.raises(ValueError, match="time zone"):
        submitted_timestamp(datetime(2026, 11, 22, 12, 0))


def test_crash_date_and_digit_of_the_documented_example():
    assert crash_date(DOCS_ID) == "20160918"
    assert throttle_digit(DOCS_ID) == 0


def test_documented_example_is_valid():
    assert is_valid_crash_id(DOCS_ID)
    assert is_valid_crash_id(DOCS_ID, strict=False)


def test_uppercase_is_invalid():
    assert not is_valid_crash_id(DOCS_ID.upper())
    assert not is_valid_crash_id("DE1bb258-cbbf-4589-a673-34f800160918")


@pytest.mark.parametrize("digit", "23456789")
def test_strict_mode_wants_digit_0_or_1(digit):
    crash_id = DOCS_ID[:-7] + digit + DOCS_ID[-6:]
    assert not is_valid_crash_id(crash_id)
    assert is_valid_crash_id(crash_id, strict=False)


def test_the_regex_alone_allows_a_hex_throttle_character():
    # The pattern ends with [a-f0-9]{6}[0-9]{6}: only strict mode rules out a letter there.
    crash_id = "de1bb258-cbbf-4589-a673-34f80a160918"
    assert is_valid_crash_id(crash_id, strict=False)
    assert not is_valid_crash_id(crash_id)


def test_digit_1_is_valid_in_strict_mode():
    assert is_valid_crash_id(DOCS_ID[:-7] + "1" + DOCS_ID[-6:])


@pytest.mark.parametrize(
    "value",
    [
        DOCS_ID[:-1],  # 35 characters
        DOCS_ID + "0",  # 37 characters
        "bp-" + DOCS_ID,  # the response prefix is not part of the id
        DOCS_ID + "\n",  # anchored at the very end
        " " + DOCS_ID,
        "de1bb258cbbf-4589-a673-34f800160918-",  # dashes in the wrong places
        "ge1bb258-cbbf-4589-a673-34f800160918",  # not hex
        "de1bb258-cbbf-4589-a673-34f80016091a",  # the date must be digits
        "",
    ],
)
def test_wrong_shapes_are_invalid(value):
    assert not is_valid_crash_id(value, strict=False)


def test_non_strings_are_invalid():
    assert not is_valid_crash_id(None)  # type: ignore[arg-type]
    assert not is_valid_crash_id(DOCS_ID.encode())  # type: ignore[arg-type]


def test_date_digits_are_not_checked_as_a_calendar_date():
    assert is_valid_crash_id("de1bb258-cbbf-4589-a673-34f800999999")


def test_submitted_timestamp_with_microseconds():
    assert submitted_timestamp(WHEN) == "2026-11-22T14:31:07.900770+00:00"


def test_submitted_timestamp_without_microseconds():
    assert submitted_timestamp(datetime(2011, 9, 6, tzinfo=UTC)) == "2011-09-06T00:00:00+00:00"


def test_submitted_timestamp_and_crash_id_agree_on_the_date():
    ts = datetime(2026, 3, 1, 0, 0, 0, 1, tzinfo=UTC)
    crash_id = create_crash_id(ts, 0)
    assert submitted_timestamp(ts).startswith(crash_date(crash_id)[:4] + "-03-01")
    assert crash_date(crash_id) == "20260301"
