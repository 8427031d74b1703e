"""How tasks and executions are shown: the shapes shared by pages and the API."""
import dataclasses
import functools
from datetime import datetime, timezone

from flask import current_app
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import func

from promptbeat.scheduling import descriptions, schedules
from promptbeat.extensions import db
from promptbeat.notify import ledger
from promptbeat.runs.budget import Usage
from promptbeat.runs.states import RunStatus
from promptbeat.models import SCHEDULE_TYPES, Execution, ScheduleType, Task
from promptbeat.validation import validate_schedule


def iso(moment):
    """ISO 8601 in UTC, or None."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def latest_executions(task_ids):
    """The newest execution of each task, in one query: {task_id: Execution}."""
    if not task_ids:
        return {}
    newest = (
        db.select(func.max(Execution.id))
        .where(Execution.task_id.in_(task_ids))
        .group_by(Execution.task_id)
    )
    rows = db.session.execute(db.select(Execution).where(Execution.id.in_(newest))).scalars()
    return {row.task_id: row for row in rows}


PREVIEW_COUNT = 5


def next_runs(task, count=PREVIEW_COUNT):
    """The task's next fire times, as beat decides them; none while it is paused or completed."""
    return schedules.next_runs(task, count) if task.enabled else []


def next_run(task):
    """When beat will next fire the task, or None."""
    runs = next_runs(task, 1)
    return runs[0] if runs else None


# Schedule messages from promptbeat.scheduling.schedules and promptbeat.validation; listed so extraction finds them.
SCHEDULE_WORDS = (
    _l("This schedule never fires: no date matches it (for example 31 February)."),
    _l("The first run would be more than 10 years away."), _l("This time has passed; choose a time in the future."),
    _l("The end comes before the first run."), _l("The one-off time comes before the start."),
    _l("The schedule type is not one of interval, fixed_time, crontab, once."),
    _l("The time zone is not a known IANA name."), _l("The interval is not a positive number of seconds."),
    _l("The time of day is not HH:MM."), _l("The cron expression is not a valid 5-field expression."),
    _l("A one-off task has no time to run at."), _l("The start, end or catch-up window is not valid."),
    _l("Unknown time zone; use an IANA name such as Europe/Berlin."),
    _l("Use a date and time between the years 1 and 9999 in UTC."),
)


def schedule_problem(task):
    """What keeps the task's schedule from working, in the page's language, or None."""
    message = schedules.problem(task)
    return gettext(message) if message else None


def status(task):
    """active, paused or completed."""
    if task.completed_at is not None:
        return "completed"
    return "active" if task.enabled else "paused"


def task_json(task, last_execution=None, spend=None):
    """A task as the API returns it; spend, its promptbeat.runs.budget.Usage, counts as nothing when not given."""
    data = {
        "id": task.id,
        "name": task.name,
        "prompt": task.prompt,
        "system_prompt": task.system_prompt,
        "model": task.model,
        "temperature": task.temperature,
        "max_tokens": task.max_tokens,
        "schedule_type": task.schedule_type,
        "interval_seconds": task.interval_seconds,
        "interval_minutes": task.interval_seconds / 60 if task.interval_seconds else None,
        "time": task.fixed_time,
        "cron": task.cron,
        "timezone": task.timezone,
        "enabled": task.enabled,
        "schedule_description": descriptions.describe(task),
        "next_run_at": iso(next_run(task)),
        "next_runs": [iso(moment) for moment in next_runs(task)],
        "status": status(task),
        "pause_note": task.pause_note,
        "run_at": iso(task.run_at),
        "start_at": iso(task.start_at),
        "end_at": iso(task.end_at),
        "max_runs": task.max_runs,
        "run_count": task.run_count,
        "completed_at": iso(task.completed_at),
        "overlap_policy": task.overlap_policy,
        "catchup_seconds": task.catchup_seconds,
        "auto_pause_after": task.auto_pause_after,
        "consecutive_failures": task.consecutive_failures,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "last_run": execution_json(last_execution, brief=True) if last_execution else None,
        "connection_id": task.connection_id,
        "max_attempts": task.max_attempts,
        "request_timeout_seconds": task.request_timeout_seconds,
        "max_run_seconds": task.max_run_seconds,
        "output_schema": task.output_schema,
        "ignore_patterns": task.ignore_patterns,
        "fallbacks": task.fallbacks or [],
        "notify_on": list(task.notify_on or []),
        "channel_ids": [channel.id for channel in task.channels],
        "batch": task.batch,
        "budget_usd_day": task.budget_usd_day,
        "budget_usd_month": task.budget_usd_month,
        "budget_tokens_day": task.budget_tokens_day,
        "budget_tokens_month": task.budget_tokens_month,
        "pause_on_budget": task.pause_on_budget,
        "spend": spend_json(spend),
        "jitter_seconds": task.jitter_seconds or 0,
        "first_run_delay_seconds": task.first_run_delay_seconds or 0,
    }
    if task.schedule_type != ScheduleType.INTERVAL:
        data["interval_minutes"] = None
    return data


def spend_json(usage):
    """Spend in the current day and month (a promptbeat.runs.budget.Usage) as the API returns it."""
    return dataclasses.asdict(usage or Usage())


def budget_parts(limits, usage):
    """Spend against each budget that is set, as short phrases for the pages ("$0.0120 / $1 today").

    limits is a task or the settings (both name their budgets budget_usd_day etc.), usage its Usage.
    """
    usage = usage or Usage()
    parts = []
    for limit, spent, text in (
            (limits.budget_usd_day, usage.usd_day, _l("today")),
            (limits.budget_usd_month, usage.usd_month, _l("this month"))):
        if limit is not None:
            parts.append(f"${spent:.4f} / ${limit:g} {text}")
    for limit, spent, text in (
            (limits.budget_tokens_day, usage.tokens_day, _l("tokens today")),
            (limits.budget_tokens_month, usage.tokens_month, _l("tokens this month"))):
        if limit is not None:
            parts.append(f"{spent:,} / {limit:,} {text}")
    return parts


def budget_json(settings, usage):
    """The global budgets and the spend of all tasks against them."""
    return {"timezone": settings.budget_timezone, "budget_usd_day": settings.budget_usd_day,
            "budget_usd_month": settings.budget_usd_month, "budget_tokens_day": settings.budget_tokens_day,
            "budget_tokens_month": settings.budget_tokens_month, "spend": spend_json(usage)}


def execution_json(execution, brief=False, deliveries=None):
    """An execution as the API returns it; brief leaves out the output and deliveries.

    deliveries, the run's ledger summary (promptbeat.notify.ledger.summaries), is read when not given.
    """
    data = {
        "id": execution.id,
        "task_id": execution.task_id,
        "status": execution.status,
        "trigger": execution.trigger,
        "model": execution.model,
        "created_at": iso(execution.created_at),
        "started_at": iso(execution.started_at),
        "finished_at": iso(execution.finished_at),
        "duration_ms": execution.duration_ms,
        "error": execution.error,
        "prompt_tokens": execution.prompt_tokens,
        "completion_tokens": execution.completion_tokens,
        "total_tokens": execution.total_tokens,
        "slot": iso(execution.slot),
        "catch_up": execution.catch_up,
        "cost_usd": execution.cost_usd,
        "error_class": execution.error_class,
        "attempt_count": len(execution.attempts or []),
        "retry_of": execution.retry_of,
        "worker": execution.worker,
        "changed": execution.changed,
        "answered_model": execution.answered_model,
        "answered_connection_id": execution.answered_connection_id,
        "batch_id": execution.batch_id,
    }
    # Kept on the row once it runs, shown only while it waits.
    waiting = execution.status == RunStatus.WAITING
    data["wait_reason"] = execution.wait_reason if waiting else None
    data["not_before"] = iso(execution.not_before) if waiting else None
    if not brief:
        data["output"] = execution.output
        data["prompt"] = execution.prompt
        data["attempts"] = execution.attempts or []
        data["parsed_output"] = execution.parsed_output
        data["diff"] = execution.diff
        if deliveries is None:
            deliveries = ledger.summaries([execution.id])[execution.id]
        data["deliveries"] = deliveries
    return data


def schedule_preview(data, settings, describe=descriptions.describe):
    """An unsaved schedule in words and its next runs, by beat's rules; raises TaskInputError on bad input.

    The one preview behind the API, the JSON endpoint for the session and the form's live fragment.
    """
    task = Task(**validate_schedule(data, settings), enabled=True)
    # An unsaved task has run no times yet: it fires at most max_runs times in all.
    count = min(PREVIEW_COUNT, task.max_runs) if task.max_runs else PREVIEW_COUNT
    now = datetime.now(timezone.utc)
    # Saving an enabled interval task runs it at once (promptbeat.service), a run that counts like a scheduled one.
    immediate = task.schedule_type == ScheduleType.INTERVAL and (task.start_at is None or task.start_at <= now)
    runs = ([now] if immediate else []) + schedules.next_runs(task, count - immediate, now=now)
    return {"description": describe(task), "runs": runs, "immediate": immediate, "timezone": task.timezone}


def preview_json(preview):
    """A schedule preview as the API returns it."""
    return {"description": preview["description"], "next_runs": [iso(moment) for moment in preview["runs"]]}


def model_choices(limit=50):
    """Models to offer in the form's picker: the default, then those tasks already use."""
    used = db.session.execute(db.select(Task.model).distinct().order_by(Task.model).limit(limit)).scalars()
    default = current_app.config["PROMPTBEAT"].default_model
    return [default] + [model for model in used if model != default]


DESCRIBED = ("schedule_type", "interval_seconds", "fixed_time", "cron", "timezone", "run_at", "start_at", "end_at",
             "max_runs")


def describe_schedule(task):
    """The schedule in words in the page's language."""
    if task.schedule_type not in SCHEDULE_TYPES:
        return descriptions.describe(task)
    key = tuple(getattr(task, name) for name in DESCRIBED)
    return _describe_cached(key, descriptions.language_of(get_locale()))


@functools.lru_cache(maxsize=4096)
def _describe_cached(key, language):
    # Describing a cron expression parses it afresh each time; a dashboard shows many alike.
    return descriptions.describe(Task(**dict(zip(DESCRIBED, key))), language)
