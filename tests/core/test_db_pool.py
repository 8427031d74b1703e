"""Pooled PostgreSQL connections: checked before reuse after sitting idle, not while in steady use."""
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from sqlalchemy.exc import OperationalError

from promptbeat.extensions import PING_AFTER_IDLE_SECONDS, db, ping_when_idle


@pytest.fixture
def engine(postgres_url):
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_seconds=0.3)
    yield engine
    engine.dispose()


def backend_pid(engine):
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar()


def kill(postgres_url, pid):
    """End a server process from outside, as a database restart or an idle timeout would."""
    killer = create_engine(postgres_url, poolclass=NullPool)
    with killer.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    killer.dispose()


def test_a_connection_killed_while_idle_is_replaced_before_use(engine, postgres_url):
    first = backend_pid(engine)
    kill(postgres_url, first)
    time.sleep(0.5)  # longer than the engine's idle limit

    assert backend_pid(engine) != first  # no error reached the caller: the check replaced it


def test_a_connection_in_steady_use_is_handed_out_unchecked_and_replaced_after_it_fails(engine, postgres_url):
    first = backend_pid(engine)
    kill(postgres_url, first)

    # Reused at once: no check, so the statement meets the dead connection (the price of no round trip).
    with pytest.raises(OperationalError):
        backend_pid(engine)
    # SQLAlchemy invalidated it: the next use gets a fresh connection.
    assert backend_pid(engine) != first


def test_the_apps_engine_checks_idle_connections(postgres_url):
    from promptbeat.app import create_app
    from promptbeat.settings import Settings

    app = create_app(Settings.from_environ({"SECRET_KEY": "x", "DATABASE_URL": postgres_url,
                                            "REDIS_URL": "redis://127.0.0.1:1/0"}))
    with app.app_context():
        first = backend_pid(db.engine)
        kill(postgres_url, first)
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        assert backend_pid(db.engine) != first
        db.engine.dispose()
