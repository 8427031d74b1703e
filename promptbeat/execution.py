"""Running a task once: load it, call the model, and record the execution."""
import logging
import time
from datetime import datetime, timezone

from flask import current_app
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from promptbeat import lifecycle, llm
from promptbeat.extensions import db
from promptbeat.limits import llm_call_slot
from promptbeat.models import Execution, ExecutionStatus, OverlapPolicy, Task, Trigger, utcnow
from promptbeat.overlap import run_guard
from promptbeat.slots import claim_slot
from promptbeat.sync import sync_task

logger = logging.getLogger(__name__)


def run_execution(task_id, trigger=Trigger.SCHEDULED, execution_id=None, fired_at=None, worker=None, slot=None,
                  catch_up=False, allow_overlap=False):
    """Run a task and record the result (and which worker ran it); returns the Execution, or None if the task is gone.

    A scheduled run carries its slot: only the first dispatch of a slot creates an
    execution, any later one returns that execution without running anything.
    """
    settings = current_app.config["PROMPTBEAT"]
    task = db.session.get(Task, task_id)
    if task is None:
        logger.info("task %s no longer exists; nothing to run", task_id)
        return None

    execution = db.session.get(Execution, execution_id) if execution_id else None
    slot = _parse_moment(slot)
    if execution is None and slot is not None:
        execution, claimed = claim_slot(task, slot, trigger, catch_up=bool(catch_up))
        if not claimed:
            return execution
    if execution is None:
        execution = Execution(task=task, trigger=trigger, status=ExecutionStatus.QUEUED, created_at=utcnow())
        db.session.add(execution)
    if ExecutionStatus(execution.status).is_final:
        logger.info("execution %s already finished; not running it again", execution.id)
        return execution

    if not task.enabled and trigger != Trigger.MANUAL:
        execution.status = ExecutionStatus.SKIPPED
        execution.error = "The task was disabled before this run started."
        execution.finished_at = utcnow()
        db.session.commit()
        return execution

    if trigger == Trigger.SCHEDULED:
        _advance_anchor(task, slot or fired_at)
        reason = lifecycle.out_of_bounds(task, slot)
        if reason:
            return _skip(execution, reason)

    execution.worker = worker
    if task.overlap_policy == OverlapPolicy.ALLOW or allow_overlap:
        return _run(settings, task, execution, trigger)
    with run_guard(settings, task, execution) as reason:
        if reason:
            return _skip(execution, reason)
        return _run(settings, task, execution, trigger)


def _skip(execution, reason):
    execution.status = ExecutionStatus.SKIPPED
    execution.error = reason
    execution.finished_at = utcnow()
    db.session.commit()
    logger.info("task %s run %s skipped: %s", execution.task_id, execution.id, reason)
    return execution


def _run(settings, task, execution, trigger):
    execution.status = ExecutionStatus.RUNNING
    execution.model = task.model
    execution.started_at = utcnow()
    db.session.commit()

    begun = time.monotonic()
    try:
        with llm_call_slot(settings):
            completion = llm.complete(
                settings,
                model=task.model,
                prompt=task.prompt,
                system_prompt=task.system_prompt,
                temperature=task.temperature,
                max_tokens=task.max_tokens,
            )
    except llm.LLMError as exc:
        execution.status = ExecutionStatus.FAILED
        execution.error = str(exc)
        logger.warning("task %s run %s failed: %s", task.id, execution.id, exc)
    else:
        execution.status = ExecutionStatus.SUCCESS
        execution.output = completion.output
        execution.prompt_tokens = completion.prompt_tokens
        execution.completion_tokens = completion.completion_tokens
        execution.total_tokens = completion.total_tokens
    execution.finished_at = utcnow()
    execution.duration_ms = int((time.monotonic() - begun) * 1000)
    db.session.commit()
    # The task's counters in a transaction of their own: one that also held the execution's
    # row could deadlock with a concurrent delete of the task (tasks row, then its executions).
    try:
        if lifecycle.record_outcome(task, execution):
            db.session.commit()
            sync_task(current_app.extensions["celery"], task, reset_phase=False)
        else:
            db.session.commit()
    except (StaleDataError, OperationalError):
        db.session.rollback()
        logger.info("task %s changed or was deleted while run %s ran; its counters were not updated",
                    task.id, execution.id)
    logger.info("task %s run %s (%s) %s in %d ms", task.id, execution.id, trigger, execution.status, execution.duration_ms)
    return execution


def _advance_anchor(task, fired_at):
    moment = fired_at if isinstance(fired_at, datetime) else (_parse_moment(fired_at) or utcnow())
    if task.anchor_at is None or moment > task.anchor_at:
        task.anchor_at = moment


def _parse_moment(value):
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
