"""Celery tasks: thin, explicitly named wrappers around plain functions."""
from celery import shared_task

from promptbeat.execution import run_execution


@shared_task(name="promptbeat.execute_task", ignore_result=True)
def execute_task(task_id, trigger="scheduled", execution_id=None, fired_at=None):
    """Run a task once and record the execution."""
    execution = run_execution(task_id, trigger=trigger, execution_id=execution_id, fired_at=fired_at)
    return execution.id if execution else None
