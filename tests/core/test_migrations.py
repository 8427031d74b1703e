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

TABLES = {"alembic_version", "api_tokens", "channels", "connections", "deliveries", "executions", "runners",
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
