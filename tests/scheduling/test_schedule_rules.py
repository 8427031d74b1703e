"""Schedules with a controlled clock: time zones across real DST changes, interval phase, bounds, one-off."""
from datetime import datetime, timedelta, timezone

import pytest

from promptbeat.models import ScheduleType, Task
from promptbeat.scheduling.descriptions import describe
from promptbeat.scheduling.schedules import (BAD_CRON, IDLE_SECONDS, NEVER_FIRES, TOO_FAR, ScheduleError, TaskSchedule,
                                             first_run, next_runs, problem, task_schedule, valid_cron)

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


def test_berlin_fall_back_repeated_time_is_not_a_slot_to_catch_up():
    # Beat restarted at 02:45 CET on 2026-10-25 (01:45 UTC), down since the night before: the
    # newest slot is 02:30 CEST (00:30 UTC), not its repeat at 02:30 CET (01:30 UTC).
    schedule = task_schedule(daily("02:30", "Europe/Berlin"))
    restart = at(2026, 10, 25, 1, 45)
    assert schedule.cron.newest_at_or_before(restart) == at(2026, 10, 25, 0, 30)
    slot = schedule.newest_slot(at(2026, 10, 24, 0, 30), restart)
    assert slot == at(2026, 10, 25, 0, 30)
    # 75 minutes late, past the one-hour window: beat waits for the next day instead of firing the repeat.
    assert restart - slot > schedule.catchup_window(slot)
    # Fired at 02:30 CEST already: nothing is due at 02:45 CET.
    assert schedule.newest_slot(at(2026, 10, 25, 0, 30), restart) is None


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


# --- schedules that cannot fire: the maths answer "no next fire" instead of raising ---------------

NOW = at(2026, 12, 7, 12)
LAST_MINUTE = at(9999, 12, 31, 23, 59)


def test_a_cron_that_never_matches_has_no_slot_and_is_never_due():
    schedule = TaskSchedule("cron", expr="0 0 31 2 *", nowfun=lambda: NOW)
    assert schedule.first_slot_after(NOW) is None
    assert schedule.newest_slot(at(2020, 1, 1), NOW) is None
    assert schedule.remaining_estimate(NOW) is None
    assert schedule.is_due(NOW) == (False, IDLE_SECONDS)
    assert next_runs(cron_task("0 0 31 2 *", "Europe/Berlin"), 3, now=NOW) == []


def test_the_sparsest_cron_that_fires_still_has_slots():
    runs = next_runs(cron_task("0 0 29 2 *", "UTC"), 2, now=NOW)
    assert runs == [at(2028, 2, 29), at(2032, 2, 29)]


def test_slots_stop_at_the_end_of_the_calendar():
    every_minute = TaskSchedule("interval", every=60, start_at=LAST_MINUTE)
    assert every_minute.upcoming(3, NOW) == [LAST_MINUTE]
    new_york = TaskSchedule("cron", expr="* * * * *", tz="America/New_York", start_at=LAST_MINUTE)
    assert new_york.upcoming(3, NOW) == [LAST_MINUTE]
    assert new_york.catchup_window(LAST_MINUTE) == timedelta(hours=1)  # one interval, had there been a next slot
    # In Tokyo the same minute is already in the year 10000.
    assert TaskSchedule("cron", expr="* * * * *", tz="Asia/Tokyo", start_at=LAST_MINUTE).upcoming(3, NOW) == []
    once = Task(schedule_type=ScheduleType.ONCE, run_at=LAST_MINUTE, timezone="Asia/Tokyo")
    # 10:59 on 1 January 10000 in Tokyo cannot be written: the words fall back to UTC.
    assert describe(once) == "Once, at 9999-12-31 23:59 (UTC)"


def test_first_run_is_what_a_new_schedule_must_have():
    assert first_run(cron_task("0 9 * * *", "UTC"), NOW) == at(2026, 12, 8, 9)
    every_minute = Task(schedule_type=ScheduleType.INTERVAL, interval_seconds=60, timezone="UTC")
    assert first_run(every_minute, NOW) == NOW + timedelta(minutes=1)
    refusals = {
        "cron": cron_task("0 0 31 2 *", "UTC"),
        "start_at": cron_task("0 9 * * *", "UTC", start_at=at(2040, 1, 1)),
        "run_at": Task(schedule_type=ScheduleType.ONCE, run_at=at(2036, 12, 31), timezone="UTC"),
        "end_at": cron_task("0 9 * * *", "UTC", end_at=at(2026, 12, 8, 8)),
        "time": daily("9am", "UTC"),
        "timezone": cron_task("0 9 * * *", "Mars/Olympus_Mons"),
        "schedule_type": Task(schedule_type="hourly", timezone="UTC"),
        "interval_seconds": Task(schedule_type=ScheduleType.INTERVAL, interval_seconds=0, timezone="UTC"),
    }
    for field, task in refusals.items():
        with pytest.raises(ScheduleError) as refused:
            first_run(task, NOW)
        assert refused.value.field == field, (field, refused.value.message)
    with pytest.raises(ScheduleError, match="never fires"):
        first_run(cron_task("0 0 30 2 *", "UTC"), NOW)
    with pytest.raises(ScheduleError, match="more than 10 years"):
        first_run(cron_task("0 9 * * *", "UTC", start_at=at(2036, 12, 8)), NOW)
    with pytest.raises(ScheduleError, match="has passed"):
        first_run(Task(schedule_type=ScheduleType.ONCE, run_at=at(2026, 12, 6), timezone="UTC"), NOW)
    with pytest.raises(ScheduleError, match="before the start"):
        first_run(Task(schedule_type=ScheduleType.ONCE, run_at=at(2027, 1, 1), start_at=at(2027, 2, 1),
                       timezone="UTC"), NOW)


def test_a_stored_schedule_that_ran_its_course_is_no_problem():
    assert problem(Task(schedule_type=ScheduleType.ONCE, run_at=at(2026, 1, 1), timezone="UTC"), NOW) is None
    assert problem(cron_task("0 9 * * *", "UTC", end_at=at(2026, 6, 1)), NOW) is None
    assert problem(cron_task("0 9 * * *", "UTC"), NOW) is None
    assert problem(cron_task("0 0 31 2 *", "UTC"), NOW) == NEVER_FIRES
    assert problem(cron_task("0 0 * * *", "UTC", start_at=at(9999, 12, 31)), NOW) == TOO_FAR
    assert problem(cron_task("not a cron", "UTC"), NOW) == BAD_CRON


def test_a_one_off_before_its_start_never_fires():
    task = Task(schedule_type=ScheduleType.ONCE, run_at=at(2027, 1, 1), start_at=at(2027, 2, 1), timezone="UTC")
    assert next_runs(task, 2, now=NOW) == []


@pytest.mark.parametrize("expression, accepted", [
    ("0 9 * * MON-FRI", True), ("0 22-2 * * *", True), ("0 0 * * FRI-MON", True), ("0 0 * * 0-7", True),
    ("0 0 L * *", True), ("0 0 * * 5#3", True),
    # croniter reads each of these as "every" in the field: 5-5 every minute, 1-0 every month.
    ("5-5 * * * *", False), ("0 0 * * MON-MON", False), ("0 0 * * 7-0", False), ("0 0 * 1-0 *", False),
    ("0 0 32-1 * *", False),
    # Random and hashed fields change with each evaluation, so beat and the pages would disagree.
    ("R 9 * * *", False), ("H(0-29) * * * *", False),
    ("0 0 9 * * *", False), ("@daily", False),
])
def test_cron_forms_that_croniter_would_misread_are_refused(expression, accepted):
    assert valid_cron(expression) is accepted
