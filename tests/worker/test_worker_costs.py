"""What a worker builds once per process, not once per run: Celery's result stand-in, database connections."""
import threading

from sqlalchemy import create_engine, text

from promptbeat.settings import engine_options


def test_every_thread_shares_one_result_backend(app):
    # Celery builds a thread-unsafe backend once per thread; under gevent every run has a thread of its own.
    celery_app = app.extensions["celery"]
    seen = []
    thread = threading.Thread(target=lambda: seen.append(celery_app.backend))
    thread.start()
    thread.join()
    assert seen == [celery_app.backend]


def test_connections_opened_under_load_are_kept_for_the_next_runs(postgres_url):
    # An overflow connection is closed when handed back: under steady load the pool opened and
    # closed one every few runs, each a new server process for PostgreSQL.
    engine = create_engine(postgres_url, **engine_options(postgres_url, pool_size=20))
    try:
        held = [engine.connect() for _ in range(15)]
        pids = {connection.execute(text("SELECT pg_backend_pid()")).scalar() for connection in held}
        for connection in held:
            connection.close()
        assert engine.pool.checkedin() == 15
        held = [engine.connect() for _ in range(15)]
        assert {connection.execute(text("SELECT pg_backend_pid()")).scalar() for connection in held} == pids
        for connection in held:
            connection.close()
    finally:
        engine.dispose()
