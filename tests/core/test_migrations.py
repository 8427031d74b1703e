"""Migrations: on a fresh database they build exactly the schema the models describe."""
import uuid
from contextlib import contextmanager

import celery
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from promptbeat.app import create_app
from promptbeat.extensions import db
from promptbeat.settings import Settings

TABLES = {"alembic_version", "api_tokens", "channels", "connections", "deliveries", "executions", "provider_batches",
          "runners", "spend",
          "task_channels", "tasks", "users"}


@pytest.fixture
def fresh_database_url(database_url):
    """A new, empty database on the session's PostgreSQL server."""
    server = make_url(Settings(secret_key="test", database_url=database_url).database_url)
    name = f"promptbeat_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@contextmanager
def app_context_on(database_url):
    """A core app on database_url; the Celery app current before it is current again after."""
    previous = celery.current_app._get_current_object()
    flask_app = create_app(Settings(secret_key="test", database_url=database_url))
    try:
        with flask_app.app_context():
            yield
            db.engine.dispose()
    finally:
        previous.set_current()
        previous.set_default()


def schema_differences():
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgrade_on_a_fresh_database_matches_the_models(fresh_database_url):
    with app_context_on(fresh_database_url):
        upgrade()
        assert set(inspect(db.engine).get_table_names()) == TABLES
        assert schema_differences() == []


def test_downgrade_to_base_and_upgrade_again(fresh_database_url):
    with app_context_on(fresh_database_url):
        upgrade()
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) == {"alembic_version"}
        upgrade()
        assert schema_differences() == []


def test_each_task_webhook_becomes_a_channel_notified_on_every_run(fresh_database_url):
    from sqlalchemy import text

    with app_context_on(fresh_database_url):
        upgrade(revision="c16output001")
        with db.engine.begin() as connection:
            for name, url, kind in [("a", "https://hooks.example.com/x", "json"), ("b", "https://hooks.example.com/x",
                                                                                  "json"),
                                    ("c", "https://hooks.example.com/x", "slack"), ("d", None, "json")]:
                connection.execute(text(
                    "INSERT INTO tasks (name, prompt, model, temperature, schedule_type, cron, timezone, enabled, "
                    "created_at, updated_at, run_count, overlap_policy, consecutive_failures, webhook_url, "
                    "webhook_format) VALUES (:name, 'p', 'm', 0.7, 'crontab', '0 9 * * *', 'UTC', false, now(), now(), "
                    "0, 'skip', 0, :url, :kind)"), {"name": name, "url": url, "kind": kind})
        upgrade()
        with db.engine.connect() as connection:
            channels = connection.execute(text("SELECT id, kind, url, secret_encrypted FROM channels ORDER BY id")).all()
            picked = connection.execute(text(
                "SELECT t.name, c.kind FROM task_channels tc JOIN tasks t ON t.id = tc.task_id "
                "JOIN channels c ON c.id = tc.channel_id ORDER BY t.name")).all()
            rules = connection.execute(text("SELECT DISTINCT notify_on::text FROM tasks")).scalars().all()
        # One channel per distinct URL and format, unsigned; every task keeps being told about every run.
        assert [(kind, url, secret) for _, kind, url, secret in channels] == [
            ("webhook", "https://hooks.example.com/x", None), ("slack", "https://hooks.example.com/x", None)]
        assert [tuple(row) for row in picked] == [("a", "webhook"), ("b", "webhook"), ("c", "slack")]
        assert rules == ['["every"]']
        downgrade(revision="c16output001")
        with db.engine.connect() as connection:
            back = connection.execute(text("SELECT name, webhook_url, webhook_format FROM tasks ORDER BY name")).all()
        assert [tuple(row) for row in back] == [("a", "https://hooks.example.com/x", "json"),
                                                ("b", "https://hooks.example.com/x", "json"),
                                                ("c", "https://hooks.example.com/x", "slack"), ("d", None, "json")]
