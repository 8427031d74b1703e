"""Slot claims: one execution per (task, nominal fire time), however often the slot is dispatched."""
import logging

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, Task, utcnow

logger = logging.getLogger(__name__)
# Plain statements, not the ORM: a worker claims a slot for every scheduled run (docs/performance.md).
EXECUTIONS = Execution.__table__
TASKS = Task.__table__
# Named binds, none a column name of tasks: keys of the parameters that match a column of an UPDATE's
# table join its SET clause, the anchor's UPDATE below included.
INSERT_RUN = insert(EXECUTIONS).values(
    {name: bindparam("run_" + name) for name in ("task_id", "trigger", "status", "slot", "catch_up", "model",
                                                 "created_at")})
FIND_SLOT_RUN = select(EXECUTIONS.c.id).where(EXECUTIONS.c.task_id == bindparam("task_id"),
                                              EXECUTIONS.c.slot == bindparam("slot"))
# Move the task's schedule anchor to a fire, unless a later fire already moved it. A fire is not a
# change to the task: updated_at keeps its value instead of taking its onupdate.
ADVANCE_ANCHOR = (update(TASKS)
                  .where(TASKS.c.id == bindparam("anchor_task_id"),
                         or_(TASKS.c.anchor_at.is_(None), TASKS.c.anchor_at < bindparam("anchor_to")))
                  .values(anchor_at=bindparam("anchor_to"), updated_at=TASKS.c.updated_at))
# On PostgreSQL the claim advances the anchor in the same statement (a data-modifying WITH), one
# round trip fewer per scheduled run; SQLite has no such WITH: there the anchor's UPDATE follows a
# successful INSERT.
INSERT_RUN_ADVANCING = INSERT_RUN.add_cte(ADVANCE_ANCHOR.cte("advanced_anchor")).returning(EXECUTIONS.c.id)


def claim_slot(task, slot, trigger, catch_up=False, advance_anchor=False):
    """Create the execution for this slot, and with advance_anchor move the task's anchor to it; returns (its id, claimed).

    The unique key (task_id, slot) decides: a second dispatch of the same slot (two beats,
    a redelivered message, a reconcile racing a fire) finds the first one's row and
    claimed is False, so the caller runs nothing (the id is None if that row is gone too);
    its anchor change is undone with its failed INSERT.
    Each statement returns its connection at once: a run that held one while taking another
    could wait forever on a pool that every run in flight shares.
    """
    run = {"run_task_id": task.id, "run_trigger": trigger, "run_status": ExecutionStatus.QUEUED, "run_slot": slot,
           "run_catch_up": catch_up, "run_model": task.model, "run_created_at": utcnow()}
    anchor = {"anchor_task_id": task.id, "anchor_to": slot}
    try:
        with db.engine.begin() as connection:
            if advance_anchor and connection.dialect.name == "postgresql":
                run_id = connection.execute(INSERT_RUN_ADVANCING, {**run, **anchor}).scalar_one()
            else:
                run_id = connection.execute(INSERT_RUN, run).inserted_primary_key[0]
                if advance_anchor:
                    connection.execute(ADVANCE_ANCHOR, anchor)
    except IntegrityError:
        with db.engine.connect() as connection:
            existing = connection.execute(FIND_SLOT_RUN, {"task_id": task.id, "slot": slot}).scalar_one_or_none()
        logger.info("task %s slot %s was already claimed by run %s; not running it again",
                    task.id, slot.isoformat(), existing or "?")
        return existing, False
    return run_id, True


def advance_anchor(task_id, moment):
    """Move the task's anchor to a fire that carries no slot (a message from before slots)."""
    with db.engine.begin() as connection:
        connection.execute(ADVANCE_ANCHOR, {"anchor_task_id": task_id, "anchor_to": moment})
