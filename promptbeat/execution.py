"""Running a task once: load it, call the model, and record the execution."""
import logging
import time
from datetime import datetime, timezone

from flask import current_app

from promptbeat import llm
from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, Task, Trigger, utcnow

logger = logging.getLogger(__name__)


def run_execution(task_id, trigger=Trigger.SCHEDULED, execution_id=None, fired_at=None, worker=None):
    """Run a task and record the result (and which worker ran it); returns the Execution, or None if the task is gone."""
    settings = current_app.config["PROMPTBEAT"]
    task = db.session.get(Task, task_id)
    if task is None:
        logger.info("task %s no longer exists; nothing to run", task_id)
        return None

    execution = db.session.get(Execution, execution_id) if execution_id else None
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
        _advance_anchor(task, fired_at)
    execution.status = ExecutionStatus.RUNNING
    execution.model = task.model
    execution.started_at = utcnow()
    execution.worker = worker
    db.session.commit()

    begun = time.monotonic()
    try:
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
    logger.info("task %s run %s (%s) %s in %d ms", task.id, execution.id, trigger, execution.status, execution.duration_ms)
    return execution


def _advance_anchor(task, fired_at):
    moment = _parse_moment(fired_at) or utcnow()
    if task.anchor_at is None or moment > task.anchor_at:
        task.anchor_at = moment


def _parse_moment(value):
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
