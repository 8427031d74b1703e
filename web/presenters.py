"""How tasks and executions are shown: the shapes shared by pages and the API."""
import functools
import logging

from cron_descriptor import Options, get_description
from flask import current_app
from flask_babel import get_locale
from sqlalchemy import func

from promptbeat import schedules
from promptbeat.extensions import db
from promptbeat.models import Execution, ScheduleType, Task
from promptbeat.validation import TaskInputError, validate_task

logger = logging.getLogger(__name__)


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


def next_run(task):
    """When beat will next fire the task, or None when it is disabled."""
    return schedules.next_runs(task, 1)[0] if task.enabled else None


def task_json(task, last_execution=None):
    """A task as the API returns it."""
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
        "schedule_description": schedules.describe(task),
        "next_run_at": iso(next_run(task)),
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "last_run": execution_json(last_execution, brief=True) if last_execution else None,
        "connection_id": task.connection_id,
        "max_attempts": task.max_attempts,
        "request_timeout_seconds": task.request_timeout_seconds,
        "max_run_seconds": task.max_run_seconds,
        "webhook_url": task.webhook_url,
        "webhook_format": task.webhook_format,
    }
    if task.schedule_type != ScheduleType.INTERVAL:
        data["interval_minutes"] = None
    return data


def execution_json(execution, brief=False):
    """An execution as the API returns it; brief leaves out the output."""
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
        "cost_usd": execution.cost_usd,
        "error_class": execution.error_class,
        "attempt_count": len(execution.attempts or []),
        "webhook_status": execution.webhook_status,
    }
    if not brief:
        data["output"] = execution.output
        data["prompt"] = execution.prompt
        data["attempts"] = execution.attempts or []
        data["webhook_attempts"] = execution.webhook_attempts or []
    return data


SCHEDULE_INPUTS = ("schedule_type", "interval_minutes", "interval_seconds", "time", "cron", "timezone")


def schedule_preview(data, settings, count=5):
    """The schedule in words and its next runs, or the schedule fields' errors, for the live form preview."""
    probe = {key: data.get(key) for key in SCHEDULE_INPUTS if key in data}
    try:
        values = validate_task({**probe, "name": "preview", "prompt": "preview"}, settings)
    except TaskInputError as exc:
        return {"errors": {k: v for k, v in exc.errors.items() if k in SCHEDULE_INPUTS}, "runs": [],
                "description": None}
    # A transient, unsaved Task is what schedules.next_runs reads a schedule from.
    task = Task(**{k: values[k] for k in ("schedule_type", "interval_seconds", "fixed_time", "cron", "timezone")},
                enabled=True)
    return {"errors": {}, "description": describe_schedule(task), "runs": schedules.next_runs(task, count)}


def model_choices(limit=50):
    """Models to offer in the form's picker: the default, then those tasks already use."""
    used = db.session.execute(db.select(Task.model).distinct().order_by(Task.model).limit(limit)).scalars()
    default = current_app.config["PROMPTBEAT"].default_model
    return [default] + [model for model in used if model != default]


def describe_schedule(task):
    """The schedule in words in the page's language; English comes from the shared core."""
    if task.schedule_type not in set(ScheduleType):
        return schedules.describe(task)
    key = (task.schedule_type, task.interval_seconds, task.fixed_time, task.cron, task.timezone)
    return _describe_cached(key, str(get_locale()))


@functools.lru_cache(maxsize=4096)
def _describe_cached(key, locale):
    # Describing a cron expression takes about a millisecond; a dashboard shows many alike.
    schedule_type, interval_seconds, fixed_time, cron, zone = key
    task = Task(schedule_type=schedule_type, interval_seconds=interval_seconds, fixed_time=fixed_time, cron=cron,
                timezone=zone)
    if not locale.startswith("zh"):
        return schedules.describe(task)
    zone = task.timezone or "UTC"
    if task.schedule_type == ScheduleType.INTERVAL:
        return "每" + _chinese_duration(task.interval_seconds)
    if task.schedule_type == ScheduleType.FIXED_TIME:
        return f"每天 {task.fixed_time}（{zone}）"
    if task.schedule_type == ScheduleType.CRONTAB:
        try:
            options = Options()
            options.use_24hour_time_format = True
            options.locale_code = "zh_CN"
            words = get_description(task.cron, options)
            for english, chinese in CHINESE_NAMES.items():  # cron-descriptor's zh_CN leaves names in English
                words = words.replace(english, chinese)
            return f"{words}（{zone}）"
        except Exception:  # cron-descriptor raises several types; the English words are a fine fallback
            logger.debug("could not describe cron %r in Chinese", task.cron, exc_info=True)
    return schedules.describe(task)


CHINESE_NAMES = {
    **dict(zip(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
               ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"])),
    **dict(zip(["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                "November", "December"], [f"{n}月" for n in range(1, 13)])),
}


def _chinese_duration(seconds):
    for unit, size in (("天", 86400), ("小时", 3600), ("分钟", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f" {count} {unit}" if count != 1 else unit
    return f" {seconds} 秒"
