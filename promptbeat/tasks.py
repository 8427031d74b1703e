"""Celery tasks: thin, explicitly named wrappers around plain functions."""
from celery import shared_task
from flask import current_app
from sqlalchemy import bindparam, select

from promptbeat.execution import run_once, sweep_lost_runs
from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus

EXECUTIONS = Execution.__table__
READ_OUTCOME = select(EXECUTIONS.c.status, EXECUTIONS.c.error_class, EXECUTIONS.c.error).where(
    EXECUTIONS.c.id == bindparam("run_id"))
# Flower shows the error; the run's page keeps all of it.
ERROR_CHARS = 500


class RunFailed(Exception):
    """Raised once a failed run is recorded, so its message is FAILURE in Flower, with the run's error.

    An expected exception (the task's `throws`): logged in one line, acknowledged (acks on failure),
    never retried or redelivered.
    """


@shared_task(name="promptbeat.execute_task", ignore_result=True, bind=True, throws=(RunFailed,))
def execute_task(self, task_id, trigger="scheduled", execution_id=None, fired_at=None, slot=None, catch_up=False,
                 allow_overlap=False):
    """Run a task once and record the execution, with the name of the worker node that ran it.

    A redelivered message (its worker died or shut down mid-run) may retry a run left marked running.
    Returns what Flower shows as the result: the run and its status; raises RunFailed if it failed.
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    run_id = run_once(task_id, trigger=trigger, execution_id=execution_id, fired_at=fired_at,
                      worker=self.request.hostname, slot=slot, catch_up=catch_up, allow_overlap=allow_overlap,
                      redelivered=redelivered)
    return run_outcome(task_id, run_id)


def run_outcome(task_id, run_id):
    """A one-line summary of the run as recorded; raises RunFailed for a failed run."""
    if run_id is None:
        return f"task {task_id}: nothing to run"
    with db.engine.connect() as connection:
        row = connection.execute(READ_OUTCOME, {"run_id": run_id}).one_or_none()
    if row is None:
        return f"task {task_id} run {run_id}: gone"
    if row.status == ExecutionStatus.FAILED:
        error = f"[{row.error_class}] {row.error}" if row.error_class else str(row.error)
        raise RunFailed(f"task {task_id} run {run_id} failed: {error[:ERROR_CHARS]}")
    return f"task {task_id} run {run_id}: {row.status}"


@shared_task(name="promptbeat.sweep_lost_runs", ignore_result=True)
def sweep_lost_runs_task(fired_at=None):
    """Mark runs whose worker died mid-call as lost (fired by beat every PROMPTBEAT_SWEEP_SECONDS).

    fired_at is ignored: beat's entries pass it to every task they fire.
    """
    return sweep_lost_runs(current_app.config["PROMPTBEAT"])
