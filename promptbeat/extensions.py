"""Extension objects shared by every role, created unconfigured and bound by the factory."""
import time

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, exc
from sqlalchemy.orm import DeclarativeBase

# Named constraints give migrations stable names to refer to.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


# A pooled connection handed back longer ago than this is checked before it is handed out again.
PING_AFTER_IDLE_SECONDS = 1.0


def ping_when_idle(engine, idle_seconds=PING_AFTER_IDLE_SECONDS):
    """Check a pooled connection before reuse only if it sat idle; one in steady use is not checked.

    SQLAlchemy's pool_pre_ping pays a round trip on every checkout, three per run, where a
    connection in steady use needs none (docs/performance.md). A connection killed by a
    database restart or an idle timeout has sat idle for longer than this by the time it is reused;
    one that fails while in use is invalidated by SQLAlchemy together with every older one.
    """

    @event.listens_for(engine, "checkin")
    def remember_checkin(dbapi_connection, connection_record):
        if dbapi_connection is not None:
            connection_record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection, connection_record, connection_proxy):
        # A connection just opened has no checkin yet and needs no check.
        checked_in_at = connection_record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool discards this connection and hands out a fresh one.
            raise exc.DisconnectionError(f"a pooled connection failed its check: {error}") from error
