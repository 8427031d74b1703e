"""Preparing a run's call: its CallPlan from the task and settings, and its prompts rendered."""
from sqlalchemy import func

from promptbeat.llm import crypto
from promptbeat.llm.connections import endpoint_for
from promptbeat.extensions import db
from promptbeat.models import Execution
from promptbeat.runs import prompts, store
from promptbeat.runs.plan import CallPlan
from promptbeat.runs.states import RunStatus


def call_plan(task, settings, started):
    """The CallPlan of a run of task (a row of tasks); a prompt without variables is rendered at once."""
    plan = CallPlan(task_id=task.id, task_name=task.name, model=task.model, system_prompt=task.system_prompt,
                    temperature=task.temperature, max_tokens=task.max_tokens,
                    max_attempts=task.max_attempts or settings.max_attempts,
                    timeout=task.request_timeout_seconds or settings.llm_timeout_seconds,
                    max_run_seconds=task.max_run_seconds or settings.max_run_seconds,
                    output_schema=task.output_schema or None)
    try:
        plan.endpoint = endpoint_for(task, settings)
    except crypto.CryptoError as exc:
        plan.error = ("CryptoError", str(exc))
    if not templated(task):
        try:
            plan.prompt = prompts.render(task.prompt, prompts.Limits.from_settings(settings), **_values(task, started))
        except prompts.PromptTemplateError as exc:
            plan.error = ("TemplateError", str(exc))
    return plan


def templated(task):
    """Whether the task's prompts have variables, rendered only once the run is claimed."""
    return "{" in task.prompt or "{" in (task.system_prompt or "")


def render(plan, task, run_id, settings, started):
    """Render the prompts of a claimed run, and record the prompt as sent; a failure is the run's error.

    After the claim, not before: a template that runs out of its budget fails its own run, which
    shows as running meanwhile, instead of holding its worker with nothing to show for it.
    """
    values = _values(task, started, _run_count(task.id, run_id), _last_output(task.id, run_id),
                     _last_changed_at(task.id, run_id))
    db.session.remove()
    limits = prompts.Limits.from_settings(settings)
    try:
        plan.prompt = prompts.render(task.prompt, limits, **values)
        if task.system_prompt:
            plan.system_prompt = prompts.render(task.system_prompt, limits, **values)
    except prompts.PromptTemplateError as exc:
        plan.error = ("TemplateError", str(exc))
        return
    store.record_prompt(run_id, plan.prompt)


def _values(task, started, run_count=0, last_output=None, last_changed_at=None):
    return {"task_name": task.name, "timezone": task.timezone, "moment": started, "run_count": run_count,
            "last_output": last_output, "last_changed_at": last_changed_at}


def _run_count(task_id, run_id):
    return db.session.execute(db.select(func.count(Execution.id)).where(
        Execution.task_id == task_id, Execution.id < run_id)).scalar()


def _last_output(task_id, run_id):
    return db.session.execute(
        db.select(Execution.output)
        .where(Execution.task_id == task_id, Execution.id < run_id, Execution.status == RunStatus.SUCCESS)
        .order_by(Execution.id.desc()).limit(1)
    ).scalar()


def _last_changed_at(task_id, run_id):
    """When the task's output last changed: the newest successful run whose answer changed, or its first one."""
    return db.session.execute(
        db.select(Execution.finished_at)
        .where(Execution.task_id == task_id, Execution.id < run_id, Execution.status == RunStatus.SUCCESS,
               Execution.changed.is_not(False))
        .order_by(Execution.id.desc()).limit(1)
    ).scalar()
