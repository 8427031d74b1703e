"""The delivery ledger: one row per attempt per run and channel, and the per-channel summary a run shows."""
from dataclasses import dataclass

import logging

from sqlalchemy import func, insert
from sqlalchemy.exc import IntegrityError

from promptbeat.extensions import db
from promptbeat.models import Delivery, DeliveryStatus, utcnow

logger = logging.getLogger(__name__)
DELIVERIES = Delivery.__table__


@dataclass(frozen=True)
class Target:
    """The channel an attempt went to, as the ledger keeps it (the name outlives a deleted channel)."""

    channel_id: int
    name: str
    kind: str


def record(execution_id, target, attempt, status, outcome):
    """Write one attempt; returns its row's id, or None when the run or the channel was deleted during the attempt."""
    try:
        with db.engine.begin() as connection:
            return connection.execute(insert(DELIVERIES).values(
                execution_id=execution_id, channel_id=target.channel_id, channel_name=target.name, kind=target.kind,
                attempt=attempt, status=DeliveryStatus(status), code=outcome.code, detail=outcome.detail, at=utcnow(),
            ).returning(DELIVERIES.c.id)).scalar_one()
    except IntegrityError:
        logger.info("attempt %d of run %s to channel %s not recorded: the run or the channel was deleted meanwhile",
                    attempt, execution_id, target.channel_id)
        return None


def summaries(execution_ids):
    """Per run, one entry per channel: its latest attempt's status, detail and time, and how many attempts.

    {execution id: [{"channel_id", "channel", "status", "attempts", "detail", "at"}]}, channels in the order
    first tried; a deleted channel shows with channel_id null and its name.
    """
    found = {execution_id: [] for execution_id in execution_ids}
    if not execution_ids:
        return found
    rows = db.session.execute(db.select(Delivery).where(Delivery.execution_id.in_(execution_ids))
                              .order_by(Delivery.execution_id, Delivery.id)).scalars()
    entries = {}
    for row in rows:
        key = (row.execution_id, row.channel_id, row.channel_name)
        if key not in entries:
            entries[key] = {"channel_id": row.channel_id, "channel": row.channel_name, "attempts": 0}
            found[row.execution_id].append(entries[key])
        entries[key].update(status=row.status, detail=row.detail, at=_iso(row.at), code=row.code)
        entries[key]["attempts"] += 1
    return found


def attempts_by_status():
    """{(kind, status): attempts} over the whole ledger, for /metrics."""
    rows = db.session.execute(db.select(Delivery.kind, Delivery.status, func.count())
                              .group_by(Delivery.kind, Delivery.status)).all()
    return {(kind, status): count for kind, status, count in rows}


def _iso(moment):
    return moment.isoformat().replace("+00:00", "Z") if moment else None
