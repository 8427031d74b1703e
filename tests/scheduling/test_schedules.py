"""Schedules: the words pages show, the next fire times, and TaskSchedule's due check."""
import pickle
from datetime import datetime, timedelta, timezone

import pytest

from promptbeat.models import Task
from promptbeat.scheduling.descriptions import describe
from promptbeat.scheduling.schedules import TaskSchedule, cron_expression, next_runs, task_schedule

UTC = timezone.utc


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def interval_task(seconds, anchor_at=None):
    return Task(id=1, name="t", schedule_type="interval", interval_seconds=seconds, timezone="UTC",
                enabled=True, anchor_at=anchor_at)


def fixed_time_task(hhmm, zone):
    return Task(id=2, name="t", schedule_type="fixed_time", fixed_time=hhmm, timezone=zone, enabled=True)


def crontab_task(expression, zone="UTC"):
    return Task(id=3, name="t", schedule_type="crontab", cron=expression, timezone=zone, enabled=True)


@pytest.mark.parametrize("seconds, words", [
    (60, "Every 1 minute"),
    (1800, "Every 30 minutes"),
    (3600, "Every 1 hour"),
    (7200, "Every 2 hours"),
    (86400, "Every 1 day"),
    (90, "Every 90 seconds"),
    (45, "Every 45 seconds"),
])
def test_describe_interval(seconds, words):
    assert describe(interval_task(seconds)) == words


def test_describe_fixed_time_names_the_zone():
    assert describe(fixed_time_task("09:00", "Asia/Shanghai")) == "Every day at 09:00 (Asia/Shanghai)"


def test_describe_crontab_in_words_with_24_hour_time():
    assert describe(crontab_task("0 9 * * 1-5", "Europe/Berlin")) == "At 09:00, Monday through Friday (Europe/Berlin)"
    assert describe(crontab_task("30 18 * * *")) == "At 18:30 (UTC)"
    assert describe(crontab_task("*/15 * * * *")) == "Every 15 minutes (UTC)"


def test_next_runs_interval_counts_from_the_anchor():
    task = interval_task(600, anchor_at=utc(2025, 1, 1, 10, 0))
    assert next_runs(task, 3, now=utc(2025, 1, 1, 10, 3)) == [
        utc(2025, 1, 1, 10, 10), utc(2025, 1, 1, 10, 20), utc(2025, 1, 1, 10, 30),
    ]


def test_next_runs_interval_overdue_anchor_is_due_now():
    now = utc(2025, 1, 1, 12, 0)
    task = interval_task(600, anchor_at=utc(2025, 1, 1, 10, 0))
    assert next_runs(task, 2, now=now) == [now, now + timedelta(minutes=10)]


def test_next_runs_interval_without_anchor_is_one_interval_from_now():
    now = utc(2025, 1, 1, 12, 0)
    assert next_runs(interval_task(300), 1, now=now) == [utc(2025, 1, 1, 12, 5)]


def test_next_runs_fixed_time_is_in_the_tasks_zone():
    # 09:00 in Shanghai (UTC+8, no DST) is 01:00 UTC.
    task = fixed_time_task("09:00", "Asia/Shanghai")
    assert next_runs(task, 2, now=utc(2025, 1, 1, 0, 0)) == [utc(2025, 1, 1, 1, 0), utc(2025, 1, 2, 1, 0)]
    # Already past today's 09:00 in Shanghai: the next one is tomorrow's.
    assert next_runs(task, 1, now=utc(2025, 1, 1, 1, 0)) == [utc(2025, 1, 2, 1, 0)]


def test_next_runs_fixed_time_follows_daylight_saving_time():
    # Berlin moves from UTC+1 to UTC+2 on 2025-03-30; 09:00 local stays 09:00 local.
    task = fixed_time_task("09:00", "Europe/Berlin")
    assert next_runs(task, 2, now=utc(2025, 3, 29, 0, 0)) == [utc(2025, 3, 29, 8, 0), utc(2025, 3, 30, 7, 0)]


def test_next_runs_crontab():
    task = crontab_task("*/15 * * * *")
    assert next_runs(task, 3, now=utc(2025, 1, 1, 10, 7)) == [
        utc(2025, 1, 1, 10, 15), utc(2025, 1, 1, 10, 30), utc(2025, 1, 1, 10, 45),
    ]


def test_next_runs_crontab_weekdays_in_a_zone():
    # 2025-01-03 is a Friday; "0 9 * * 1-5" in New York (UTC-5 in winter) skips the weekend.
    task = crontab_task("0 9 * * 1-5", "America/New_York")
    assert next_runs(task, 2, now=utc(2025, 1, 3, 15, 0)) == [utc(2025, 1, 6, 14, 0), utc(2025, 1, 7, 14, 0)]


def test_task_schedule_per_type():
    assert task_schedule(interval_task(90)) == TaskSchedule("interval", every=90)
    assert task_schedule(fixed_time_task("07:05", "Asia/Tokyo")) == TaskSchedule("cron", expr="5 7 * * *", tz="Asia/Tokyo")
    assert cron_expression(fixed_time_task("23:59", "UTC")) == "59 23 * * *"
    assert task_schedule(crontab_task("0 9 * * 1-5", "Europe/Berlin")) == TaskSchedule("cron", expr="0 9 * * 1-5", tz="Europe/Berlin")


class Clock:
    """A controllable now() for TaskSchedule."""

    def __init__(self, moment):
        self.moment = moment

    def __call__(self):
        return self.moment


def test_cron_schedule_is_due_with_a_controlled_clock():
    clock = Clock(utc(2025, 1, 2, 0, 59, 30))
    cron = TaskSchedule("cron", expr="0 9 * * *", tz="Asia/Shanghai", nowfun=clock)
    fired = utc(2025, 1, 1, 1, 0)

    due, wait = cron.is_due(fired)
    assert (due, wait) == (False, 30.0)

    clock.moment = utc(2025, 1, 2, 1, 0, 5)
    due, wait = cron.is_due(fired)
    assert due is True
    # The next fire after this one is tomorrow at 09:00 Shanghai time.
    assert wait == (utc(2025, 1, 3, 1, 0) - clock.moment).total_seconds()

    # Once beat records the fire, the entry is not due again until tomorrow.
    due, wait = cron.is_due(clock.moment)
    assert due is False
    assert wait == (utc(2025, 1, 3, 1, 0) - clock.moment).total_seconds()


def test_cron_schedule_ignores_celerys_utc_timezone():
    # In UTC the expression "0 9 * * *" would be due at 09:00 UTC; in Shanghai it is not.
    clock = Clock(utc(2025, 1, 2, 9, 0, 1))
    cron = TaskSchedule("cron", expr="0 9 * * *", tz="Asia/Shanghai", nowfun=clock)
    due, wait = cron.is_due(utc(2025, 1, 2, 1, 0))
    assert due is False
    assert wait == (utc(2025, 1, 3, 1, 0) - clock.moment).total_seconds()


def test_cron_schedule_with_an_ancient_last_run_is_due_once():
    clock = Clock(utc(2025, 1, 2, 12, 0))
    cron = TaskSchedule("cron", expr="0 9 * * *", tz="UTC", nowfun=clock)
    due, wait = cron.is_due(utc(2000, 1, 1))
    assert due is True
    assert wait == 21 * 3600


def test_cron_schedule_accepts_a_naive_last_run_as_utc():
    clock = Clock(utc(2025, 1, 1, 8, 59))
    cron = TaskSchedule("cron", expr="0 9 * * *", tz="UTC", nowfun=clock)
    assert cron.is_due(datetime(2024, 12, 31, 9, 0)) == (False, 60.0)


def test_cron_schedule_survives_pickling_with_its_zone():
    cron = pickle.loads(pickle.dumps(TaskSchedule("cron", expr="0 9 * * 1-5", tz="Asia/Shanghai")))
    assert (cron.expr, cron.tz_name) == ("0 9 * * 1-5", "Asia/Shanghai")
    assert cron == TaskSchedule("cron", expr="0 9 * * 1-5", tz="Asia/Shanghai")
    assert cron != TaskSchedule("cron", expr="0 9 * * 1-5", tz="UTC")
