"""Running a task once: claim the run, call the model with retries, record the result, deliver it."""
import functools
import logging
import time
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from promptbeat import crypto, lifecycle, liveness, llm, overlap, prompts, retry, webhooks
from promptbeat.connections import endpoint_for
from promptbeat.extensions import db
from promptbeat.limits import llm_call_slot
from promptbeat.models import Execution, ExecutionStatus, OverlapPolicy, Task, Trigger, utcnow
from promptbeat.overlap import HELD_BY_THIS_RUN, NO_OTHER_RUN_RUNNING, run_guard
from promptbeat.slots import advance_anchor, claim_slot
from promptbeat.sync import sync_task

logger = logging.getLogger(__name__)
# The hot path reads and writes through the tables, not the mapped classes, with statements built once:
# loading a mapped Task, the ORM's bulk-update machinery and the Session's bookkeeping around each
# write cost more CPU than the statements themselves (docs/performance.md).
EXECUTIONS = Execution.__table__
TASKS = Task.__table__
# The run's task as a plain row (its attributes are the Task's columns); nothing in a run changes it.
READ_TASK = select(TASKS).where(TASKS.c.id == bindparam("task_id"))
READ_STATUS = select(EXECUTIONS.c.status).where(EXECUTIONS.c.id == bindparam("run_id"))
# Counting a run (by whether it failed), and the counters that decide whether its task stops
# (promptbeat.lifecycle.stop_after_run), read back by RETURNING where the database has it.
# A run is not a change to its task: updated_at ("Recently changed" on the dashboard) keeps its value
# instead of taking its onupdate.
COUNTED = {failed: {"run_count": TASKS.c.run_count + 1,
                    "consecutive_failures": TASKS.c.consecutive_failures + 1 if failed else 0,
                    "updated_at": TASKS.c.updated_at}
           for failed in (False, True)}
COUNT_RUN = {failed: update(TASKS).where(TASKS.c.id == bindparam("task_id")).values(counted)
             for failed, counted in COUNTED.items()}
COUNTERS = (TASKS.c.id, TASKS.c.run_count, TASKS.c.consecutive_failures, TASKS.c.auto_pause_after, TASKS.c.max_runs,
            TASKS.c.schedule_type)
COUNT_RUN_RETURNING = {failed: statement.returning(*COUNTERS) for failed, statement in COUNT_RUN.items()}
READ_COUNTERS = select(*COUNTERS).where(TASKS.c.id == bindparam("task_id"))


def _claim_statement(exclusive):
    # The claim (promptbeat.liveness) is recorded with the run: only its holder may finish it.
    statement = (update(EXECUTIONS)
                 .where(EXECUTIONS.c.id == bindparam("run_id"), EXECUTIONS.c.status == ExecutionStatus.QUEUED)
                 .values(status=ExecutionStatus.RUNNING, model=bindparam("v_model"),
                         started_at=bindparam("v_started_at"), worker=bindparam("v_worker"),
                         deadline_at=bindparam("v_deadline_at"), prompt=bindparam("v_prompt"),
                         runner=bindparam("v_runner")))
    return statement.where(NO_OTHER_RUN_RUNNING) if exclusive else statement


# A templated prompt is rendered after its run is claimed, and recorded as sent once rendered.
RECORD_PROMPT = (update(EXECUTIONS)
                 .where(EXECUTIONS.c.id == bindparam("run_id"), EXECUTIONS.c.status == ExecutionStatus.RUNNING)
                 .values(prompt=bindparam("v_prompt")))
# By exclusive: an exclusive claim (overlap policy skip) also needs no other run of the task marked
# running. Only a queued run is claimed: one left running by a dead worker is put back in the queue
# by promptbeat.recovery, never taken over by a redelivered message.
CLAIM = {exclusive: _claim_statement(exclusive) for exclusive in (False, True)}


@functools.cache
def _finish_statement(names):
    """UPDATE the given columns of a run that is still in an expected status, under the expected claim.

    A queued run has no claim; a running one is finished only by the holder of its claim, so a
    worker thought dead, whose run was started again elsewhere, writes nothing.
    """
    return (update(EXECUTIONS)
            .where(EXECUTIONS.c.id == bindparam("run_id"), EXECUTIONS.c.status == bindparam("expected"),
                   EXECUTIONS.c.runner.is_not_distinct_from(bindparam("claim")))
            .values({name: bindparam("v_" + name) for name in names}))


@functools.cache
def _finish_and_count_statement(names, failed):
    """_finish_statement and COUNT_RUN in one statement (PostgreSQL): the task counts the run only if
    its result was written, and RETURNs its counters.

    It changes the run's row, then its task's: the lock order of deleting a task (service.delete_task).
    """
    finished = _finish_statement(names).returning(EXECUTIONS.c.task_id).cte("finished_run")
    return update(TASKS).where(TASKS.c.id == finished.c.task_id).values(COUNTED[failed]).returning(*COUNTERS)


def run_execution(task_id, trigger=Trigger.SCHEDULED, execution_id=None, fired_at=None, worker=None, slot=None,
                  catch_up=False, allow_overlap=False, redelivered=False, sleep=time.sleep):
    """Run a task once (see run_once); returns the Execution as recorded, or None if it is gone."""
    run_id = run_once(task_id, trigger=trigger, execution_id=execution_id, fired_at=fired_at, worker=worker,
                      slot=slot, catch_up=catch_up, allow_overlap=allow_overlap, redelivered=redelivered, sleep=sleep)
    return _reload(run_id) if run_id else None


def run_once(task_id, trigger=Trigger.SCHEDULED, execution_id=None, fired_at=None, worker=None, slot=None,
             catch_up=False, allow_overlap=False, redelivered=False, sleep=time.sleep):
    """Run a task and record the result and the worker that ran it; returns the run's id, or None.

    Safe to call twice for the same run: a scheduled fire carries its slot, and only the first
    dispatch of a slot creates an execution; only the call that moves a run from queued to running
    does the work. A message the broker *redelivered* may still claim a slot's run left queued; a run
    left running by a dead worker is started again by promptbeat.recovery.

    This is the worker's hot path, kept to a few statements: hundreds of runs a second share one
    process's CPU. A run's row is only read back when something went unusual.
    """
    settings = current_app.config["PROMPTBEAT"]
    task = _read_task(task_id)
    if task is None:
        logger.info("task %s no longer exists; nothing to run", task_id)
        return None

    slot = _parse_moment(slot)
    if execution_id:
        # Whether it still exists, and may still run, is settled by the claim below.
        run_id = execution_id
    elif slot is not None:
        # A scheduled slot of an enabled task moves its anchor as it is claimed.
        run_id, claimed = claim_slot(task, slot, trigger, catch_up=bool(catch_up),
                                     advance_anchor=trigger == Trigger.SCHEDULED and task.enabled)
        if run_id is None or (not claimed and not redelivered):
            return run_id
    else:
        execution = Execution(task_id=task.id, trigger=trigger, status=ExecutionStatus.QUEUED, created_at=utcnow())
        db.session.add(execution)
        db.session.flush()
        run_id = execution.id
        db.session.commit()

    if not task.enabled and trigger != Trigger.MANUAL:
        return _skip(run_id, "The task was disabled before this run started.")
    if trigger == Trigger.SCHEDULED:
        if slot is None:
            advance_anchor(task.id, _parse_moment(fired_at) or utcnow())
        reason = lifecycle.out_of_bounds(task, slot)
        if reason:
            return _skip(run_id, reason)

    if task.overlap_policy == OverlapPolicy.ALLOW or allow_overlap:
        return _claim_and_run(settings, task, run_id, trigger, worker, sleep)
    with run_guard(settings, task, run_id) as reason:
        if reason == HELD_BY_THIS_RUN:
            logger.info("run %s is being run by another delivery of its message; leaving it", run_id)
            return run_id
        if reason:
            return _skip(run_id, reason)
        return _claim_and_run(settings, task, run_id, trigger, worker, sleep, exclusive=True)


def _skip(run_id, reason):
    if _finish(run_id, ExecutionStatus.QUEUED, status=ExecutionStatus.SKIPPED, error=reason, finished_at=utcnow()):
        logger.info("run %s skipped: %s", run_id, reason)
    return run_id


def _claim_and_run(settings, task, run_id, trigger, worker, sleep, exclusive=False):
    started = utcnow()
    task_id = task.id
    max_run = task.max_run_seconds or settings.max_run_seconds
    plan = _plan(task, run_id, settings, started)
    # No connection is held during the model call: hundreds of runs share a small pool. remove(), not
    # close(): close() would first build a Session for the many runs that never used one.
    db.session.remove()
    # One statement claims the run (only the delivery that moves it out of queued goes on) and records
    # what it will send, if it has nothing to render.
    claim = liveness.claiming(run_id)
    params = {"run_id": run_id, "v_model": task.model, "v_started_at": started, "v_worker": worker,
              "v_deadline_at": started + timedelta(seconds=max_run), "v_prompt": plan["prompt"], "v_runner": claim}
    if exclusive:
        params.update(guard_task_id=task_id, guard_horizon=overlap.horizon(settings, task, started))
    if not _write(CLAIM[exclusive], params):
        return _unclaimed(run_id, exclusive)
    if _templated(task):
        _render(plan, task, run_id, settings, started)

    result = _call_with_retries(plan, run_id, settings, max_run, sleep)
    result["cost_usd"] = estimate_cost(settings.prices, plan["model"], result)
    counted = lifecycle.counts(trigger)
    written, counters = _record_result(task_id, run_id, counted, result, claim)
    if not written:
        logger.info("run %s vanished, was cancelled, marked lost or started again elsewhere during the call; "
                    "result discarded", run_id)
        return run_id
    logger.info("task %s run %s (%s) %s in %d ms after %d attempt(s)", task_id, run_id, trigger,
                result["status"], result["duration_ms"], len(result["attempts"]))
    if counters is not None:
        _stop_if_last(task_id, run_id, trigger, counters, result["error"])
    if plan["webhook_url"]:
        _deliver_webhook(run_id, plan, settings, sleep)
    return run_id


def _unclaimed(run_id, exclusive):
    """Say why a run could not be claimed: gone, finished, another run of its task running, or another delivery."""
    with db.engine.connect() as connection:
        status = connection.execute(READ_STATUS, {"run_id": run_id}).scalar()
    if status is None:
        logger.info("run %s no longer exists; nothing to run", run_id)
    elif ExecutionStatus(status).is_final:
        logger.info("run %s already finished (%s); not running it again", run_id, status)
    elif exclusive and status == ExecutionStatus.QUEUED:
        return _skip(run_id, overlap.STILL_MARKED_RUNNING)
    else:
        logger.info("run %s is already running elsewhere (a duplicate message); leaving it", run_id)
    return run_id


def _record_result(task_id, run_id, counted, result, claim):
    """Write the result of a run still running and count a counted run on its task; returns (written, counters).

    counters (promptbeat.lifecycle.stop_after_run's input) is None for a run not counted, or when the
    task is gone. On PostgreSQL one statement does both. Elsewhere the count is a statement of its own,
    which the database adds to, so runs of one task that finish together each count.
    """
    failed = result["status"] == ExecutionStatus.FAILED
    names, params = _finish_params(run_id, ExecutionStatus.RUNNING, {"finished_at": utcnow(), **result}, claim)
    with db.engine.begin() as connection:
        if counted and connection.dialect.name == "postgresql":
            counters = connection.execute(_finish_and_count_statement(names, failed), params).one_or_none()
            # No row: the run vanished or was marked lost (or its task, and with it the run, was deleted).
            return counters is not None, counters
        written = bool(connection.execute(_finish_statement(names), params).rowcount)
    if not (written and counted):
        return written, None
    count = {"task_id": task_id}
    try:
        with db.engine.begin() as connection:
            if connection.dialect.update_returning:
                return True, connection.execute(COUNT_RUN_RETURNING[failed], count).one_or_none()
            connection.execute(COUNT_RUN[failed], count)  # SQLite before 3.35
            return True, connection.execute(READ_COUNTERS, count).one_or_none()
    except OperationalError:
        logger.info("task %s changed or was deleted while run %s ran; its counters were not updated", task_id, run_id)
        return True, None


def _stop_if_last(task_id, run_id, trigger, counters, error):
    """Pause or complete the task if the run just counted was its last (promptbeat.lifecycle.stop_after_run)."""
    stop = lifecycle.stop_after_run(counters, trigger, error)
    if not stop:
        return
    try:
        task = db.session.get(Task, task_id)
        if task is not None:
            for column, value in stop.items():
                setattr(task, column, value)
            db.session.commit()
            sync_task(current_app.extensions["celery"], task, reset_phase=False)
    except (StaleDataError, OperationalError):
        db.session.rollback()
        logger.info("task %s changed or was deleted while run %s ran; it was not stopped", task_id, run_id)


def _plan(task, run_id, settings, started):
    """Everything the call needs, read from the database before the connection is released."""
    plan = {
        "model": task.model, "system_prompt": task.system_prompt, "temperature": task.temperature,
        "max_tokens": task.max_tokens, "max_attempts": task.max_attempts or settings.max_attempts,
        "timeout": task.request_timeout_seconds or settings.llm_timeout_seconds,
        "webhook_url": task.webhook_url, "webhook_format": task.webhook_format, "task_id": task.id,
        "task_name": task.name, "prompt": None, "error": None, "endpoint": None,
    }
    try:
        plan["endpoint"] = endpoint_for(task, settings)
    except crypto.CryptoError as exc:
        plan["error"] = ("CryptoError", str(exc))
    if not _templated(task):
        try:
            limits = prompts.Limits.from_settings(settings)
            plan["prompt"] = prompts.render(task.prompt, limits, **_values(task, started))
        except prompts.PromptTemplateError as exc:
            plan["error"] = ("TemplateError", str(exc))
    return plan


def _templated(task):
    return "{" in task.prompt or "{" in (task.system_prompt or "")


def _values(task, started, run_count=0, last_output=None):
    return {"task_name": task.name, "timezone": task.timezone, "moment": started, "run_count": run_count,
            "last_output": last_output}


def _render(plan, task, run_id, settings, started):
    """Render the prompts of a claimed run, and record the prompt as sent; a failure is the run's error.

    After the claim, not before: a template that runs out of its budget fails its own run, which
    shows as running meanwhile, instead of holding its worker with nothing to show for it.
    """
    values = _values(task, started, _run_count(task.id, run_id), _last_output(task.id, run_id))
    db.session.remove()
    limits = prompts.Limits.from_settings(settings)
    try:
        plan["prompt"] = prompts.render(task.prompt, limits, **values)
        if task.system_prompt:
            plan["system_prompt"] = prompts.render(task.system_prompt, limits, **values)
    except prompts.PromptTemplateError as exc:
        plan["error"] = ("TemplateError", str(exc))
        return
    _write(RECORD_PROMPT, {"run_id": run_id, "v_prompt": plan["prompt"]})


def _run_count(task_id, run_id):
    return db.session.execute(db.select(func.count(Execution.id)).where(
        Execution.task_id == task_id, Execution.id < run_id)).scalar()


def _last_output(task_id, run_id):
    return db.session.execute(
        db.select(Execution.output)
        .where(Execution.task_id == task_id, Execution.id < run_id, Execution.status == ExecutionStatus.SUCCESS)
        .order_by(Execution.id.desc()).limit(1)
    ).scalar()


def _call_with_retries(plan, run_id, settings, max_run, sleep):
    """Call the model until it answers, a permanent error, the attempt bound or the run's deadline."""
    begun = time.monotonic()
    deadline = begun + max_run
    attempts = []

    def outcome(status, **values):
        return {"status": status, "attempts": attempts, "duration_ms": int((time.monotonic() - begun) * 1000),
                "output": None, "error": None, "error_class": None, "prompt_tokens": None,
                "completion_tokens": None, "total_tokens": None, **values}

    if plan["error"]:
        error_class, message = plan["error"]
        return outcome(ExecutionStatus.FAILED, error=message, error_class=error_class)
    for number in range(1, plan["max_attempts"] + 1):
        timeout = min(plan["timeout"], deadline - time.monotonic())
        record = {"attempt": number, "at": _iso(utcnow())}
        attempts.append(record)
        call_begun = time.monotonic()
        try:
            # The cap on calls in flight across all workers holds per attempt, not during backoff.
            with llm_call_slot(settings):
                completion = llm.complete(
                    plan["endpoint"], model=plan["model"], prompt=plan["prompt"],
                    system_prompt=plan["system_prompt"], temperature=plan["temperature"],
                    max_tokens=plan["max_tokens"], timeout=timeout,
                )
        except llm.LLMError as exc:
            record.update(ms=int((time.monotonic() - call_begun) * 1000), error_class=exc.error_class, error=str(exc))
            logger.warning("task %s run %s attempt %d failed: %s", plan["task_id"], run_id, number, exc)
            failed = outcome(ExecutionStatus.FAILED, error=str(exc), error_class=exc.error_class)
            if not retry.is_retryable(exc):
                return failed
            # The run's error stays the server's own message; its attempts show how often it was tried.
            if number == plan["max_attempts"]:
                return failed
            wait = retry.backoff_seconds(number, exc, settings.retry_base_seconds, settings.retry_max_seconds)
            if time.monotonic() + wait >= deadline - 1:
                record["gave_up"] = f"the next attempt would pass the run's limit of {max_run} s"
                return failed
            record["wait_s"] = round(wait, 3)
            _record_attempts(run_id, attempts)
            sleep(wait)
        else:
            record["ms"] = int((time.monotonic() - call_begun) * 1000)
            return outcome(ExecutionStatus.SUCCESS, output=completion.output, prompt_tokens=completion.prompt_tokens,
                           completion_tokens=completion.completion_tokens, total_tokens=completion.total_tokens)
    raise AssertionError("unreachable: the loop returns on its last attempt")


def _record_attempts(run_id, attempts):
    """Show the attempts so far on the run while it waits to try again."""
    db.session.execute(update(Execution).where(Execution.id == run_id, Execution.status == ExecutionStatus.RUNNING)
                       .values(attempts=list(attempts))
                       .execution_options(synchronize_session=False))
    db.session.commit()
    db.session.close()


def estimate_cost(prices, model, result):
    """USD from the price table (per million tokens), or None for a model without a price."""
    price = prices.get(model)
    if price is None or result.get("prompt_tokens") is None:
        return None
    prompt_price, completion_price = price
    cost = (result["prompt_tokens"] * prompt_price + (result.get("completion_tokens") or 0) * completion_price) / 1e6
    return round(cost, 8)


def _finish(run_id, expected_status, **values):
    """Write a result only if the run is still in expected_status; returns whether it was written."""
    names, params = _finish_params(run_id, expected_status, values)
    return bool(_write(_finish_statement(names), params))


def _finish_params(run_id, expected_status, values, claim=None):
    """The names of the columns a finish writes, and its parameters."""
    params = {"v_" + name: value for name, value in values.items()}
    return tuple(sorted(values)), {"run_id": run_id, "expected": expected_status, "claim": claim, **params}


def _read_task(task_id):
    with db.engine.connect() as connection:
        return connection.execute(READ_TASK, {"task_id": task_id}).one_or_none()


def _write(statement, params):
    """Run one write in a transaction of its own; returns the number of rows it changed.

    Under the worker's autocommit engine the transaction costs no round trip. Callers commit or
    close the Session first: on SQLite its open write would make this one wait.
    """
    with db.engine.begin() as connection:
        return connection.execute(statement, params).rowcount


def _deliver_webhook(run_id, plan, settings, sleep):
    """Post the result; every failure is recorded on the run and none changes its status."""
    try:
        execution = db.session.get(Execution, run_id)
        task = db.session.get(Task, plan["task_id"])
        if execution is None or task is None:
            return
        body = webhooks.payload(task, execution, plan["webhook_format"])
        db.session.close()
        status, attempts = webhooks.deliver(plan["webhook_url"], body, settings, sleep=sleep)
    except Exception as exc:  # a webhook must never fail the run
        logger.exception("webhook of run %s could not be delivered", run_id)
        status, attempts = "failed", [{"attempt": 1, "at": _iso(utcnow()), "error": type(exc).__name__}]
    db.session.execute(update(Execution).where(Execution.id == run_id)
                       .values(webhook_status=status, webhook_attempts=attempts)
                       .execution_options(synchronize_session=False))
    db.session.commit()


def _reload(run_id):
    db.session.expire_all()
    return db.session.get(Execution, run_id)


def _iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def _parse_moment(value):
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
