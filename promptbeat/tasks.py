"""Celery tasks: thin, explicitly named wrappers around plain functions."""
from celery import shared_task

from promptbeat.execution import run_execution


@shared_task(name="promptbeat.execute_task", ignore_result=True, bind=True)
def execute_task(self, task_id, trigger="scheduled", execution_id=None, fired_at=None, slot=None, catch_up=False,
                 allow_overlap=False):
    """Run a task once and record the execution, with the name of the worker node that ran it."""
    execution = run_execution(task_id, trigger=trigger, execution_id=execution_id, fired_at=fired_at,
                              worker=self.request.hostname, slot=slot, catch_up=catch_up, allow_overlap=allow_overlap)
    return execution.id if execution else None
