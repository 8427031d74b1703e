"""Celery tasks: thin, explicitly named wrappers around plain functions."""
from celery import shared_task
from flask import current_app

from promptbeat.runs.pipeline import run
from promptbeat.runs.plan import RunRequest
from promptbeat.runs.sweep import sweep_lost_runs


@shared_task(name="promptbeat.execute_task", ignore_result=True, bind=True)
def execute_task(self, task_id, trigger="scheduled", execution_id=None, slot=None, catch_up=False,
                 allow_overlap=False):
    """Run a task once and record the execution, with the name of the worker node that ran it.

    A redelivered message (its worker died or shut down mid-run) may retry a run left marked running.
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    request = RunRequest.from_message(task_id, trigger, execution_id=execution_id, slot=slot, catch_up=catch_up,
                                      allow_overlap=allow_overlap, redelivered=redelivered,
                                      worker=self.request.hostname)
    return run(request, current_app.config["PROMPTBEAT"])


@shared_task(name="promptbeat.sweep_lost_runs", ignore_result=True)
def sweep_lost_runs_task():
    """Mark runs whose worker died mid-call as lost (fired by beat every PROMPTBEAT_SWEEP_SECONDS)."""
    return sweep_lost_runs(current_app.config["PROMPTBEAT"])
