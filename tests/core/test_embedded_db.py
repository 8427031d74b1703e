"""The private PostgreSQL of `dev.py start` and the tests: it starts, keeps its data, and stops for good."""
import shutil
import tempfile
from pathlib import Path

import psutil
import psycopg2
import pytest

from promptbeat import embedded_db
from promptbeat.settings import ConfigError, Settings


def servers_on(data_dir):
    """The postgres processes whose command line names data_dir."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(data_dir) in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def query(url, statement):
    connection = psycopg2.connect(url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


@pytest.fixture
def data_dir():
    # Outside pytest's base temporary directory, which a pytest session starting meanwhile makes
    # private to its owner again: as root, the server runs as another user that must reach it.
    directory = Path(tempfile.mkdtemp(prefix="promptbeat-test-postgres-"))
    yield directory
    embedded_db.stop(directory)  # whatever a failing test left running
    shutil.rmtree(directory)


def test_a_server_keeps_its_data_across_a_restart_and_leaves_no_process(data_dir):
    first = embedded_db.start(data_dir)
    assert first.url.startswith("postgresql://postgres@127.0.0.1:") and first.url.endswith("/promptbeat")
    assert query(first.url, "SHOW server_version_num")[0][0].startswith("18")
    query(first.url, "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')")
    first.stop()
    assert servers_on(data_dir) == []

    second = embedded_db.start(data_dir)
    assert query(second.url, "SELECT note FROM kept") == [("still here",)]
    second.stop()
    assert servers_on(data_dir) == []


def test_a_server_left_running_by_a_killed_start_is_replaced(data_dir):
    stale = embedded_db.start(data_dir)
    fresh = embedded_db.start(data_dir)
    assert query(fresh.url, "SELECT 1") == [(1,)]
    if fresh.url != stale.url:
        with pytest.raises(psycopg2.OperationalError):
            query(stale.url, "SELECT 1")
    fresh.stop()
    assert servers_on(data_dir) == []


def test_a_database_url_other_than_postgresql_is_refused():
    with pytest.raises(ConfigError, match="DATABASE_URL must be a PostgreSQL URL"):
        Settings.from_environ({"SECRET_KEY": "x", "DATABASE_URL": "sqlite:///promptbeat.db"})
