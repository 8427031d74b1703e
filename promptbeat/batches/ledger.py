"""The provider batches in flight (provider_batches): the one writer of their rows."""
from sqlalchemy import bindparam, insert, select, update

from promptbeat.extensions import db
from promptbeat.models import ProviderBatch, utcnow

BATCHES = ProviderBatch.__table__
IN_PROGRESS = "in_progress"
# Not in the provider's words: its batch answered 404, so its results can never be read.
GONE = "gone"
# The least recently read first, so that every batch in flight is read in turn however many there are.
DUE = (select(BATCHES).where(BATCHES.c.status == IN_PROGRESS)
       .order_by(BATCHES.c.polled_at.asc().nulls_first(), BATCHES.c.id).limit(bindparam("limit")))
TOUCH = update(BATCHES).where(BATCHES.c.id.in_(bindparam("ids", expanding=True))).values(polled_at=bindparam("now"))
END = (update(BATCHES).where(BATCHES.c.id == bindparam("batch_row"), BATCHES.c.status == IN_PROGRESS)
       .values(status=bindparam("v_status"), finished_at=bindparam("v_finished_at"), error=bindparam("v_error")))


def record(provider_id, connection_id, model, run_count):
    """Record a batch just created at the provider, in progress."""
    with db.engine.begin() as connection:
        connection.execute(insert(BATCHES).values(provider_id=provider_id, connection_id=connection_id, model=model,
                                                  status=IN_PROGRESS, run_count=run_count, created_at=utcnow()))


def due(limit):
    """Up to limit batches in progress to read now, each marked as read at this moment."""
    now = utcnow()
    with db.engine.begin() as connection:
        rows = connection.execute(DUE, {"limit": limit}).all()
        if rows:
            connection.execute(TOUCH, {"ids": [row.id for row in rows], "now": now})
    return rows


def end(batch_row, status, error=None):
    """Record how a batch ended (the provider's final status, or gone); returns whether this call ended it."""
    with db.engine.begin() as connection:
        return bool(connection.execute(END, {"batch_row": batch_row, "v_status": status, "v_finished_at": utcnow(),
                                             "v_error": error}).rowcount)

