"""Sending collected runs: a JSONL file and a batch per connection and model, bounded per tick (beat's fixed job)."""
import json
import logging

from sqlalchemy import bindparam, select

from promptbeat.batches import endpoints, ledger, results
from promptbeat.batches.collect import COMPLETION_WINDOW
from promptbeat.extensions import db
from promptbeat.llm import client as llm
from promptbeat.llm import crypto
from promptbeat.models import Execution, Task
from promptbeat.runs import budget, store
from promptbeat.runs.retry import is_retryable
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
TASKS = Task.__table__
BATCH_ENDPOINT = "/v1/chat/completions"
_WAITING = (EXECUTIONS.c.status == RunStatus.SUBMITTED, EXECUTIONS.c.batch_id.is_(None))
GROUPS = (select(TASKS.c.connection_id, EXECUTIONS.c.model).join(TASKS, TASKS.c.id == EXECUTIONS.c.task_id)
          .where(*_WAITING).group_by(TASKS.c.connection_id, EXECUTIONS.c.model)
          .order_by(TASKS.c.connection_id, EXECUTIONS.c.model).limit(bindparam("limit")))
GROUP_RUNS = (select(EXECUTIONS.c.id, EXECUTIONS.c.task_id, EXECUTIONS.c.trigger, EXECUTIONS.c.batch_request,
                     EXECUTIONS.c.budget_hold)
              .join(TASKS, TASKS.c.id == EXECUTIONS.c.task_id)
              .where(*_WAITING, TASKS.c.connection_id.is_not_distinct_from(bindparam("connection_id")),
                     EXECUTIONS.c.model == bindparam("model"))
              .order_by(EXECUTIONS.c.id).limit(bindparam("limit")))
READ_TASKS = select(TASKS).where(TASKS.c.id.in_(bindparam("task_ids", expanding=True)))


def custom_id(run_id):
    """A run's custom_id in a batch file: its results come back under it."""
    return f"run-{run_id}"


def submit_pending(settings):
    """Send the runs waiting for a batch, at most batches_per_tick batches of batch_max_runs; returns runs sent."""
    with db.engine.connect() as connection:
        groups = connection.execute(GROUPS, {"limit": settings.batches_per_tick}).all()
    return sum(_submit_group(settings, group.connection_id, group.model) for group in groups)


def _submit_group(settings, connection_id, model):
    with db.engine.connect() as connection:
        runs = connection.execute(GROUP_RUNS, {"connection_id": connection_id, "model": model,
                                               "limit": settings.batch_max_runs}).all()
    if not runs:
        return 0
    try:
        endpoint = endpoints.endpoint(connection_id, settings)
        client = llm.client_for(endpoint)
        data = "".join(json.dumps({"custom_id": custom_id(run.id), "method": "POST", "url": BATCH_ENDPOINT,
                                   "body": run.batch_request}) + "\n" for run in runs).encode()
        uploaded = llm.through_sdk(endpoint, client.files.create, file=("promptbeat-batch.jsonl", data),
                                   purpose="batch", timeout=settings.llm_timeout_seconds)
        batch = llm.through_sdk(endpoint, client.batches.create, input_file_id=uploaded.id, endpoint=BATCH_ENDPOINT,
                                completion_window=COMPLETION_WINDOW, metadata={"source": "promptbeat"},
                                timeout=settings.llm_timeout_seconds)
    except crypto.CryptoError as exc:
        return _fail(settings, model, runs, str(exc), "CryptoError")
    except llm.LLMError as exc:
        if is_retryable(exc):
            logger.warning("batch of %d run(s) for %s could not be sent (%s); trying again at the next tick",
                           len(runs), model, exc)
            return 0
        return _fail(settings, model, runs, str(exc), exc.error_class)
    ledger.record(batch.id, connection_id, model, len(runs))
    sent = store.mark_batched([run.id for run in runs], batch.id)
    logger.info("sent %d run(s) for %s in batch %s", sent, model, batch.id)
    return sent


def tasks_of(runs):
    """The task rows of runs, by id."""
    if not runs:
        return {}
    with db.engine.connect() as connection:
        return {task.id: task for task in connection.execute(READ_TASKS, {"task_ids": list({r.task_id for r in runs})})}


def _fail(settings, model, runs, message, error_class):
    """Fail runs whose batch the provider refused (a permanent error: bad key, unknown model...); without usage,
    their budget holds are given back."""
    logger.warning("batch of %d run(s) refused: %s", len(runs), message)
    tasks = tasks_of(runs)
    for run in runs:
        results.finish(tasks[run.task_id], run.id, None, run.trigger, results.failed(message, error_class, 0),
                       settings, budget.from_record(run.budget_hold), model)
    return 0
