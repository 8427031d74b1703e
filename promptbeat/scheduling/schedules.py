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
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, available_timezones

from celery.schedules import BaseSchedule, schedstate
from croniter import croniter

from promptbeat.models import SCHEDULE_TYPES, ScheduleType

logger = logging.getLogger(__name__)

# How far ahead a new schedule's first run may lie. Ten years holds the sparsest cron that
# fires (29 February: eight years apart across 2100) and a start planned well ahead, while a
# mistyped year (2206, 9999) is refused; it also bounds croniter's search for a next match.
HORIZON_YEARS = 10
HORIZON = timedelta(days=365 * HORIZON_YEARS + 3)
# The largest interval or catch-up window a stored row may hold (the database's integer column).
MAX_SECONDS = 2**31 - 1
HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# What a person may type for a daily time: the hour with one digit or two ("7:30" or "07:30").
TIME_OF_DAY = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")

# What is wrong with a schedule, in fixed words (the pages translate them).
NEVER_FIRES = "This schedule never fires: no date matches it (for example 31 February)."
TOO_FAR = "The first run would be more than 10 years away."
RUN_AT_PASSED = "This time has passed; choose a time in the future."
ENDS_BEFORE_FIRST_RUN = "The end comes before the first run."
BEFORE_START = "The one-off time comes before the start."
UNKNOWN_TYPE = "The schedule type is not one of interval, fixed_time, crontab, once."
UNKNOWN_ZONE = "The time zone is not a known IANA name."
BAD_INTERVAL = "The interval is not a positive number of seconds."
BAD_TIME = "The time of day is not HH:MM."
BAD_CRON = "The cron expression is not a valid 5-field expression."
NO_RUN_AT = "A one-off task has no time to run at."
BAD_BOUND = "The start, end or catch-up window is not valid."
# Bound on how far back a search starts, so an ancient last-run time stays cheap.
MAX_LOOKBACK = timedelta(days=2)
# The default catch-up window is one interval, but never more than this.
MAX_DEFAULT_CATCHUP = timedelta(hours=1)
# How long beat sleeps at most when an entry has no slot left (one-off done, end passed).
IDLE_SECONDS = 300.0


class ScheduleError(ValueError):
    """A schedule that cannot be used: malformed, or without a fire time; names the input field to blame."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


class ScheduleOver(ScheduleError):
    """A schedule whose time has passed: an error for a new schedule, the natural end of a stored one."""


def _utc(moment):
    if moment is None:
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class ZonedCron:
    """A 5-field cron expression in an IANA zone, with the documented DST rule; None where no time matches."""

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


# Both searches answer None when no time matches within HORIZON_YEARS (31 February) or the
# match would fall off the calendar (year 1 or 9999 in some zone): croniter then raises
# CroniterBadDateError (a ValueError), OverflowError or a ValueError of its own date arithmetic.
@functools.lru_cache(maxsize=4096)
def _cron_next_after(expr, tz_name, minute):
    zone = ZoneInfo(tz_name)
    try:
        it = croniter(expr, minute.astimezone(zone), max_years_between_matches=HORIZON_YEARS)
        while True:
            candidate = it.get_next(datetime).astimezone(timezone.utc)
            if not (_once_per_wall_time(expr) and _repeated(candidate, zone)):
                return candidate
    except (ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=4096)
def _cron_newest_at_or_before(expr, tz_name, minute):
    zone = ZoneInfo(tz_name)
    try:
        it = croniter(expr, (minute + timedelta(seconds=1)).astimezone(zone), max_years_between_matches=HORIZON_YEARS)
        while True:
            candidate = it.get_prev(datetime).astimezone(timezone.utc)
            if not (_once_per_wall_time(expr) and _repeated(candidate, zone)):
                return candidate
    except (ValueError, OverflowError):
        return None


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
        slot = self.unbounded_slot_after(last)
        if slot is not None and self.end_at and slot > self.end_at:
            return None
        return slot

    def unbounded_slot_after(self, last):
        """The first slot after last (from now, or start_at, when last is None), ignoring end_at; None if none."""
        last = _utc(last)
        if self.kind == "once":
            passed = last is not None and self.run_at <= last
            return None if passed or (self.start_at and self.run_at < self.start_at) else self.run_at
        if self.kind == "interval":
            try:
                slot = (last + timedelta(seconds=self.every)) if last else self.now()
            except OverflowError:  # the next step would pass the year 9999
                return None
            return self.start_at if self.start_at and slot < self.start_at else slot
        origin = last or self.now()
        if self.start_at and origin < self.start_at:
            origin = self.start_at - timedelta(microseconds=1)
        return self.cron.next_after(origin)

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
            return max(first, self.cron.newest_at_or_before(horizon) or first)
        return first

    def catchup_window(self, slot):
        """How late a slot may still run: the task's window, else one interval capped at an hour."""
        if self.catchup is not None:
            return timedelta(seconds=self.catchup)
        if self.kind == "interval":
            return min(timedelta(seconds=self.every), MAX_DEFAULT_CATCHUP)
        following = self.cron.next_after(slot) if self.kind == "cron" else None
        if following is not None:
            return min(following - slot, MAX_DEFAULT_CATCHUP)
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


@functools.cache
def _zones():
    return frozenset(available_timezones()) | {"UTC"}


def known_zones():
    """Every IANA zone name this machine knows."""
    return _zones()


def known_zone(name):
    """Whether name is an IANA time zone this machine knows."""
    return isinstance(name, str) and name in _zones()


@functools.lru_cache(maxsize=1024)
def valid_cron(expression):
    """Whether expression is a standard 5-field cron expression (no seconds, years, random or hashed fields)."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        return False
    # croniter's R and H pick a random or hashed value per evaluation: beat and the pages would disagree.
    if any(part[:1] in ("R", "H") for part in re.split(r"[,/-]", expression.upper())):
        return False
    return croniter.is_valid(expression) and not any(
        _misread_range(index, field) for index, field in enumerate(expression.split()))


CRON_NAMES = {
    3: {name: number for number, name in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)},
    4: {name: number for number, name in enumerate("SUN MON TUE WED THU FRI SAT".split())},
}
CRON_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _misread_range(index, field):
    # croniter reads a range whose ends are one value (5-5, MON-MON, 7-0), or that ends outside its
    # field (month 1-0), as the whole field: "5-5 * * * *" would run every minute. Refused instead.
    names = CRON_NAMES.get(index, {})
    low_bound, high_bound = CRON_BOUNDS[index]
    for part in field.split(","):
        ends = part.split("/")[0].upper().split("-")
        if len(ends) != 2:
            continue
        try:
            low, high = (names[end] if end in names else int(end) for end in ends)
        except ValueError:
            continue  # not numbers or names (L, W, #): croniter's own check stands
        if not (low_bound <= low <= high_bound and low_bound <= high <= high_bound):
            return True
        if (low % 7 == high % 7 and (low, high) != (0, 7)) if index == 4 else low == high:
            return True
    return False


def cron_expression(task):
    """The cron expression behind a fixed_time or crontab task."""
    if task.schedule_type == ScheduleType.FIXED_TIME:
        hour, minute = task.fixed_time.split(":")
        return f"{int(minute)} {int(hour)} * * *"
    return task.cron


def task_schedule(task):
    """The schedule object beat evaluates for this task; ScheduleError if the stored values cannot make one."""
    zone = task.timezone or "UTC"
    if not known_zone(zone):
        raise ScheduleError("timezone", UNKNOWN_ZONE)
    catchup = task.catchup_seconds
    if not (_bound(task.start_at) and _bound(task.end_at) and (catchup is None or _seconds(catchup, low=0))):
        raise ScheduleError("start_at", BAD_BOUND)
    bounds = {"start_at": task.start_at, "end_at": task.end_at, "catchup": catchup}
    kind = task.schedule_type
    if kind == ScheduleType.INTERVAL:
        if not _seconds(task.interval_seconds, low=1):
            raise ScheduleError("interval_seconds", BAD_INTERVAL)
        return TaskSchedule("interval", every=task.interval_seconds, tz=zone, **bounds)
    if kind == ScheduleType.ONCE:
        if not isinstance(task.run_at, datetime):
            raise ScheduleError("run_at", NO_RUN_AT)
        return TaskSchedule("once", run_at=task.run_at, tz=zone, **bounds)
    if kind == ScheduleType.FIXED_TIME and not (isinstance(task.fixed_time, str) and HHMM.match(task.fixed_time)):
        raise ScheduleError("time", BAD_TIME)
    if kind == ScheduleType.CRONTAB and not valid_cron(task.cron):
        raise ScheduleError("cron", BAD_CRON)
    if kind not in SCHEDULE_TYPES:
        raise ScheduleError("schedule_type", UNKNOWN_TYPE)
    return TaskSchedule("cron", expr=cron_expression(task), tz=zone, **bounds)


def _bound(value):
    return value is None or (isinstance(value, datetime) and value.tzinfo is not None)


def _seconds(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_SECONDS



def next_runs(task, count=1, now=None):
    """The next `count` fire times in UTC, by the same rules beat applies; none for a schedule beat cannot use."""
    now = now or datetime.now(timezone.utc)
    try:
        schedule = task_schedule(task)
    except ScheduleError as exc:
        logger.info("task %s has an unusable schedule: %s", task.id, exc.message)
        return []
    return schedule.upcoming(count, now, last=task.anchor_at)


def first_run(task, now=None):
    """When a task saved now with this schedule first fires; ScheduleError naming the field to blame if never.

    The check every new or changed schedule passes: a next fire time within HORIZON, before any end.
    """
    now = now or datetime.now(timezone.utc)
    schedule = task_schedule(task)
    if schedule.kind == "once" and schedule.run_at <= now:
        raise ScheduleOver("run_at", RUN_AT_PASSED)
    limit = now + HORIZON
    if schedule.start_at and schedule.start_at > limit:
        raise ScheduleError("start_at", TOO_FAR)
    # As the pages count: an interval task's run at save is extra, its first slot is one interval on.
    slot = schedule.unbounded_slot_after(now)
    blame = {"once": "run_at", "interval": "interval_seconds"}.get(schedule.kind, _cron_field(task))
    if slot is None and schedule.kind == "once":
        raise ScheduleError("run_at", BEFORE_START)
    if slot is None:
        raise ScheduleError(blame, NEVER_FIRES)
    if slot > limit:
        raise ScheduleError("start_at" if schedule.start_at and schedule.start_at > now else blame, TOO_FAR)
    if schedule.end_at and slot > schedule.end_at:
        raise ScheduleOver("end_at", ENDS_BEFORE_FIRST_RUN)
    return slot


def _cron_field(task):
    return "time" if task.schedule_type == ScheduleType.FIXED_TIME else "cron"


def problem(task, now=None):
    """What keeps a stored task's schedule from working, in words, or None.

    A schedule that has run its course (a one-off in the past, an end that has passed) is no problem.
    """
    try:
        first_run(task, now)
    except ScheduleOver:
        return None
    except ScheduleError as exc:
        return exc.message
    return None


def local_time(moment, zone):
    """moment in the named zone, with the zone's name; in UTC where the zone is unknown or the calendar ends."""
    if not isinstance(moment, datetime):
        return None, zone
    if known_zone(zone):
        try:
            return moment.astimezone(ZoneInfo(zone)), zone
        except OverflowError:
            pass
    return _utc(moment), "UTC"
