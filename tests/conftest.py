"""Fixtures: a real PostgreSQL and Redis (private ones unless given), the app, and live roles."""
import dataclasses
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
import redis as redis_lib

from promptbeat import embedded_db
from promptbeat.llm import client as llm
from promptbeat.extensions import db
from promptbeat.fakellm import FakeLLMServer
from promptbeat.models import ApiToken, User
from promptbeat.settings import Settings, normalize_database_url
from tests import services

# Set in CI: the configured PostgreSQL and Redis must be used, never private ones started here.
REQUIRE_SERVICES = os.environ.get("PROMPTBEAT_REQUIRE_SERVICES") == "1"
TEST_API_KEY = "sk-test-" + secrets.token_hex(8)
TEST_FERNET_KEY = "3Ue-Xs0X0u4MQ7nHzfUuXbnHGiHNtVOy1kLLKM2Gvd0="


def _missing(what):
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required here (PROMPTBEAT_REQUIRE_SERVICES=1) but not configured")
    pytest.skip(f"{what} not configured")


def pytest_report_header(config):
    database = os.environ.get("PROMPTBEAT_TEST_DATABASE_URL") and "PROMPTBEAT_TEST_DATABASE_URL"
    redis = os.environ.get("PROMPTBEAT_TEST_REDIS_URL") and "PROMPTBEAT_TEST_REDIS_URL"
    return [f"database: {database or 'a private embedded PostgreSQL'}",
            f"redis: {redis or 'a private redis-server'}"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """PROMPTBEAT_TEST_REDIS_URL (its database is emptied), else a private redis-server."""
    url = os.environ.get("PROMPTBEAT_TEST_REDIS_URL")
    if url:
        client = redis_lib.Redis.from_url(url)
        client.flushdb()
        client.close()
        yield url
        return
    if REQUIRE_SERVICES:
        pytest.fail("PROMPTBEAT_TEST_REDIS_URL is required here (PROMPTBEAT_REQUIRE_SERVICES=1)")
    private = services.PrivateRedis(tmp_path_factory.mktemp("redis"))
    yield private.url
    private.stop()


@pytest.fixture
def swap_settings(app):
    """Replace some settings for one test, then put the originals back."""
    original = app.config["PROMPTBEAT"]

    def swap(**changes):
        app.config["PROMPTBEAT"] = dataclasses.replace(original, **changes)

    yield swap
    app.config["PROMPTBEAT"] = original


@pytest.fixture
def redis_client(redis_url):
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_llm():
    """The project's OpenAI-compatible fake server on 127.0.0.1, shared by the session."""
    with FakeLLMServer() as server:
        yield server
        # The SDK clients cached for it keep connections to it open; close them before it goes.
        llm.close_clients()


@pytest.fixture(scope="session", autouse=True)
def _worker_model_calls():
    """Runs made in this process call the model as the worker does by default (PROMPTBEAT_FAST_LLM_CALLS)."""
    llm.install()


@pytest.fixture(scope="session")
def database_url():
    """PROMPTBEAT_TEST_DATABASE_URL (its tables are dropped), else a private embedded PostgreSQL."""
    url = os.environ.get("PROMPTBEAT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if REQUIRE_SERVICES:
        pytest.fail("PROMPTBEAT_TEST_DATABASE_URL is required here (PROMPTBEAT_REQUIRE_SERVICES=1)")
    # Outside pytest's base temporary directory, which a pytest session starting meanwhile makes
    # private to its owner again: as root, the server runs as another user that must reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="promptbeat-test-postgres-"))
    try:
        server = embedded_db.start(data_dir)
        yield server.url
        server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def postgres_url(database_url):
    """The test database's URL in SQLAlchemy's form, for tests of PostgreSQL itself."""
    return normalize_database_url(database_url)


@pytest.fixture(scope="session")
def role_environ(database_url, redis_url, fake_llm):
    """The environment every role gets: the same one the in-process app reads."""
    return {
        "SECRET_KEY": "test-" + secrets.token_hex(16),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": TEST_API_KEY,
        "OPENAI_BASE_URL": fake_llm.url,
        "PROMPTBEAT_DEFAULT_MODEL": "fake-model",
        "PROMPTBEAT_BEAT_MAX_LOOP_INTERVAL": "1",
        "PROMPTBEAT_RECONCILE_SECONDS": "2",
        "PROMPTBEAT_LLM_TIMEOUT": "10",
        "PROMPTBEAT_MIN_INTERVAL_SECONDS": "10",
        "PROMPTBEAT_FERNET_KEYS": TEST_FERNET_KEY,
        # Tests deliver webhooks to receivers on 127.0.0.1.
        "PROMPTBEAT_WEBHOOK_ALLOW_PRIVATE": "1",
        "PROMPTBEAT_PRICES": '{"fake-model": [1.0, 2.0]}',
        "PROMPTBEAT_RETRY_BASE_SECONDS": "0.2",
        "PROMPTBEAT_RETRY_MAX_SECONDS": "3",
        "PROMPTBEAT_SWEEP_SECONDS": "1",
        # A worker that dies is noticed in seconds; a live one under a loaded test machine is not thought dead.
        "PROMPTBEAT_HEARTBEAT_SECONDS": "1",
        "PROMPTBEAT_RUNNER_TIMEOUT_SECONDS": "4",
        "PROMPTBEAT_LOST_GRACE_SECONDS": "1",
    }


@pytest.fixture(scope="session")
def app(role_environ):
    """The web app on a freshly migrated database."""
    from flask_migrate import upgrade

    from web import create_app

    flask_app = create_app(Settings.from_environ(role_environ))
    with flask_app.app_context():
        with db.engine.begin() as connection:
            db.metadata.drop_all(connection)
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade()
    yield flask_app
    with flask_app.app_context():
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _clean_state(request):
    """Empty tables and task entries before each test that uses the app."""
    if "app" not in request.fixturenames:
        yield
        return
    flask_app = request.getfixturevalue("app")
    # Every create_app makes its Celery app the process default, and `execute_task.delay` sends through
    # the default. A test that built its own app on a private Redis (scale-out, metrics, faults) would
    # otherwise leave the session app queueing runs to that Redis, stopped by then, so no worker sees them.
    celery_app = flask_app.extensions["celery"]
    celery_app.set_default()
    celery_app.set_current()
    with flask_app.app_context():
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()
        _clear_redis(flask_app)
    yield
    with flask_app.app_context():
        db.session.remove()


def _clear_redis(flask_app):
    settings = flask_app.config["PROMPTBEAT"]
    client = redis_lib.Redis.from_url(settings.redis_url)
    try:
        prefix = settings.redbeat_key_prefix
        # Overlap locks are keyed by task id, and ids start again after the tables are re-created (the
        # compose test migrates from scratch): a lock left by a worker stopped mid-run would make a
        # later test's run skip as "still running".
        for pattern in (f"{prefix}task:*", f"{prefix}signin:*", f"{prefix}running:*", f"{prefix}rl:*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
        # The queue, kombu's record of taken but unfinished messages (restored to the queue when a
        # worker stops) and LLM-call leases held by runs of earlier tests.
        client.delete(f"{prefix}:schedule", "promptbeat", "unacked", "unacked_index", f"{prefix}llm-calls")
    finally:
        client.close()


@pytest.fixture
def client(app):
    return app.test_client()


def issue_api_token(flask_app, email="admin@example.com", password="correct horse battery", role="admin"):
    """Create a user with a fresh API token on flask_app's database; returns the plaintext token."""
    with flask_app.app_context():
        user = User(email=email, role=role)
        user.set_password(password)
        token, plaintext = ApiToken.issue(user)
        db.session.add_all([user, token])
        db.session.commit()
    return plaintext


@pytest.fixture
def api_token(app):
    """A user with a fresh API token; returns the plaintext token."""
    return issue_api_token(app)


@pytest.fixture
def api(client, api_token):
    """Call the JSON API as a signed-in program: api.post('/tasks', json=...)."""

    class Api:
        headers = {"Authorization": f"Bearer {api_token}"}

        def __getattr__(self, method):
            if method not in {"get", "post", "put", "patch", "delete", "head", "options"}:
                raise AttributeError(method)  # e.g. a pretty-printer probing for _repr_pretty_

            def call(path, **kwargs):
                return getattr(client, method)("/api" + path, headers=self.headers, **kwargs)
            return call

    return Api()


CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(page_html):
    """The CSRF token a rendered form carries."""
    match = CSRF.search(page_html)
    assert match, "no CSRF token on the page"
    return match.group(1) or match.group(2)


@pytest.fixture
def signed_in(client, api_token):
    """A browser session signed in through the real login form."""
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={
        "email": "admin@example.com", "password": "correct horse battery", "csrf_token": csrf_token(page),
    })
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.fixture(scope="module")
def live_roles(request, role_environ, app, tmp_path_factory):
    """A real worker and a real beat subprocess against the session's database and Redis.

    Scoped to the module: tests elsewhere assert on runs left queued, which a worker still running
    from an earlier module would take. Parametrized indirectly, the parameter is settings added to
    the roles' environment.
    """
    logs = tmp_path_factory.mktemp("logs")
    env = services.role_env({**role_environ, **getattr(request, "param", {})})
    worker = services.start_worker(env, logs / "worker.log")
    try:
        beat = services.start_beat(env, logs / "beat.log")
    except BaseException:
        worker.stop()  # never leave a worker behind to steal the next run's messages
        raise
    yield {"worker": worker, "beat": beat, "env": env, "logs": logs}
    beat.stop()
    worker.stop()
