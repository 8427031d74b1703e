"""Schedules: the slots (nominal fire times) of every task type, as beat, the API and the form see them.

One class, TaskSchedule, decides when a task fires. Beat evaluates it, the API's
`next_runs` and the form's preview call it, so they can never disagree.

DST rule (cron and fixed-time tasks, evaluated in the task's IANA zone):
- a wall-clock time skipped when clocks go forward runs at the first valid minute after it
  (02:30 on the spring-forward night in Europe/Berlin runs at 03:00 CEST);
- a wall-clock time repeated when clocks go back runs once, at its first occurrence,
  unless the cron's hour field is `*` (hourly-or-finer schedules run every real hour).
"""
import functools
import logging
import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from celery.schedules import BaseSchedule, schedstate
from cron_descriptor import Options, get_description
from croniter import croniter

from promptbeat.models import ScheduleType

logger = logging.getLogger(__name__)

# Bound on how far back a search starts, so an ancient last-run time stays cheap.
MAX_LOOKBACK = timedelta(days=2)
# The default catch-up window is one interval, but never more than this.
MAX_DEFAULT_CATCHUP = timedelta(hours=1)
# How long beat sleeps at most when an entry has no slot left (one-off done, end passed).
IDLE_SECONDS = 300.0


def _utc(moment):
    if moment is None:
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class ZonedCron:
    """A 5-field cron expression in an IANA zone, with the documented DST rule."""

    def __init__(self, expr, tz_name):
        self.expr = expr
        self.tz_name = tz_name

    def next_after(self, moment):
        """The first fire time strictly after moment, in UTC."""
        return _cron_next_after(self.expr, self.tz_name, _minute(moment))

    def newest_at_or_before(self, moment):
        """The latest fire time at or before moment, in UTC."""
        return _cron_newest_at_or_before(self.expr, self.tz_name, _minute(moment))


# A 5-field cron fires on whole minutes, so the answers for any moment equal those for the start
# of its minute; cached by minute, many tasks sharing a schedule (a dashboard page, a burst of
# 09:00 tasks in beat) are worked out once instead of once each.
def _minute(moment):
    return _utc(moment).replace(second=0, microsecond=0)


def _repeated(moment, zone):
    # The second occurrence of a wall-clock time that happens twice on fall-back night.
    local = moment.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _once_per_wall_time(expr):
    # Hourly-or-finer schedules (hour field `*`) run every real hour, repeated ones included.
    return expr.split()[1] != "*"


@functools.lru_cache(maxsize=4096)
def _cron_next_after(expr, tz_name, minute):
    zone = ZoneInfo(tz_name)
    it = croniter(expr, minute.astimezone(zone))
    while True:
        candidate = it.get_next(datetime).astimezone(timezone.utc)
        if not (_once_per_wall_time(expr) and _repeated(candidate, zone)):
            return candidate


@functools.lru_cache(maxsize=4096)
def _cron_newest_at_or_before(expr, tz_name, minute):
    zone = ZoneInfo(tz_name)
    it = croniter(expr, (minute + timedelta(seconds=1)).astimezone(zone))
    while True:
        candidate = it.get_prev(datetime).astimezone(timezone.utc)
        if not (_once_per_wall_time(expr) and _repeated(candidate, zone)):
            return candidate


class TaskSchedule(BaseSchedule):
    """The schedule beat fires a task by: interval, cron or once, within optional bounds.

    Interval slots keep their phase: each slot is the previous slot plus the interval,
    and beat records the slot (not the wall-clock send time) as the entry's last run.
    """

    def __init__(self, kind, every=None, expr=None, tz="UTC", run_at=None, start_at=None, end_at=None,
                 catchup=None, nowfun=None, app=None):
        self.kind, self.every, self.expr, self.tz_name = kind, every, expr, tz or "UTC"
        self.run_at, self.start_at, self.end_at = _utc(run_at), _utc(start_at), _utc(end_at)
        self.catchup = catchup
        self.cron = ZonedCron(expr, self.tz_name) if kind == "cron" else None
        super().__init__(nowfun=nowfun, app=app)

    def now(self):
        return (self.nowfun or (lambda: datetime.now(timezone.utc)))()

    @property
    def tz(self):
        return ZoneInfo(self.tz_name)

    @property
    def run_every(self):
        """An interval schedule's step, as Celery's interval schedule names it."""
        return timedelta(seconds=self.every) if self.every else None

    def spec(self):
        """The schedule as plain JSON-able values (how Redis stores it)."""
        return {"kind": self.kind, "every": self.every, "expr": self.expr, "tz": self.tz_name,
                "run_at": _iso(self.run_at), "start_at": _iso(self.start_at), "end_at": _iso(self.end_at),
                "catchup": self.catchup}

    @classmethod
    def from_spec(cls, spec):
        return cls(spec["kind"], every=spec.get("every"), expr=spec.get("expr"), tz=spec.get("tz"),
                   run_at=_parse(spec.get("run_at")), start_at=_parse(spec.get("start_at")),
                   end_at=_parse(spec.get("end_at")), catchup=spec.get("catchup"))

    # --- slots -------------------------------------------------------------------------

    def first_slot_after(self, last):
        """The first slot strictly after last (the previous slot), within bounds; None if none is left."""
        last = _utc(last)
        if self.kind == "once":
            slot = self.run_at if last is None or self.run_at > last else None
        elif self.kind == "interval":
            step = timedelta(seconds=self.every)
            slot = (last + step) if last else self.now()
            if self.start_at and slot < self.start_at:
                slot = self.start_at
        else:
            origin = last or self.now()
            if self.start_at and origin < self.start_at:
                origin = self.start_at - timedelta(microseconds=1)
            slot = self.cron.next_after(origin)
        if slot is not None and self.end_at and slot > self.end_at:
            return None
        return slot

    def newest_slot(self, last, now):
        """The latest slot in (last, now]: the one a late fire stands for; None if none is due."""
        first = self.first_slot_after(last)
        if first is None or first > now:
            return None
        horizon = min(now, self.end_at) if self.end_at else now
        if self.kind == "interval":
            step = self.every
            return first + timedelta(seconds=step * math.floor((horizon - first).total_seconds() / step))
        if self.kind == "cron":
            return max(first, self.cron.newest_at_or_before(horizon))
        return first

    def catchup_window(self, slot):
        """How late a slot may still run: the task's window, else one interval capped at an hour."""
        if self.catchup is not None:
            return timedelta(seconds=self.catchup)
        if self.kind == "interval":
            return min(timedelta(seconds=self.every), MAX_DEFAULT_CATCHUP)
        if self.kind == "cron":
            return min(self.cron.next_after(slot) - slot, MAX_DEFAULT_CATCHUP)
        return MAX_DEFAULT_CATCHUP

    def upcoming(self, count, now, last=None):
        """The next `count` fire times after now, as beat will fire them (phase counted from last).

        A slot already due but not yet fired (within its catch-up window) fires now, so
        it shows as now.
        """
        times, cursor = [], now
        if last is not None:
            behind = self.newest_slot(last, now)
            if behind is not None:
                if now - behind <= self.catchup_window(behind):
                    times.append(now)
                cursor = behind if self.kind == "interval" else now
            elif self.kind == "interval":
                cursor = _utc(last)
            else:
                cursor = max(_utc(last), now)
        while len(times) < count:
            slot = self.first_slot_after(cursor)
            if slot is None:
                break
            times.append(slot)
            cursor = slot
        return times

    # --- celery's schedule protocol ------------------------------------------------------

    def remaining_estimate(self, last_run_at):
        now = self.now()
        last = max(_utc(last_run_at), now - MAX_LOOKBACK) if self.kind == "cron" else _utc(last_run_at)
        slot = self.first_slot_after(last)
        return None if slot is None else slot - now

    def is_due(self, last_run_at):
        remaining = self.remaining_estimate(last_run_at)
        if remaining is None:
            return schedstate(False, IDLE_SECONDS)
        if remaining.total_seconds() > 0:
            return schedstate(False, remaining.total_seconds())
        # Due: once beat records this fire, the next one is the first slot after now.
        now = self.now()
        following = self.first_slot_after(self.newest_slot(_utc(last_run_at), now) or now)
        return schedstate(True, (following - now).total_seconds() if following else IDLE_SECONDS)

    def __eq__(self, other):
        if isinstance(other, TaskSchedule):
            return self.spec() == other.spec()
        return NotImplemented

    def __reduce__(self):
        return (self.__class__.from_spec, (self.spec(),))

    def __repr__(self):
        return f"<TaskSchedule {self.spec()}>"


def _iso(moment):
    return moment.isoformat() if moment else None


def _parse(value):
    return _utc(datetime.fromisoformat(value)) if value else None


def cron_expression(task):
    """The cron expression behind a fixed_time or crontab task."""
    if task.schedule_type == ScheduleType.FIXED_TIME:
        hour, minute = task.fixed_time.split(":")
        return f"{int(minute)} {int(hour)} * * *"
    return task.cron


def task_schedule(task):
    """The schedule object beat evaluates for this task."""
    zone = task.timezone or "UTC"
    bounds = {"start_at": task.start_at, "end_at": task.end_at, "catchup": task.catchup_seconds}
    if task.schedule_type == ScheduleType.INTERVAL:
        return TaskSchedule("interval", every=task.interval_seconds, tz=zone, **bounds)
    if task.schedule_type == ScheduleType.ONCE:
        return TaskSchedule("once", run_at=task.run_at, tz=zone, **bounds)
    return TaskSchedule("cron", expr=cron_expression(task), tz=zone, **bounds)


celery_schedule = task_schedule


def next_runs(task, count=1, now=None):
    """The next `count` fire times in UTC, by the same rules beat applies."""
    now = now or datetime.now(timezone.utc)
    return task_schedule(task).upcoming(count, now, last=task.anchor_at)


def describe(task):
    """The schedule in plain words, for lists and pages."""
    zone = task.timezone or "UTC"
    if task.schedule_type == ScheduleType.INTERVAL:
        words = "Every " + _duration_words(task.interval_seconds)
    elif task.schedule_type == ScheduleType.ONCE:
        local = task.run_at.astimezone(ZoneInfo(zone)) if task.run_at else None
        words = f"Once, at {local:%Y-%m-%d %H:%M} ({zone})" if local else "Once"
    elif task.schedule_type == ScheduleType.FIXED_TIME:
        words = f"Every day at {task.fixed_time} ({zone})"
    else:
        try:
            options = Options()
            options.use_24hour_time_format = True
            words = f"{get_description(task.cron, options)} ({zone})"
        except Exception:  # cron-descriptor raises several types; the raw expression is a fine fallback
            logger.debug("could not describe cron %r", task.cron, exc_info=True)
            words = f"cron {task.cron} ({zone})"
    return words + _bounds_words(task)


def _bounds_words(task):
    parts = []
    if task.start_at:
        parts.append(f"from {task.start_at:%Y-%m-%d %H:%M} UTC")
    if task.end_at:
        parts.append(f"until {task.end_at:%Y-%m-%d %H:%M} UTC")
    if task.max_runs:
        parts.append(f"at most {task.max_runs} run{'s' if task.max_runs != 1 else ''}")
    return (", " + ", ".join(parts)) if parts else ""


def _duration_words(seconds):
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"
