"""Slot claims: one execution per (task, nominal fire time), however often the slot is dispatched."""
import logging

from sqlalchemy.exc import IntegrityError

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, utcnow

logger = logging.getLogger(__name__)


def claim_slot(task, slot, trigger, catch_up=False):
    """Create the execution for this slot; returns (its id, claimed).

    The unique key (task_id, slot) decides: a second dispatch of the same slot (two beats,
    a redelivered message, a reconcile racing a fire) finds the first one's row and
    claimed is False, so the caller runs nothing (the id is None if that row is gone too).
    The session hands its connection back before this returns: a run that held one while
    taking another could wait forever on a pool that every run in flight shares.
    """
    execution = Execution(task_id=task.id, trigger=trigger, status=ExecutionStatus.QUEUED, slot=slot,
                          catch_up=catch_up, model=task.model, created_at=utcnow())
    db.session.add(execution)
    try:
        db.session.flush()
        run_id = execution.id  # read now: after the commit, reading it would load the row again
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = db.session.execute(
            db.select(Execution.id).filter_by(task_id=task.id, slot=slot)
        ).scalar_one_or_none()
        db.session.close()
        logger.info("task %s slot %s was already claimed by run %s; not running it again",
                    task.id, slot.isoformat(), existing or "?")
        return existing, False
    return run_id, True
