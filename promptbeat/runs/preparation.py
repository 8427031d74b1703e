"""Preparing a run's call: its CallPlan from the task and settings, and its prompts rendered."""
import logging

from sqlalchemy import func

from promptbeat.llm import client as llm
from promptbeat.llm import crypto
from promptbeat.llm.connections import endpoint_of
from promptbeat.extensions import db
from promptbeat.models import Connection, Execution
from promptbeat.runs import prompts, store
from promptbeat.runs.plan import CallPlan, Target
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)


def call_plan(task, settings, started):
    """The CallPlan of a run of task (a row of tasks); a prompt without variables is rendered at once."""
    plan = CallPlan(task_id=task.id, task_name=task.name, model=task.model, system_prompt=task.system_prompt,
                    temperature=task.temperature, max_tokens=task.max_tokens,
                    max_attempts=task.max_attempts or settings.max_attempts,
                    timeout=task.request_timeout_seconds or settings.llm_timeout_seconds,
                    max_run_seconds=task.max_run_seconds or settings.max_run_seconds,
                    output_schema=task.output_schema or None, connection_id=task.connection_id)
    # The task may be a plain row (the worker's run path), so its connection is looked up by id.
    connection = db.session.get(Connection, task.connection_id) if task.connection_id else None
    if connection is None:
        # Its connection was deleted meanwhile: the default endpoint, as the task now shows.
        plan.connection_id = None
    plan.endpoint, error = _endpoint(connection, settings)
    if error:
        plan.error = error
    elif task.fallbacks or (connection is not None and connection.fallbacks):
        plan.fallbacks = _fallbacks(task, plan, connection, settings)
    if not templated(task):
        try:
            plan.prompt = prompts.render(task.prompt, prompts.Limits.from_settings(settings), **_values(task, started))
        except prompts.PromptTemplateError as exc:
            plan.error = ("TemplateError", str(exc))
    return plan


def _endpoint(connection, settings):
    """(endpoint, None), or (None, (error class, message)) when the connection's secrets cannot be decrypted."""
    if connection is None:
        return llm.Endpoint(base_url=settings.openai_base_url, api_key=settings.openai_api_key), None
    try:
        return endpoint_of(connection, settings), None
    except crypto.CryptoError as exc:
        return None, ("CryptoError", str(exc))


def _fallbacks(task, plan, connection, settings):
    """The fallback Targets: the task's own list, else its connection's (promptbeat.runs.fallbacks).

    An entry naming a deleted connection is left out, as is one repeating the task's own model and
    connection (a connection's list does not know the task's model).
    """
    entries = task.fallbacks or connection.fallbacks
    found, endpoints = [], {plan.connection_id: (plan.endpoint, None)}
    for entry in entries:
        connection_id = entry.get("connection_id") or plan.connection_id
        if (entry["model"], connection_id) == (plan.model, plan.connection_id):
            continue
        if connection_id not in endpoints:
            other = db.session.get(Connection, connection_id)
            if other is None:
                logger.warning("task %s: fallback connection %s no longer exists; left out", task.id, connection_id)
                continue
            endpoints[connection_id] = _endpoint(other, settings)
        endpoint, error = endpoints[connection_id]
        found.append(Target(entry["model"], connection_id, endpoint, error))
    return tuple(found)


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
