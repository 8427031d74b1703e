"""Reading batches in flight, bounded per tick (beat's fixed job): a batch that ended finishes its runs."""
import json
import logging

from sqlalchemy import bindparam, select

from promptbeat.batches import endpoints, ledger, results
from promptbeat.batches.submit import custom_id, tasks_of
from promptbeat.llm import client as llm
from promptbeat.llm import crypto
from promptbeat.extensions import db
from promptbeat.models import Execution, utcnow
from promptbeat.notify import dispatch
from promptbeat.runs import budget, store
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
ENDED = frozenset({"completed", "expired", "failed", "cancelled"})
RUNS_OF_BATCH = (select(EXECUTIONS.c.id, EXECUTIONS.c.task_id, EXECUTIONS.c.trigger, EXECUTIONS.c.started_at,
                        EXECUTIONS.c.budget_hold)
                 .where(EXECUTIONS.c.batch_id == bindparam("batch_id"), EXECUTIONS.c.status == RunStatus.SUBMITTED))
# Submitted runs past their deadline (the batch window plus PROMPTBEAT_BATCH_GRACE_SECONDS), bounded per tick.
STRANDED = (select(EXECUTIONS.c.id, EXECUTIONS.c.task_id, EXECUTIONS.c.batch_id)
            .where(EXECUTIONS.c.status == RunStatus.SUBMITTED, EXECUTIONS.c.deadline_at < bindparam("now"))
            .order_by(EXECUTIONS.c.id).limit(bindparam("limit")))
STRANDED_MESSAGE = ("No result arrived within the provider's 24 h batch window and PROMPTBEAT_BATCH_GRACE_SECONDS "
                    "after it; the run was given up.")


def poll(settings):
    """Read up to batches_per_tick batches in progress, finishing the runs of those that ended; then give up
    submitted runs that outlived the window. Returns how many batches ended."""
    ended = sum(_poll_one(settings, row) for row in ledger.due(settings.batches_per_tick))
    _lose_stranded(settings)
    return ended


def _poll_one(settings, row):
    try:
        endpoint = endpoints.endpoint(row.connection_id, settings)
        client = llm.client_for(endpoint)
        remote = llm.through_sdk(endpoint, client.batches.retrieve, batch_id=row.provider_id,
                                 timeout=settings.llm_timeout_seconds)
    except (crypto.CryptoError, llm.LLMError) as exc:
        if isinstance(exc, llm.LLMError) and (exc.status == 404 or exc.error_class == "ConnectionDeleted"):
            _lose_batch(row, f"The provider no longer knows batch {row.provider_id}, so its results cannot be "
                             f"read: {exc}")
            return 1
        logger.warning("batch %s could not be read (%s); trying again at a later tick", row.provider_id, exc)
        return 0
    if remote.status not in ENDED:
        return 0
    try:
        lines = _result_lines(settings, endpoint, client, remote)
    except llm.LLMError as exc:
        logger.warning("results of batch %s could not be read (%s); trying again at a later tick",
                       row.provider_id, exc)
        return 0
    message = _batch_message(remote)
    runs = _runs_of(row.provider_id)
    tasks = tasks_of(runs)
    now = utcnow()
    for run in runs:
        duration_ms = int((now - run.started_at).total_seconds() * 1000) if run.started_at else 0
        line = lines.get(custom_id(run.id))
        result = (results.from_line(line, settings, row.model, duration_ms) if line is not None
                  else results.failed(message, "Batch" + remote.status.title(), duration_ms))
        results.finish(tasks[run.task_id], run.id, row.provider_id, run.trigger, result, settings,
                       budget.from_record(run.budget_hold), row.model)
    ledger.end(row.id, remote.status, None if remote.status == "completed" else message)
    logger.info("batch %s %s: %d run(s) finished", row.provider_id, remote.status, len(runs))
    return 1


def _result_lines(settings, endpoint, client, remote):
    """Each line of the batch's output and error files, by custom_id."""
    lines = {}
    for file_id in (remote.output_file_id, remote.error_file_id):
        if not file_id:
            continue
        content = llm.through_sdk(endpoint, client.files.content, file_id=file_id, timeout=settings.llm_timeout_seconds)
        for text in content.text.splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                lines[line["custom_id"]] = line
    return lines


def _batch_message(remote):
    """The provider's own words for a batch that ended without a result for some run."""
    errors = getattr(remote, "errors", None)
    messages = [error.message for error in (getattr(errors, "data", None) or []) if getattr(error, "message", None)]
    if messages:
        return f"The provider's batch {remote.id} {remote.status}: " + "; ".join(messages)
    return f"The provider's batch {remote.id} ended {remote.status} without a result for this run."


def _runs_of(provider_id):
    with db.engine.connect() as connection:
        return connection.execute(RUNS_OF_BATCH, {"batch_id": provider_id}).all()


def _lose_batch(row, message):
    now = utcnow()
    for run in _runs_of(row.provider_id):
        if store.lose_submitted(run.id, row.provider_id, message, now):
            dispatch.after_lost(run.id, run.task_id)
    ledger.end(row.id, ledger.GONE, message)
    logger.warning("batch %s is gone: its runs were marked lost", row.provider_id)


def _lose_stranded(settings):
    now = utcnow()
    with db.engine.connect() as connection:
        stranded = connection.execute(STRANDED, {"now": now, "limit": settings.batch_max_runs}).all()
    for run in stranded:
        if store.lose_submitted(run.id, run.batch_id, STRANDED_MESSAGE, now):
            logger.warning("run %s marked lost: no result within its batch window", run.id)
            dispatch.after_lost(run.id, run.task_id)
