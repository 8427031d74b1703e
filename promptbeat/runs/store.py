"""The one writer of execution rows: every statement that creates a run or changes its state is here.

Each change of state is a conditional UPDATE whose WHERE names the states the table in
promptbeat.runs.states allows it from: a run in any other state is left as it is, and the caller
is told (no row changed). The hot path writes through the tables, not the mapped classes, with
statements built once: the ORM's bookkeeping around each write costs more CPU than the statements
themselves (docs/performance.md). Each write runs in a transaction of its own, so no run holds a
pooled connection while it waits for another.
"""
import functools
import logging

from sqlalchemy import bindparam, delete, false, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, utcnow
from promptbeat.runs import budget
from promptbeat.runs.overlap import NO_OTHER_RUN_RUNNING
from promptbeat.runs.states import PENDING, RETRYABLE, RunStatus, sources

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
TASKS = Task.__table__
# Named binds, none a column name of the updated table: keys of the parameters that match a column
# of an UPDATE's table join its SET clause.
CREATED = ("task_id", "trigger", "status", "slot", "catch_up", "model", "created_at", "retry_of")
INSERT_RUN = insert(EXECUTIONS).values({name: bindparam("run_" + name) for name in CREATED}).returning(EXECUTIONS.c.id)
FIND_SLOT_RUN = select(EXECUTIONS.c.id).where(EXECUTIONS.c.task_id == bindparam("task_id"),
                                              EXECUTIONS.c.slot == bindparam("slot"))
READ_STATUS = select(EXECUTIONS.c.status).where(EXECUTIONS.c.id == bindparam("run_id"))
READ_OUTCOME = select(EXECUTIONS.c.status, EXECUTIONS.c.error_class, EXECUTIONS.c.error).where(
    EXECUTIONS.c.id == bindparam("run_id"))
# Move the task's schedule anchor to a fire, unless a later fire already moved it. A fire is not a
# change to the task: updated_at keeps its value instead of taking its onupdate.
ADVANCE_ANCHOR = (update(TASKS)
                  .where(TASKS.c.id == bindparam("anchor_task_id"),
                         or_(TASKS.c.anchor_at.is_(None), TASKS.c.anchor_at < bindparam("anchor_to")))
                  .values(anchor_at=bindparam("anchor_to"), updated_at=TASKS.c.updated_at))
# A slot's claim advances the anchor in the same statement (a data-modifying WITH): one round trip.
INSERT_RUN_ADVANCING = INSERT_RUN.add_cte(ADVANCE_ANCHOR.cte("advanced_anchor"))
# A retry is a new manual run of the retried run's task, created only if that run ended retryable.
_RETRIED = EXECUTIONS.alias("retried")
INSERT_RETRY = (insert(EXECUTIONS)
                .from_select(["task_id", "trigger", "status", "model", "created_at", "retry_of"],
                             select(_RETRIED.c.task_id, literal(str(Trigger.MANUAL)), literal(str(RunStatus.QUEUED)),
                                    TASKS.c.model, bindparam("created_at"), _RETRIED.c.id)
                             .join(TASKS, TASKS.c.id == _RETRIED.c.task_id)
                             .where(_RETRIED.c.id == bindparam("of_run"),
                                    or_(*(_RETRIED.c.status == status for status in RETRYABLE))))
                .returning(EXECUTIONS.c.id))
# The counters that decide whether a task stops after a counted run (promptbeat.runs.lifecycle).
COUNTERS = (TASKS.c.id, TASKS.c.run_count, TASKS.c.consecutive_failures, TASKS.c.auto_pause_after, TASKS.c.max_runs,
            TASKS.c.schedule_type)
# Counting a run, by whether it failed. A run is not a change to its task: updated_at ("Recently
# changed" on the dashboard) keeps its value instead of taking its onupdate.
COUNTED = {failed: {"run_count": TASKS.c.run_count + 1,
                    "consecutive_failures": TASKS.c.consecutive_failures + 1 if failed else 0,
                    "updated_at": TASKS.c.updated_at}
           for failed in (False, True)}
LOST_MESSAGE = ("The run passed its deadline (PROMPTBEAT_MAX_RUN_SECONDS or the task's own) with its worker "
                "stuck or gone; it was not started again.")
# Every run still running past the cutoff (a live worker stuck beyond its deadline), at once.
MARK_LOST = (update(EXECUTIONS)
             .where(EXECUTIONS.c.status == RunStatus.RUNNING, EXECUTIONS.c.deadline_at < bindparam("cutoff"))
             .values(status=RunStatus.LOST, error=bindparam("v_error"), error_class=bindparam("v_error_class"),
                     finished_at=bindparam("v_finished_at"))
             .returning(EXECUTIONS.c.id, EXECUTIONS.c.task_id))
CANCELLED_MESSAGE = "Cancelled by an operator; the model call, if any, was abandoned."
_LOST_VALUES = ("error", "error_class", "finished_at")
# The columns a claim sets (promptbeat.runs.plan.Start.columns).
START_COLUMNS = ("deadline_at", "model", "prompt", "runner", "started_at", "worker")
# Only the holder of a running run's claim finishes it; a queued run has no claim (NULL), so the
# condition also holds for it.
HELD = EXECUTIONS.c.runner.is_not_distinct_from(bindparam("claim"))
# Only the poll of a submitted run's batch finishes it (None: a run that failed before it was sent).
IN_BATCH = EXECUTIONS.c.batch_id.is_not_distinct_from(bindparam("in_batch"))
MARK_BATCHED = (update(EXECUTIONS)
                .where(EXECUTIONS.c.id.in_(bindparam("run_ids", expanding=True)),
                       EXECUTIONS.c.status == RunStatus.SUBMITTED, EXECUTIONS.c.batch_id.is_(None))
                .values(batch_id=bindparam("v_batch_id")))


@functools.cache
def transition_statement(target, names=(), source=None, exclusive=False):
    """UPDATE a run to target, setting the named columns (bound as v_<name>), if it is in an allowed state.

    source narrows the states the table allows; exclusive adds the overlap guard's condition.
    """
    allowed = sources(target) if source is None else source
    if not set(allowed) <= set(sources(target)):
        raise ValueError(f"{target} cannot be reached from {allowed}")
    statement = (update(EXECUTIONS)
                 # Comparisons, not IN: an IN list is rendered again at every execution.
                 .where(EXECUTIONS.c.id == bindparam("run_id"), or_(false(), *(EXECUTIONS.c.status == s for s in allowed)))
                 .values(status=target, **{name: bindparam("v_" + name) for name in names}))
    return statement.where(NO_OTHER_RUN_RUNNING) if exclusive else statement


def transition(run_id, target, **values):
    """Move a run to target with the given column values; returns whether it moved (False: gone or not allowed)."""
    names = tuple(sorted(values))
    return bool(_write(transition_statement(RunStatus(target), names), _params(run_id, values)))


# A run whose runner died (promptbeat.runs.recovery), under the claim the dead runner held: back to
# the queue, counting the restart, or lost past its attempts.
_RUNNER_HELD = EXECUTIONS.c.runner == bindparam("claim")
REQUEUE_DEAD = (transition_statement(RunStatus.QUEUED, (), (RunStatus.RUNNING,)).where(_RUNNER_HELD)
                .values(runner=None, started_at=None, deadline_at=None, recoveries=EXECUTIONS.c.recoveries + 1))
LOSE_DEAD = transition_statement(RunStatus.LOST, _LOST_VALUES, (RunStatus.RUNNING,)).where(_RUNNER_HELD)
# A queued run whose message was lost: counted as sent again, or lost past its attempts; conditional
# on the count read, so two sweeps cannot both send it.
_UNCOUNTED = EXECUTIONS.c.recoveries == bindparam("seen")
RESEND_QUEUED = (update(EXECUTIONS)
                 .where(EXECUTIONS.c.id == bindparam("run_id"),
                        or_(*(EXECUTIONS.c.status == status for status in PENDING)), _UNCOUNTED)
                 .values(recoveries=EXECUTIONS.c.recoveries + 1))
LOSE_QUEUED = transition_statement(RunStatus.LOST, _LOST_VALUES, PENDING).where(_UNCOUNTED)


HELD_BY_SUBMITTED = (select(EXECUTIONS.c.budget_hold)
                     .where(EXECUTIONS.c.task_id == bindparam("task_id"), EXECUTIONS.c.status == RunStatus.SUBMITTED,
                            EXECUTIONS.c.budget_hold.is_not(None))
                     .order_by(EXECUTIONS.c.id).with_for_update())
# A cancel returns the run's budget hold, kept only by a submitted batch-mode run (promptbeat.runs.budget).
CANCEL = (transition_statement(RunStatus.CANCELLED, ("error", "error_class", "finished_at"))
          .returning(EXECUTIONS.c.budget_hold))


def create(task_id, trigger, model):
    """Record a queued run of a task (Run now, an interval task's immediate run); returns its id."""
    return _insert(INSERT_RUN, _run_row(task_id, trigger, model))


def create_retry(of_run):
    """Record a queued manual run retrying a failed, lost or cancelled one; returns its id, or None if it may not."""
    with db.engine.begin() as connection:
        return connection.execute(INSERT_RETRY, {"of_run": of_run, "created_at": utcnow()}).scalar_one_or_none()


def claim_slot(task, slot, trigger, catch_up=False, advance_anchor=False):
    """Create the run of this slot, and with advance_anchor move the task's anchor to it; returns (its id, claimed).

    The unique key (task_id, slot) decides: a second dispatch of the same slot (two beats, a
    redelivered message, a reconcile racing a fire) finds the first one's row and claimed is False,
    so the caller runs nothing (the id is None if that row is gone too); its anchor change is undone
    with its failed INSERT.
    """
    row = _run_row(task.id, trigger, task.model, slot=slot, catch_up=catch_up)
    try:
        if advance_anchor:
            return _insert(INSERT_RUN_ADVANCING, {**row, "anchor_task_id": task.id, "anchor_to": slot}), True
        return _insert(INSERT_RUN, row), True
    except IntegrityError:
        with db.engine.connect() as connection:
            existing = connection.execute(FIND_SLOT_RUN, {"task_id": task.id, "slot": slot}).scalar_one_or_none()
        logger.info("task %s slot %s was already claimed by run %s; not running it again",
                    task.id, slot.isoformat(), existing or "?")
        return existing, False


def claim(run_id, start, guard=None):
    """Move a queued or waiting run to running with its Start (and the claim that holds it); returns whether this
    call claimed it.

    Only a queued or waiting run is claimed: one left running by a dead worker is put back in the queue by
    promptbeat.runs.recovery, never taken over. guard, the overlap guard's parameters, makes the
    claim exclusive: no other run of the task may be running.
    """
    statement = transition_statement(RunStatus.RUNNING, START_COLUMNS, PENDING, exclusive=guard is not None)
    return bool(_write(statement, {**_params(run_id, start.columns()), **(guard or {})}))


def wait(run_id, reason, not_before):
    """Move a queued or waiting run to waiting until not_before, for reason; returns whether it moved."""
    return bool(_write(transition_statement(RunStatus.WAITING, ("not_before", "wait_reason"), PENDING),
                       _params(run_id, {"not_before": not_before, "wait_reason": reason})))


def record_prompt(run_id, prompt):
    """Record a running run's prompt as sent, once rendered."""
    return _set(run_id, RunStatus.RUNNING, prompt=prompt)


def record_attempts(run_id, attempts):
    """Show a running run's attempts so far while it waits to try again."""
    return _set(run_id, RunStatus.RUNNING, attempts=list(attempts))


def collect(run_id, values):
    """Move a queued batch-mode run to submitted with its start and batch request, to wait for the next batch;
    returns whether it moved (False: gone, cancelled or collected by another delivery)."""
    names = tuple(sorted(values))
    return bool(_write(transition_statement(RunStatus.SUBMITTED, names, PENDING), _params(run_id, values)))


def mark_batched(run_ids, batch_id):
    """Record that submitted runs waiting for a batch were sent in batch_id; returns how many it marked."""
    with db.engine.begin() as connection:
        return connection.execute(MARK_BATCHED, {"run_ids": list(run_ids), "v_batch_id": batch_id}).rowcount


def finish_submitted(run_id, batch_id, values, failed, counted, also=None):
    """Move a submitted run of batch_id (None: one not yet sent) to success or failed with its result, as
    finish does for a running run; returns (written, counters).

    also(connection) (its budget hold's settlement) runs in the same transaction only if the result was
    written: a run cancelled meanwhile gave its hold back, and a run marked lost keeps it charged.
    """
    return _finish(run_id, RunStatus.FAILED if failed else RunStatus.SUCCESS, values, counted, RunStatus.SUBMITTED,
                   {"in_batch": batch_id}, also, settle_unwritten=False)


def lose_submitted(run_id, batch_id, message, now):
    """Mark lost a submitted run whose batch is gone or that outlived the batch window; returns whether it moved."""
    return bool(_write(_finish_statement(RunStatus.LOST, _LOST_VALUES, RunStatus.SUBMITTED),
                       _params(run_id, {"error": message, "error_class": "BatchLost", "finished_at": now})
                       | {"in_batch": batch_id}))


def finish(run_id, values, failed, counted, claim=None, also=None):
    """Move a running run, held by claim, to success or failed with its result; returns (written, counters).

    A counted run is counted on its task in the same statement, only if its result was written;
    counters (promptbeat.runs.lifecycle.stop_after_run's input) is None for a run not counted or
    whose task is gone. It changes the run's row, then its task's: the lock order of deleting a
    task (delete_runs_of, then the task). also(connection), when given (a budget's settlement,
    promptbeat.runs.budget), runs in the same transaction whether the result was written or not.
    """
    return _finish(run_id, RunStatus.FAILED if failed else RunStatus.SUCCESS, values, counted, RunStatus.RUNNING,
                   {"claim": claim}, also)


def _finish(run_id, target, values, counted, source, held, also=None, settle_unwritten=True):
    names = tuple(sorted(values))
    params = {**_params(run_id, values), **held}
    if not counted and also is None:
        return bool(_write(_finish_statement(target, names, source), params)), None
    with (db.engine.begin() if also is None else budget.transaction()) as connection:
        if counted:
            counters = connection.execute(_finish_and_count_statement(target, names, source), params).one_or_none()
            # No row: the run vanished or was marked lost (or its task, and with it the run, was deleted).
            written = counters is not None
        else:
            counters = None
            written = bool(connection.execute(_finish_statement(target, names, source), params).rowcount)
        if also is not None and (written or settle_unwritten):
            also(connection)
    return written, counters


@functools.cache
def _finish_statement(target, names, source=RunStatus.RUNNING):
    """A finish, held by the claim (running) or the batch (submitted) the caller names."""
    holder = HELD if source == RunStatus.RUNNING else IN_BATCH
    return transition_statement(target, names, (source,)).where(holder)


@functools.cache
def _finish_and_count_statement(target, names, source=RunStatus.RUNNING):
    finished = _finish_statement(target, names, source).returning(EXECUTIONS.c.task_id).cte("finished_run")
    return (update(TASKS).where(TASKS.c.id == finished.c.task_id)
            .values(COUNTED[target == RunStatus.FAILED]).returning(*COUNTERS))


def skip(run_id, reason, error_class=None):
    """Move a queued or waiting run to skipped with the reason (and its class, e.g. a budget stop); returns
    whether it moved."""
    return bool(_write(transition_statement(RunStatus.SKIPPED, ("error", "error_class", "finished_at"), PENDING),
                       _params(run_id, {"error": reason, "error_class": error_class, "finished_at": utcnow()})))


def fail_unqueued(run_id, error):
    """Move a queued or waiting run that could not be handed to a worker to failed; returns whether it moved."""
    return bool(_write(transition_statement(RunStatus.FAILED, ("error", "finished_at"), PENDING),
                       _params(run_id, {"error": error, "finished_at": utcnow()})))


def cancel(run_id):
    """Move a queued, waiting, running or submitted run to cancelled; returns whether it moved (False: it had ended).

    A queued run's message is dropped when it arrives; a running run's worker abandons the call
    (promptbeat.runs.liveness) and writes nothing more to it. A submitted run gives its budget hold
    back in the same transaction: whatever its batch answers for it is discarded (as a running run's
    abandoned call is).
    """
    params = _params(run_id, {"finished_at": utcnow(), "error": CANCELLED_MESSAGE, "error_class": "Cancelled"})
    with budget.transaction() as connection:
        row = connection.execute(CANCEL, params).one_or_none()
        if row is not None and row.budget_hold:
            budget.give_back(connection, budget.from_record(row.budget_hold))
    return row is not None


def requeue_dead(run_id, claim):
    """Put a running run whose runner died back in the queue, counting the restart; returns whether it moved.

    Conditional on the claim the dead runner held: a run finished, re-run or cancelled meanwhile is left as it is.
    """
    return bool(_write(REQUEUE_DEAD, {"run_id": run_id, "claim": claim}))


def lose_dead(run_id, claim, message, now):
    """Mark lost a running run whose runner died, past its attempts; returns whether it moved."""
    return bool(_write(LOSE_DEAD, _params(run_id, {"error": message, "error_class": "WorkerLost", "finished_at": now})
                       | {"claim": claim}))


def count_resend(run_id, seen):
    """Count a queued or waiting run's lost message as sent again; returns whether this call counted it.

    seen: the count the caller read.
    """
    return bool(_write(RESEND_QUEUED, {"run_id": run_id, "seen": seen}))


def lose_queued(run_id, seen, message, now):
    """Mark lost a queued or waiting run whose message was lost, past its attempts; returns whether it moved."""
    return bool(_write(LOSE_QUEUED, _params(run_id, {"error": message, "error_class": "MessageLost",
                                                     "finished_at": now}) | {"seen": seen}))


def mark_lost(cutoff, now):
    """Move runs still running past cutoff (their deadline plus grace) to lost; returns [(run id, task id)]."""
    with db.engine.begin() as connection:
        return [tuple(row) for row in connection.execute(MARK_LOST, {
            "cutoff": cutoff, "v_error": LOST_MESSAGE, "v_error_class": "WorkerLost", "v_finished_at": now})]


def delete_runs_of(task_id):
    """Delete a task's runs in the caller's Session; the caller deletes the task and commits.

    Its submitted runs give their budget holds back first (the global budget's share would otherwise stay
    charged); locked, so that a batch result finishing one meanwhile finds it gone and settles nothing.
    """
    connection = db.session.connection()
    for record in connection.execute(HELD_BY_SUBMITTED, {"task_id": task_id}).scalars():
        budget.give_back(connection, budget.from_record(record))
    db.session.execute(delete(EXECUTIONS).where(EXECUTIONS.c.task_id == task_id))


def status_of(run_id):
    """A run's status, or None if it is gone."""
    with db.engine.connect() as connection:
        status = connection.execute(READ_STATUS, {"run_id": run_id}).scalar()
    return RunStatus(status) if status is not None else None


def outcome_of(run_id):
    """A run's (status, error class, error), or None if it is gone."""
    with db.engine.connect() as connection:
        row = connection.execute(READ_OUTCOME, {"run_id": run_id}).one_or_none()
    return (RunStatus(row.status), row.error_class, row.error) if row is not None else None


def _set(run_id, status, **values):
    """Set columns that are not its state on a run in status; returns whether it was there."""
    names = tuple(sorted(values))
    return bool(_write(_set_statement(status, names), _params(run_id, values)))


@functools.cache
def _set_statement(status, names):
    return (update(EXECUTIONS).where(EXECUTIONS.c.id == bindparam("run_id"), EXECUTIONS.c.status == status)
            .values({name: bindparam("v_" + name) for name in names}))


def _run_row(task_id, trigger, model, slot=None, catch_up=False, retry_of=None):
    return {"run_task_id": task_id, "run_trigger": trigger, "run_status": RunStatus.QUEUED, "run_slot": slot,
            "run_catch_up": bool(catch_up), "run_model": model, "run_created_at": utcnow(), "run_retry_of": retry_of}


def _params(run_id, values):
    return {"run_id": run_id, **{"v_" + name: value for name, value in values.items()}}


def _insert(statement, params):
    with db.engine.begin() as connection:
        return connection.execute(statement, params).scalar_one()


def _write(statement, params):
    """Run one write in a transaction of its own; returns the number of rows it changed.

    Under the worker's autocommit engine the transaction costs no round trip.
    """
    with db.engine.begin() as connection:
        return connection.execute(statement, params).rowcount
