"""Schedules with a controlled clock: time zones across real DST changes, interval phase, bounds, one-off."""
from datetime import datetime, timedelta, timezone

from promptbeat.models import ScheduleType, Task
from promptbeat.schedules import TaskSchedule, describe, next_runs, task_schedule

UTC = timezone.utc


def at(*parts):
    return datetime(*parts, tzinfo=UTC)


def cron_task(cron, zone, **extra):
    return Task(schedule_type=ScheduleType.CRONTAB, cron=cron, timezone=zone, **extra)


def daily(hhmm, zone, **extra):
    return Task(schedule_type=ScheduleType.FIXED_TIME, fixed_time=hhmm, timezone=zone, **extra)


def utc_hm(times):
    return [t.strftime("%m-%d %H:%M") for t in times]


def test_berlin_spring_forward_skipped_time_runs_at_first_valid_minute():
    # 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist that night.
    runs = next_runs(daily("02:30", "Europe/Berlin"), 3, now=at(2026, 3, 28, 12))
    assert utc_hm(runs) == ["03-29 01:00", "03-30 00:30", "03-31 00:30"]  # 03:00 CEST, then 02:30 CEST


def test_berlin_fall_back_repeated_time_runs_once():
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice; it runs at the first.
    runs = next_runs(daily("02:30", "Europe/Berlin"), 3, now=at(2026, 10, 24, 12))
    assert utc_hm(runs) == ["10-25 00:30", "10-26 01:30", "10-27 01:30"]


def test_new_york_changes_follow_the_same_rule():
    spring = next_runs(cron_task("30 2 * * *", "America/New_York"), 2, now=at(2026, 3, 7, 12))
    assert utc_hm(spring) == ["03-08 07:00", "03-09 06:30"]  # 03:00 EDT on the skipped night
    fall = next_runs(cron_task("30 1 * * *", "America/New_York"), 2, now=at(2026, 10, 31, 12))
    assert utc_hm(fall) == ["11-01 05:30", "11-02 06:30"]  # 01:30 EDT once, not again at 01:30 EST


def test_hourly_cron_runs_every_real_hour_through_fall_back():
    runs = next_runs(cron_task("0 * * * *", "Europe/Berlin"), 4, now=at(2026, 10, 24, 23, 30))
    assert utc_hm(runs) == ["10-25 00:00", "10-25 01:00", "10-25 02:00", "10-25 03:00"]


def test_zone_applies_to_fixed_time_and_beat_slots():
    task = daily("09:00", "Asia/Shanghai")
    assert utc_hm(next_runs(task, 1, now=at(2026, 1, 1, 0, 30))) == ["01-01 01:00"]
    schedule = task_schedule(task)
    assert schedule.newest_slot(at(2026, 1, 1, 0), at(2026, 1, 1, 1, 0, 20)) == at(2026, 1, 1, 1)
    assert schedule.newest_slot(at(2026, 1, 1, 1), at(2026, 1, 1, 1, 0, 20)) is None


def test_schedule_survives_redis_storage_with_zone_and_bounds():
    schedule = TaskSchedule("cron", expr="30 2 * * *", tz="Europe/Berlin", start_at=at(2026, 1, 1), catchup=600)
    assert TaskSchedule.from_spec(schedule.spec()) == schedule


def test_interval_slots_keep_their_phase():
    schedule = TaskSchedule("interval", every=600)
    last = at(2026, 1, 1, 10, 0, 7)
    assert schedule.first_slot_after(last) == at(2026, 1, 1, 10, 10, 7)
    # Beat was down for 35 minutes: the newest missed slot stands for all of them.
    assert schedule.newest_slot(last, at(2026, 1, 1, 10, 35)) == at(2026, 1, 1, 10, 30, 7)


def test_interval_next_runs_count_from_the_last_slot():
    task = Task(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600, anchor_at=at(2026, 1, 1, 8, 15))
    assert utc_hm(next_runs(task, 2, now=at(2026, 1, 1, 8, 40))) == ["01-01 09:15", "01-01 10:15"]


def test_default_catchup_window_is_one_interval_capped_at_an_hour():
    assert TaskSchedule("interval", every=300).catchup_window(at(2026, 1, 1)) == timedelta(minutes=5)
    assert TaskSchedule("interval", every=86400).catchup_window(at(2026, 1, 1)) == timedelta(hours=1)
    assert TaskSchedule("cron", expr="*/10 * * * *").catchup_window(at(2026, 1, 1)) == timedelta(minutes=10)
    assert TaskSchedule("interval", every=300, catchup=0).catchup_window(at(2026, 1, 1)) == timedelta(0)


def test_bounds_limit_the_slots():
    task = daily("09:00", "UTC", start_at=at(2026, 5, 3), end_at=at(2026, 5, 5, 12))
    assert utc_hm(next_runs(task, 5, now=at(2026, 5, 1))) == ["05-03 09:00", "05-04 09:00", "05-05 09:00"]
    assert "from 2026-05-03 00:00 UTC, until 2026-05-05 12:00 UTC" in describe(task)


def test_one_off_has_one_slot_then_none():
    task = Task(schedule_type=ScheduleType.ONCE, run_at=at(2026, 6, 1, 7, 30), timezone="Europe/Berlin",
                anchor_at=at(2026, 5, 1))
    assert next_runs(task, 5, now=at(2026, 5, 2)) == [at(2026, 6, 1, 7, 30)]
    assert describe(task) == "Once, at 2026-06-01 09:30 (Europe/Berlin)"
    schedule = task_schedule(task)
    assert schedule.newest_slot(at(2026, 5, 1), at(2026, 6, 1, 7, 31)) == at(2026, 6, 1, 7, 30)
    assert schedule.first_slot_after(at(2026, 6, 1, 7, 30)) is None
