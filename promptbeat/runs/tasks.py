"""Celery tasks: thin, explicitly named wrappers around plain functions."""
from celery import shared_task
from flask import current_app

from promptbeat.runs import liveness, recovery, store
from promptbeat.runs.pipeline import run
from promptbeat.runs.plan import RunRequest
from promptbeat.runs.states import RunStatus

# Flower shows the error; the run's page keeps all of it.
ERROR_CHARS = 500


class RunFailed(Exception):
    """Raised once a failed run is recorded, so its message is FAILURE in Flower, with the run's error.

    An expected exception (the task's `throws`): logged in one line, acknowledged (acks on failure),
    never retried or redelivered.
    """


@shared_task(name="promptbeat.execute_task", ignore_result=True, bind=True, throws=(RunFailed,))
def execute_task(self, task_id, trigger="scheduled", execution_id=None, slot=None, catch_up=False,
                 allow_overlap=False, delayed=False, reserved=False, not_before=None, wait_reason=None):
    """Run a task once and record the execution, with the name of the worker node that ran it.

    A redelivered message whose run was already claimed or finished is dropped (promptbeat.runs.recovery).
    The run can be abandoned while it runs: cancelled, or started again elsewhere (promptbeat.runs.liveness).
    """
    settings = current_app.config["PROMPTBEAT"]
    if execution_id is not None:
        recovery.message_received(execution_id)
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    if redelivered and recovery.drop_redelivered(settings, task_id, execution_id, slot):
        return f"task {task_id}: redelivered message dropped"
    request = RunRequest.from_message(task_id, trigger, execution_id=execution_id, slot=slot, catch_up=catch_up,
                                      allow_overlap=allow_overlap, redelivered=redelivered,
                                      worker=self.request.hostname, delayed=delayed, reserved=reserved,
                                      not_before=not_before, wait_reason=wait_reason)
    with liveness.in_flight(current_app._get_current_object(), self.request.hostname) as in_flight:
        run_id = run(request, settings)
    if in_flight.interrupted:
        return f"task {task_id} run {in_flight.run_id}: abandoned"
    return run_outcome(task_id, run_id)


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
    """Send again, or mark lost, runs whose worker died or message was lost (beat, every PROMPTBEAT_SWEEP_SECONDS)."""
    return recovery.sweep(current_app.config["PROMPTBEAT"], current_app.extensions["celery"])
