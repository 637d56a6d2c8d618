"""Filter values that cannot be asked of the database are a 400 that names the filter, on every
listing that takes them (docs/accounts.md, "Filters")."""

from __future__ import annotations

import pytest

from symbolon.filters import FilterError, Query, count_filter, date_filter, size_filter
from tests.accounts import Caller, call, make_user

TOO_BIG = str(2**63)
# A value for each filter family past what its column holds, or past the last representable day.
SIZES = [TOO_BIG, f"<={TOO_BIG}", "9" * 400, "9999999999999g"]
# More digits than Python converts to an int by default, too.
COUNTS = [TOO_BIG, f">={TOO_BIG}", "9" * 5000]
DATES = ["9999-12-31", ">9999-12-31T23:59:59", "0001-01-01T00:00:00+01:00"]

CASES = [
    *[("/api/uploads/", "size", v) for v in SIZES],
    *[("/api/uploads/", "created_at", v) for v in DATES],
    *[("/api/uploads/", "completed_at", v) for v in DATES],
    *[("/api/uploads/files/", "size", v) for v in SIZES],
    *[("/api/uploads/files/", "created_at", v) for v in DATES],
    *[("/api/uploads/files/", "completed_at", v) for v in DATES],
    *[("/api/uploads/created/", "size", v) for v in SIZES],
    *[("/api/uploads/created/", "count", v) for v in COUNTS],
    *[("/api/uploads/created/", "date", v) for v in DATES],
    # The missing-symbol counts are integers: 2^31 and more cannot be compared with them.
    *[("/api/downloads/missing/", "count", v) for v in [*COUNTS, "3000000000", "<2147483648"]],
    *[("/api/downloads/missing/", "modified_at", v) for v in DATES],
    *[("/api/downloads/missing/", "created_at", v) for v in DATES],
    *[("/missingsymbols/", "modified_at", v) for v in DATES],
]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(("path", "name", "value"), CASES)
async def test_out_of_range_filters_are_a_400(http_client, base_url, runtime, path, name, value):
    auditor = await Caller.with_session(
        runtime, await make_user(runtime, groups=("Upload Auditors",))
    )
    caller = Caller.anonymous() if "missing" in path else auditor
    query = f"{name}={value.replace('+', '%2B')}"
    status, body = await call(http_client, base_url, caller, f"{path}?{query}")
    assert status == 400, body
    (message,) = body["errors"][name]
    assert value.lstrip("<>=") in message


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/uploads/", "size=<9223372036854775807"),
        ("/api/uploads/files/", "created_at=9999-12-30"),
        ("/api/uploads/created/", "count=<9223372036854775807&date=<9999-12-31"),
        ("/api/downloads/missing/", "count=<2147483647&modified_at=>=9999-12-31T23:59:59"),
    ],
)
async def test_the_largest_values_still_work(http_client, base_url, runtime, path, query):
    auditor = await Caller.with_session(
        runtime, await make_user(runtime, groups=("Upload Auditors",))
    )
    status, body = await call(http_client, base_url, auditor, f"{path}?{query}")
    assert status == 200, body


def test_a_count_fits_the_column_it_filters():
    query = Query()
    count_filter(query, "c", "count", "2147483647", maximum=2**31 - 1)
    with pytest.raises(FilterError, match="counts go up to 2147483647"):
        count_filter(query, "c", "count", "2147483648", maximum=2**31 - 1)
    assert query.args == [2**31 - 1]


def test_sizes_are_exact_up_to_the_largest_bigint():
    query = Query()
    size_filter(query, "s", "size", f"{2**63 - 1}, 1.5k")
    assert query.args == [2**63 - 1, 1536]


def test_dates_keep_their_meaning_near_the_end_of_the_calendar():
    query = Query()
    date_filter(query, "d", "date", "<9999-12-31, >=9999-12-31T23:59:59")
    assert [a.year for a in query.args] == [9999, 9999]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("groups", ["\u00b2", "1,\u00b9"])
async def test_group_ids_are_ascii_digits(http_client, base_url, runtime, groups):
    admin = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    path = f"/api/_users/user/{(await make_user(runtime)).id}"
    status, body = await call(http_client, base_url, admin, path, "POST", {"groups": groups})
    assert status == 400, body
    assert body == {"errors": {"groups": [f"Unrecognized group id '{groups[-1]}'"]}}
