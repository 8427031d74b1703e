"""Schedules for each task type: the Celery schedule beat fires by, next fire times, and words."""
import logging
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from celery.schedules import BaseSchedule, schedstate, schedule as interval_schedule
from cron_descriptor import Options, get_description
from croniter import croniter

from promptbeat.models import ScheduleType

logger = logging.getLogger(__name__)

# Bound on how far back a cron search starts, so an ancient last-run time stays cheap.
MAX_LOOKBACK = timedelta(days=2)


class ZonedCrontab(BaseSchedule):
    """A 5-field cron expression evaluated in an IANA time zone, independent of Celery's."""

    def __init__(self, expr, tz_name, nowfun=None, app=None):
        self.expr = expr
        self.tz_name = tz_name
        self.zone = ZoneInfo(tz_name)
        super().__init__(nowfun=nowfun, app=app)

    def now(self):
        return (self.nowfun or (lambda: datetime.now(timezone.utc)))()

    @property
    def tz(self):
        return self.zone

    def next_after(self, moment):
        """The first fire time strictly after moment, in UTC."""
        local = moment.astimezone(self.zone)
        return croniter(self.expr, local).get_next(datetime).astimezone(timezone.utc)

    def remaining_estimate(self, last_run_at):
        now = self.now()
        start = max(_aware(last_run_at), now - MAX_LOOKBACK)
        return self.next_after(start) - now

    def is_due(self, last_run_at):
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        now = self.now()
        return schedstate(True, (self.next_after(now) - now).total_seconds())

    def __eq__(self, other):
        if isinstance(other, ZonedCrontab):
            return (self.expr, self.tz_name) == (other.expr, other.tz_name)
        return NotImplemented

    def __reduce__(self):
        return (self.__class__, (self.expr, self.tz_name))

    def __repr__(self):
        return f"<ZonedCrontab {self.expr!r} {self.tz_name}>"


def _aware(moment):
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def cron_expression(task):
    """The cron expression behind a fixed_time or crontab task."""
    if task.schedule_type == ScheduleType.FIXED_TIME:
        hour, minute = task.fixed_time.split(":")
        return f"{int(minute)} {int(hour)} * * *"
    return task.cron


def celery_schedule(task):
    """The schedule object beat evaluates for this task."""
    if task.schedule_type == ScheduleType.INTERVAL:
        return interval_schedule(run_every=timedelta(seconds=task.interval_seconds))
    return ZonedCrontab(cron_expression(task), task.timezone or "UTC")


def next_runs(task, count=1, now=None):
    """The next `count` fire times in UTC, by the same rules beat applies."""
    now = now or datetime.now(timezone.utc)
    if task.schedule_type == ScheduleType.INTERVAL:
        step = timedelta(seconds=task.interval_seconds)
        anchor = task.anchor_at or now
        first = max(anchor + step, now)
        return [first + step * i for i in range(count)]
    cron = ZonedCrontab(cron_expression(task), task.timezone or "UTC")
    times, moment = [], now
    for _ in range(count):
        moment = cron.next_after(moment)
        times.append(moment)
    return times


def describe(task):
    """The schedule in plain words, for lists and pages."""
    if task.schedule_type == ScheduleType.INTERVAL:
        return "Every " + _duration_words(task.interval_seconds)
    zone = task.timezone or "UTC"
    if task.schedule_type == ScheduleType.FIXED_TIME:
        return f"Every day at {task.fixed_time} ({zone})"
    try:
        options = Options()
        options.use_24hour_time_format = True
        return f"{get_description(task.cron, options)} ({zone})"
    except Exception:  # cron-descriptor raises several types; the raw expression is a fine fallback
        logger.debug("could not describe cron %r", task.cron, exc_info=True)
        return f"cron {task.cron} ({zone})"


def _duration_words(seconds):
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"
