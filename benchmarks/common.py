"""Shared set-up for the benchmarks: a migrated database, a user with a token, web under gunicorn, workers."""
import argparse
import platform
import re
import secrets
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg2
import requests

from promptbeat.extensions import db
from promptbeat.models import ApiToken, User
from promptbeat.settings import Settings
from tests import services

ROOT = Path(__file__).resolve().parent.parent


def arguments(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database the benchmark may empty")
    parser.add_argument("--redis-url", required=True, help="a Redis database the benchmark may empty")
    return parser


def machine():
    """nproc, CPU model and memory, for the report."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{psutil.cpu_count()} CPUs ({model}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {sys.version.split()[0]}"


def environ(database_url, redis_url, llm_url):
    return {
        "SECRET_KEY": secrets.token_urlsafe(32), "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": llm_url, "PROMPTBEAT_DEFAULT_MODEL": "fake-model",
        "PROMPTBEAT_BEAT_MAX_LOOP_INTERVAL": "1",
    }


def fresh_app(env):
    """The web app on an emptied, freshly migrated database and an emptied Redis db; returns (app, token)."""
    import redis
    from flask_migrate import upgrade

    from web import create_app

    app = create_app(Settings.from_environ(env))
    with app.app_context():
        with db.engine.begin() as connection:
            db.metadata.drop_all(connection)
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade()
        user = User(email="bench@example.com")
        user.set_password("correct horse battery")
        token, plaintext = ApiToken.issue(user)
        db.session.add_all([user, token])
        db.session.commit()
    client = redis.Redis.from_url(env["REDIS_URL"])
    client.flushdb()
    client.close()
    return app, plaintext


def start_web(env, log_dir, port):
    """gunicorn with the compose service's config module, bound to loopback."""
    role = services.Role(["gunicorn", "-c", "python:web.gunicorn_conf", "web.wsgi:app"],
                         services.role_env({**env, "WEB_BIND": f"127.0.0.1:{port}"}), log_dir / "web.log")
    services.wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 60, "gunicorn")
    return role


@contextmanager
def scratch_database(admin_url, name, keep=False, reuse=False):
    """A database made for one benchmark (or the one a kept round left, with reuse); its URL. Dropped after unless keep."""
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    try:
        if not reuse:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
            admin.cursor().execute(f"CREATE DATABASE {name}")
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        if not keep:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def flask_cli(env, *args):
    """Run `flask --app web ARGS` in the venv of this Python; its standard output."""
    flask = str(Path(sys.executable).parent / "flask")
    return subprocess.run([flask, "--app", "web", *args], env=env, cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def create_admin(env, email, password):
    """An admin made through the CLI, as an operator would; its API token."""
    return flask_cli(env, "create-admin", email, "--password", password).strip().splitlines()[-1]


def signed_in(base, email, password):
    """A requests session signed in through the sign-in form."""
    session = requests.Session()
    page = session.get(base + "/login", timeout=30).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    session.post(base + "/login", data={"email": email, "password": password, "csrf_token": token}, timeout=10)
    return session


def _answers(url):
    try:
        return services.http("GET", url, timeout=2).status_code == 200
    except OSError:
        return False


def cpu_seconds(role):
    """CPU time of a role's process and its pool children so far."""
    try:
        parent = psutil.Process(role.pid)
        total = 0.0
        for process in [parent, *parent.children(recursive=True)]:
            times = process.cpu_times()
            total += times.user + times.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def summary(values_ms):
    return (f"p50 {statistics.median(values_ms):7.1f} ms   p99 {percentile(values_ms, 99):7.1f} ms   "
            f"min {min(values_ms):6.1f}   max {max(values_ms):7.1f}")


def now():
    return time.time()
