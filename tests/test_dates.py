"""One date style for readers: "1 Dec 2026", "24 Nov – 1 Dec 2026"."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from newsletter.dates import day, day_range, iso


def test_a_day_is_written_day_month_year_without_a_leading_zero():
    assert day(datetime(2026, 12, 1, 9, 30, tzinfo=UTC)) == "1 Dec 2026"
    assert day(date(2026, 11, 24)) == "24 Nov 2026"
    # A stored timestamp reads as the same day.
    assert day(iso(datetime(2026, 12, 1, 23, 59, tzinfo=UTC))) == "1 Dec 2026"
    # A moment in another zone is the day it is in UTC, as everything stored.
    assert day(datetime(2026, 12, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))) == "2 Dec 2026"


@pytest.mark.parametrize(
    ("start", "end", "written"),
    [
        ("2026-11-24T00:00:00+00:00", "2026-12-01T00:00:00+00:00", "24 Nov – 1 Dec 2026"),
        ("2026-11-16T00:00:00+00:00", "2026-11-23T00:00:00+00:00", "16–23 Nov 2026"),
        ("2026-12-29T00:00:00+00:00", "2027-01-05T00:00:00+00:00", "29 Dec 2026 – 5 Jan 2027"),
        ("2026-12-01T00:00:00+00:00", "2026-12-01T18:00:00+00:00", "1 Dec 2026"),
    ],
)
def test_a_span_says_the_month_and_year_once_where_they_are_shared(start, end, written):
    assert day_range(start, end) == written
    assert day_range(datetime.fromisoformat(start), datetime.fromisoformat(end)) == written


def test_a_value_that_is_not_a_date_is_refused_as_such():
    with pytest.raises(ValueError):
        day("last tuesday")
