"""Schedules: crontab semantics preserved on APScheduler (weekday numbering differs)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from drcheck.config_types import Schedule

LA = ZoneInfo("America/Los_Angeles")
MONDAY = datetime(2026, 11, 23, 12, 0, tzinfo=LA)  # a Monday


def next_fires(cron: str, count: int = 4) -> list[str]:
    t = Schedule(cron=cron).trigger("America/Los_Angeles")
    fires, previous, now = [], None, MONDAY
    for _ in range(count):
        nxt = t.get_next_fire_time(previous, now)
        fires.append(nxt.strftime("%a %H:%M"))
        previous, now = nxt, nxt
    return fires


@pytest.mark.parametrize("cron, expected", [
    ("0 3 * * 0", ["Sun 03:00"] * 4),
    ("0 3 * * 7", ["Sun 03:00"] * 4),
    ("0 3 * * sun", ["Sun 03:00"] * 4),
    ("30 1 * * 1-5", ["Tue 01:30", "Wed 01:30", "Thu 01:30", "Fri 01:30"]),
    ("0 7 * * */2", ["Tue 07:00", "Thu 07:00", "Sat 07:00", "Sun 07:00"]),
    ("0 7 * * 5-7", ["Fri 07:00", "Sat 07:00", "Sun 07:00", "Fri 07:00"]),
    ("0 7 * * 6,0", ["Sat 07:00", "Sun 07:00", "Sat 07:00", "Sun 07:00"]),
])
def test_crontab_weekdays_mean_what_crontab_means(cron, expected):
    assert next_fires(cron) == expected


@pytest.mark.parametrize("cron, message", [
    ("0 3 1 * 1", "not both"),
    ("0 3 * * 8", "0-7 or sun-sat"),
    ("0 3 * * 5-1", "backwards"),
    ("0 3 * *", "expected 5 fields"),
    ("61 3 * * *", "not a valid"),
])
def test_bad_crontab_is_refused_with_the_reason(cron, message):
    with pytest.raises(ValidationError, match=message):
        Schedule(cron=cron)


def test_interval_schedule():
    t = Schedule(interval="15m").trigger("UTC")
    first = t.get_next_fire_time(None, MONDAY)
    assert (t.get_next_fire_time(first, first) - first).total_seconds() == 900
