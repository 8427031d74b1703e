"""Slot claims: one execution per (task, nominal fire time), however often the slot is dispatched."""
import logging

from sqlalchemy.exc import IntegrityError

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, utcnow

logger = logging.getLogger(__name__)


def claim_slot(task, slot, trigger, catch_up=False):
    """Create the execution for this slot; returns (execution, claimed).

    The unique key (task_id, slot) decides: a second dispatch of the same slot (two beats,
    a redelivered message, a reconcile racing a fire) finds the first one's row and
    claimed is False, so the caller runs nothing.
    """
    execution = Execution(task_id=task.id, trigger=trigger, status=ExecutionStatus.QUEUED, slot=slot,
                          catch_up=catch_up, model=task.model, created_at=utcnow())
    db.session.add(execution)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = db.session.execute(
            db.select(Execution).filter_by(task_id=task.id, slot=slot)
        ).scalar_one_or_none()
        logger.info("task %s slot %s was already claimed by run %s; not running it again",
                    task.id, slot.isoformat(), existing.id if existing else "?")
        return existing, False
    return execution, True
