"""Slot claims: one execution per (task, nominal fire time), however often the slot is dispatched."""
import logging

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, utcnow

logger = logging.getLogger(__name__)
# Plain statements, not the ORM: a worker claims a slot for every scheduled run (BENCHMARKS.md).
EXECUTIONS = Execution.__table__
INSERT_RUN = insert(EXECUTIONS)
FIND_SLOT_RUN = select(EXECUTIONS.c.id).where(EXECUTIONS.c.task_id == bindparam("task_id"),
                                              EXECUTIONS.c.slot == bindparam("slot"))


def claim_slot(task, slot, trigger, catch_up=False):
    """Create the execution for this slot; returns (its id, claimed).

    The unique key (task_id, slot) decides: a second dispatch of the same slot (two beats,
    a redelivered message, a reconcile racing a fire) finds the first one's row and
    claimed is False, so the caller runs nothing (the id is None if that row is gone too).
    Each statement returns its connection at once: a run that held one while taking another
    could wait forever on a pool that every run in flight shares.
    """
    try:
        with db.engine.begin() as connection:
            run_id = connection.execute(INSERT_RUN, {
                "task_id": task.id, "trigger": trigger, "status": ExecutionStatus.QUEUED, "slot": slot,
                "catch_up": catch_up, "model": task.model, "created_at": utcnow(),
            }).inserted_primary_key[0]
    except IntegrityError:
        with db.engine.connect() as connection:
            existing = connection.execute(FIND_SLOT_RUN, {"task_id": task.id, "slot": slot}).scalar_one_or_none()
        logger.info("task %s slot %s was already claimed by run %s; not running it again",
                    task.id, slot.isoformat(), existing or "?")
        return existing, False
    return run_id, True
