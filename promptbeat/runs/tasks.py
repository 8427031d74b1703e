"""Celery tasks: thin, explicitly named wrappers around plain functions."""
from celery import shared_task
from flask import current_app

from promptbeat.runs import store
from promptbeat.runs.pipeline import run
from promptbeat.runs.plan import RunRequest
from promptbeat.runs.states import RunStatus
from promptbeat.runs.sweep import sweep_lost_runs

# Flower shows the error; the run's page keeps all of it.
ERROR_CHARS = 500


class RunFailed(Exception):
    """Raised once a failed run is recorded, so its message is FAILURE in Flower, with the run's error.

    An expected exception (the task's `throws`): logged in one line, acknowledged (acks on failure),
    never retried or redelivered.
    """


@shared_task(name="promptbeat.execute_task", ignore_result=True, bind=True, throws=(RunFailed,))
def execute_task(self, task_id, trigger="scheduled", execution_id=None, slot=None, catch_up=False,
                 allow_overlap=False):
    """Run a task once and record the execution, with the name of the worker node that ran it.

    A redelivered message (its worker died or shut down mid-run) may retry a run left marked running.
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    request = RunRequest.from_message(task_id, trigger, execution_id=execution_id, slot=slot, catch_up=catch_up,
                                      allow_overlap=allow_overlap, redelivered=redelivered,
                                      worker=self.request.hostname)
    return run_outcome(task_id, run(request, current_app.config["PROMPTBEAT"]))


def run_outcome(task_id, run_id):
    """A one-line summary of the run as recorded; raises RunFailed for a failed run."""
    if run_id is None:
        return f"task {task_id}: nothing to run"
    outcome = store.outcome_of(run_id)
    if outcome is None:
        return f"task {task_id} run {run_id}: gone"
    status, error_class, error = outcome
    if status == RunStatus.FAILED:
        error = f"[{error_class}] {error}" if error_class else str(error)
        raise RunFailed(f"task {task_id} run {run_id} failed: {error[:ERROR_CHARS]}")
    return f"task {task_id} run {run_id}: {status}"


@shared_task(name="promptbeat.sweep_lost_runs", ignore_result=True)
def sweep_lost_runs_task():
    """Mark runs whose worker died mid-call as lost (fired by beat every PROMPTBEAT_SWEEP_SECONDS)."""
    return sweep_lost_runs(current_app.config["PROMPTBEAT"])
