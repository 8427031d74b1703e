"""Task operations shared by the form and the API: save, then sync the schedule, then run."""
import logging

from flask import current_app

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, ScheduleType, Task, Trigger, utcnow
from promptbeat.sync import remove_entry, sync_task
from promptbeat.tasks import execute_task
from promptbeat.validation import task_values, validate_task

logger = logging.getLogger(__name__)

SCHEDULE_FIELDS = ("schedule_type", "interval_seconds", "fixed_time", "cron", "timezone")


def _celery():
    return current_app.extensions["celery"]


def _settings():
    return current_app.config["PROMPTBEAT"]


def create_task(data):
    """Validate and save a new task, register it with beat, and run it at once if it is an enabled interval task."""
    values = validate_task(data, _settings())
    task = Task(**values, anchor_at=utcnow())
    db.session.add(task)
    db.session.commit()
    _after_save(task, schedule_restarted=True)
    return task


def update_task(task, data):
    """Apply a (partial) update; a rejected one changes nothing, in the database or in Redis."""
    values = validate_task(data, _settings(), base=task_values(task))
    was_enabled = task.enabled
    before = tuple(getattr(task, f) for f in SCHEDULE_FIELDS)
    for field, value in values.items():
        setattr(task, field, value)
    restarted = (not was_enabled and task.enabled) or before != tuple(getattr(task, f) for f in SCHEDULE_FIELDS)
    if restarted or task.schedule_type == ScheduleType.INTERVAL:
        task.anchor_at = utcnow()
    db.session.commit()
    _after_save(task, schedule_restarted=restarted)
    return task


def set_enabled(task, enabled):
    """Enable or disable a task; enabling an interval task runs it at once."""
    return update_task(task, {"enabled": enabled})


def delete_task(task):
    """Delete a task, its runs and its beat entry."""
    task_id = task.id
    db.session.delete(task)
    db.session.commit()
    try:
        remove_entry(_celery(), task_id)
    except Exception:
        logger.exception("could not remove the beat entry of deleted task %s; reconcile will", task_id)


def run_now(task):
    """Queue a manual run, even of a disabled task; returns its execution."""
    return enqueue_run(task, Trigger.MANUAL)


def enqueue_run(task, trigger):
    """Record a queued execution, commit, then hand it to a worker."""
    execution = Execution(task=task, trigger=trigger, status=ExecutionStatus.QUEUED, model=task.model)
    db.session.add(execution)
    db.session.commit()
    try:
        execute_task.delay(task.id, trigger=str(trigger), execution_id=execution.id)
        logger.info("queued %s run %s of task %s", trigger, execution.id, task.id)
    except Exception as exc:
        logger.exception("could not queue run %s of task %s", execution.id, task.id)
        execution.status = ExecutionStatus.FAILED
        execution.error = f"Could not queue the run: the broker is unreachable ({type(exc).__name__})."
        execution.finished_at = utcnow()
        db.session.commit()
    return execution


def _after_save(task, schedule_restarted):
    # Interval tasks run now and then every interval: the entry's phase restarts
    # with this run, so beat's first fire comes one full interval later.
    runs_now = task.enabled and task.schedule_type == ScheduleType.INTERVAL
    sync_task(_celery(), task, reset_phase=runs_now or schedule_restarted)
    if runs_now:
        enqueue_run(task, Trigger.IMMEDIATE)
