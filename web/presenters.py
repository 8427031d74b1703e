"""How tasks and executions are shown: the shapes shared by pages and the API."""
from sqlalchemy import func

from promptbeat import schedules
from promptbeat.extensions import db
from promptbeat.models import Execution, ScheduleType, Task
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


def status(task):
    """active, paused or completed."""
    if task.completed_at is not None:
        return "completed"
    return "active" if task.enabled else "paused"


def preview_json(task):
    """The schedule preview: the next fire times and the schedule in words."""
    return {"next_runs": [iso(moment) for moment in schedules.next_runs(task, PREVIEW_COUNT)],
            "description": schedules.describe(task)}


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
        "slot": iso(execution.slot),
        "catch_up": execution.catch_up,
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


def schedule_preview(data, settings):
    """The next runs and words for an unsaved schedule; raises TaskInputError on bad input."""
    values = validate_schedule(data, settings)
    return preview_json(Task(**values, enabled=True))
