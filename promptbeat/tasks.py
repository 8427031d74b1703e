"""Celery tasks: thin, explicitly named wrappers around plain functions."""
from celery import shared_task
from flask import current_app

from promptbeat import liveness, recovery
from promptbeat.execution import run_once


@shared_task(name="promptbeat.execute_task", ignore_result=True, bind=True)
def execute_task(self, task_id, trigger="scheduled", execution_id=None, fired_at=None, slot=None, catch_up=False,
                 allow_overlap=False):
    """Run a task once and record the execution, with the name of the worker node that ran it.

    A redelivered message whose run was already claimed or finished is dropped (promptbeat.recovery).
    The run can be abandoned while it runs: cancelled, or started again elsewhere (promptbeat.liveness).
    """
    if execution_id is not None:
        recovery.message_received(execution_id)
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    if redelivered and recovery.drop_redelivered(current_app.config["PROMPTBEAT"], task_id, execution_id, slot):
        return None
    with liveness.in_flight(current_app._get_current_object(), self.request.hostname):
        return run_once(task_id, trigger=trigger, execution_id=execution_id, fired_at=fired_at,
                        worker=self.request.hostname, slot=slot, catch_up=catch_up, allow_overlap=allow_overlap,
                        redelivered=redelivered)


@shared_task(name="promptbeat.sweep_lost_runs", ignore_result=True)
def sweep_lost_runs_task(fired_at=None):
    """Send again, or mark lost, runs whose worker died or message was lost (beat, every PROMPTBEAT_SWEEP_SECONDS).

    fired_at is ignored: beat's entries pass it to every task they fire.
    """
    return recovery.sweep(current_app.config["PROMPTBEAT"], current_app.extensions["celery"])
