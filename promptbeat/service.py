"""Task operations shared by the form and the API: save, then sync the schedule, then run."""
import logging
from datetime import timedelta

import redis
from flask import current_app

from promptbeat.runs import message_ids
from promptbeat.extensions import db
from promptbeat.models import Execution, ScheduleType, Task, Trigger, utcnow
from promptbeat.ratelimits.limits import WaitReason
from promptbeat.runs import budget, overlap, store, waiting
from promptbeat.runs.tasks import execute_task
from promptbeat.scheduling.sync import remove_entry, sync_task
from promptbeat.validation import TaskInputError, task_values, validate_pause_note, validate_task

logger = logging.getLogger(__name__)

SCHEDULE_FIELDS = ("schedule_type", "interval_seconds", "fixed_time", "cron", "timezone", "run_at", "start_at",
                   "end_at", "max_runs")


def _celery():
    return current_app.extensions["celery"]


def _settings():
    return current_app.config["PROMPTBEAT"]


def create_task(data):
    """Validate and save a new task, register it with beat, and run it at once if it is an enabled interval task."""
    values = validate_task(data, _settings())
    if values["enabled"]:
        _check_enabled_cap()
    task = Task(**values, anchor_at=utcnow())
    db.session.add(task)
    db.session.commit()
    _after_save(task, schedule_restarted=True)
    return task


def update_task(task, data):
    """Apply a (partial) update; a rejected one changes nothing, in the database or in Redis."""
    values = validate_task(data, _settings(), base=task_values(task))
    if values["enabled"] and not task.enabled:
        _check_enabled_cap()
    was_enabled = task.enabled
    before = tuple(getattr(task, f) for f in SCHEDULE_FIELDS)
    for field, value in values.items():
        setattr(task, field, value)
    restarted = (not was_enabled and task.enabled) or before != tuple(getattr(task, f) for f in SCHEDULE_FIELDS)
    if restarted or task.schedule_type == ScheduleType.INTERVAL:
        task.anchor_at = utcnow()
    if task.enabled:
        task.pause_note = None
        task.consecutive_failures = 0
    if restarted and task.completed_at is not None:
        # Re-enabling or rescheduling a completed task starts its bounds afresh.
        task.completed_at, task.run_count = None, 0
    db.session.commit()
    _after_save(task, schedule_restarted=restarted)
    return task


def set_enabled(task, enabled, note=None):
    """Enable (resume) or disable (pause, with an optional note) a task.

    Resuming never fires the runs missed while paused: the schedule restarts from now
    (an interval task runs once at once, as on creation).
    """
    if enabled:
        return update_task(task, {"enabled": True})
    return _pause(task, note)


def _pause(task, note):
    # Only the note is checked: pausing must work for a task whose stored schedule no rule accepts
    # any more, which is when a person most needs to stop it.
    task.pause_note = validate_pause_note(note)
    task.enabled = False
    if task.schedule_type == ScheduleType.INTERVAL:
        task.anchor_at = utcnow()
    db.session.commit()
    _after_save(task, schedule_restarted=False)
    return task


def _check_enabled_cap():
    cap = _settings().max_enabled_tasks
    enabled = db.session.execute(db.select(db.func.count(Task.id)).where(Task.enabled.is_(True))).scalar()
    if enabled >= cap:
        raise TaskInputError({"enabled": f"At most {cap} tasks may be enabled at once (PROMPTBEAT_MAX_ENABLED_TASKS)."})


def delete_task(task):
    """Delete a task, its runs and its beat entry."""
    task_id = task.id
    # Runs first, then the task: the same lock order as a worker finishing a run (its
    # execution, then the task's counters), so the two cannot deadlock.
    store.delete_runs_of(task_id)
    budget.forget(task_id)
    db.session.delete(task)
    db.session.commit()
    try:
        remove_entry(_celery(), task_id)
    except Exception:
        logger.exception("could not remove the beat entry of deleted task %s; reconcile will", task_id)


def run_now(task, allow_overlap=False):
    """Queue a manual run, even of a paused task; it honours the overlap policy unless allow_overlap."""
    return enqueue_run(task, Trigger.MANUAL, allow_overlap=allow_overlap)


def enqueue_run(task, trigger, allow_overlap=False, run_id=None, delay=0):
    """Record a queued run (unless run_id names one recorded already), then hand it to a worker.

    With a delay (seconds), the run waits that long first, shown as waiting for its first-run delay.
    Returns the Execution as recorded.
    """
    if run_id is None:
        run_id = store.create(task.id, trigger, task.model)
    kwargs = {"trigger": str(trigger), "execution_id": run_id, "allow_overlap": allow_overlap}
    if delay:
        not_before = utcnow() + timedelta(seconds=delay)
        store.wait(run_id, WaitReason.FIRST_RUN_DELAY, not_before)
        kwargs.update(delayed=True, **waiting.moment_kwargs(not_before, WaitReason.FIRST_RUN_DELAY))
    try:
        # Through this app's own Celery (its broker), not whichever Celery app was made current last.
        _celery().tasks[execute_task.name].apply_async(
            (task.id,), kwargs, task_id=message_ids.id_for_run(run_id), shadow=message_ids.shadow_name(task.id),
            countdown=waiting.countdown(_settings(), delay) if delay else None)
        logger.info("queued %s run %s of task %s", trigger, run_id, task.id)
    except Exception as exc:
        logger.exception("could not queue run %s of task %s", run_id, task.id)
        store.fail_unqueued(run_id, f"Could not queue the run: the broker is unreachable ({type(exc).__name__}).")
    return db.session.get(Execution, run_id)


def cancel_run(execution):
    """Cancel a queued, waiting, running or submitted run; returns whether it was cancelled (False: it had ended).

    The row changes here; the worker holding a running run notices and abandons its call, and a
    queued run's message finds it cancelled and runs nothing.
    """
    if not store.cancel(execution.id):
        return False
    try:
        # A retry of the run must not wait for its worker to let go of the task's overlap lock.
        overlap.release_for_run(_settings(), execution.task_id, execution.id)
    except redis.RedisError:
        logger.warning("could not free the overlap lock of cancelled run %s; it expires", execution.id,
                       exc_info=True)
    logger.info("run %s of task %s cancelled", execution.id, execution.task_id)
    return True


def retry_run(execution):
    """Queue a new manual run retrying a failed, lost or cancelled one; returns it, or None if it may not."""
    run_id = store.create_retry(execution.id)
    if run_id is None:
        return None
    logger.info("run %s retries run %s", run_id, execution.id)
    return enqueue_run(execution.task, Trigger.MANUAL, run_id=run_id)


def _after_save(task, schedule_restarted):
    # Interval tasks run now and then every interval: the entry's phase restarts
    # with this run, so beat's first fire comes one full interval later.
    runs_now = (task.enabled and task.schedule_type == ScheduleType.INTERVAL
                and (task.start_at is None or task.start_at <= utcnow()))
    sync_task(_celery(), task, reset_phase=runs_now or schedule_restarted)
    if runs_now:
        enqueue_run(task, Trigger.IMMEDIATE, delay=task.first_run_delay_seconds)
