"""docker-compose.yml: valid by the compose specification, wired as production needs, and its commands run.

There is no Docker engine here, so the live test does what compose would: it interpolates the
file, then runs each application service's command with that service's environment against the
local PostgreSQL and Redis (the `postgres` and `redis` hostnames mapped to the test services,
container ports and volumes mapped to free local ports and temporary directories).
"""
import copy
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet
import redis as redis_lib
from alembic.script import ScriptDirectory

from promptbeat import settings_reference
from promptbeat.app import MIGRATIONS
from promptbeat.extensions import db
from promptbeat.models import Execution
from tests import compose
from tests.conftest import TEST_API_KEY, issue_api_token
from tests.services import ROOT, free_port, http, role_env, wait_for

APP_SERVICES = ("migrate", "web", "worker", "beat", "flower")


@pytest.fixture(scope="module")
def document():
    return compose.load()


def test_compose_file_follows_the_compose_specification(document):
    assert compose.schema_errors(document) == []


def test_the_schema_check_catches_a_broken_file(document):
    broken = copy.deepcopy(document)
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_ready"
    broken["services"]["web"]["restart_policy"] = "always"
    errors = compose.schema_errors(broken)
    assert any(e.startswith("services/worker/depends_on:") for e in errors)
    assert any("restart_policy" in e for e in errors)


def test_infrastructure_services_are_durable_and_private(document):
    services = document["services"]
    postgres, redis_service = services["postgres"], services["redis"]
    assert "postgres-data" in document["volumes"]
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    command = " ".join(redis_service["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert any(v.startswith("redis-data:") for v in redis_service["volumes"])
    assert "ports" not in redis_service and "ports" not in postgres
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_application_services_share_one_image_and_wait_for_healthy_dependencies(document):
    services = document["services"]
    images = {services[name]["image"] for name in (*APP_SERVICES, "fakellm")}
    assert images == {"promptbeat:${PROMPTBEAT_IMAGE_TAG:-latest}"}
    # Built once, by the service every other one waits for.
    assert [name for name in services if "build" in services[name]] == ["migrate"]
    assert services["migrate"]["build"] == "."
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["restart"] == "unless-stopped"
    assert services["migrate"]["command"] == ["flask", "--app", "web", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert "-n" in services["worker"]["command"] and "worker@%h" in services["worker"]["command"]
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert services["beat"]["deploy"]["replicas"] == 2
    assert services["beat"]["healthcheck"]["test"] == ["CMD", "python", "-m", "beat.health"]
    assert "name" not in document  # two checkouts on one host must not share containers and volumes


def test_postgres_is_healthy_only_once_it_listens_on_tcp(document):
    # The image's set-up server on first start answers on the Unix socket only.
    check = " ".join(document["services"]["postgres"]["healthcheck"]["test"])
    assert "pg_isready -h 127.0.0.1" in check


def test_published_ports_default_to_loopback_and_metrics_default_off(document):
    services = document["services"]
    for name, variable in (("web", "WEB_HOST_ADDRESS"), ("flower", "FLOWER_HOST_ADDRESS")):
        (port,) = services[name]["ports"]
        assert compose.interpolate(port, {}).startswith("127.0.0.1:")
        assert compose.interpolate(port, {variable: "0.0.0.0"}).startswith("0.0.0.0:")
    metrics = services["web"]["environment"]["PROMPTBEAT_METRICS"]
    assert compose.interpolate(metrics, {}) == "false"


def test_the_demo_profile_adds_the_fake_model_server(document):
    fake = document["services"]["fakellm"]
    assert fake["profiles"] == ["demo"]
    assert fake["command"][:3] == ["python", "-m", "promptbeat.fakellm"]
    assert "ports" not in fake


def test_a_default_worker_keeps_many_calls_in_flight_and_stops_warmly(document):
    worker = document["services"]["worker"]
    command = [compose.interpolate(part, {}) for part in worker["command"]]
    pool, concurrency = command[command.index("--pool") + 1], int(command[command.index("--concurrency") + 1])
    assert pool == "gevent" and concurrency >= 100
    # The global cap on model calls lets one default container fill its pool.
    assert int(compose.interpolate(worker["environment"]["PROMPTBEAT_MAX_CONCURRENT_LLM_CALLS"], {})) >= concurrency
    # SIGTERM stays Celery's warm shutdown, which waits for runs in flight under gevent; a cold or soft
    # shutdown under gevent loses or breaks them.
    assert "REMAP_SIGTERM" not in worker["environment"]
    assert float(compose.interpolate(worker["environment"]["PROMPTBEAT_WORKER_SOFT_SHUTDOWN_TIMEOUT"], {})) == 0
    # Longer than one model call, so a run in flight finishes before docker's SIGKILL.
    llm_timeout = compose.interpolate(worker["environment"]["PROMPTBEAT_LLM_TIMEOUT"], {})
    assert seconds(worker["stop_grace_period"]) > float(llm_timeout)


def test_every_variable_is_documented_and_every_setting_is_passed():
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert compose.variables_used(compose.COMPOSE_FILE.read_text()) <= documented
    settings_source = (ROOT / "promptbeat" / "settings.py").read_text()
    read_by_settings = set(re.findall(r'_(?:str|int|float|bool)\(environ, "([A-Z_]+)"', settings_source))
    passed = set(compose.load()["services"]["worker"]["environment"])
    assert read_by_settings and read_by_settings <= passed
    assert read_by_settings - {"DATABASE_URL", "REDIS_URL"} <= documented
    # The table in docs/configuration.md is generated from these rows (tests/core/test_settings_reference.py).
    assert read_by_settings - settings_reference.documented_names() == set()


def test_no_secret_is_baked_into_the_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)", dockerfile, re.M)
    # Dependencies from the lock in a layer before the code, so a code change does not reinstall them.
    assert dockerfile.index("pip install -r requirements.txt") < dockerfile.index("COPY promptbeat")
    assert "FROM python:" in dockerfile and "-slim" in dockerfile
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "OPENAI_API_KEY", "FLOWER_BASIC_AUTH"):
        assert not re.search(rf"^(ENV|ARG).*{name}", dockerfile, re.M)
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_a_required_secret_left_unset_stops_compose(document):
    with pytest.raises(compose.InterpolationError, match="SECRET_KEY"):
        compose.service(document, "web", {"POSTGRES_PASSWORD": "x", "FLOWER_BASIC_AUTH": "a:b",
                                          "PROMPTBEAT_FERNET_KEYS": "k"})
    # Without it no connection's API key could be saved: compose says so before anything starts.
    with pytest.raises(compose.InterpolationError, match="set PROMPTBEAT_FERNET_KEYS in .env"):
        compose.service(document, "web", {"POSTGRES_PASSWORD": "x", "FLOWER_BASIC_AUTH": "a:b", "SECRET_KEY": "s"})


def seconds(duration):
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return int(match.group(1))


class ComposeRunner:
    """Runs services from docker-compose.yml as local subprocesses, as compose would run their containers."""

    def __init__(self, document, shell_env, database_url, redis_url, workdir):
        self.document, self.shell_env = document, shell_env
        self.database_url, self.redis_url, self.workdir = database_url, redis_url, workdir
        self.processes = []

    def resolve(self, name):
        """The service's argv and environment, mapped from the container's world to this machine."""
        spec = compose.service(self.document, name, self.shell_env)
        env = dict(spec["environment"])
        hosts = set(self.document["services"])
        assert urlsplit(env["DATABASE_URL"]).hostname in hosts, env["DATABASE_URL"]
        assert urlsplit(env["REDIS_URL"]).hostname in hosts, env["REDIS_URL"]
        env["DATABASE_URL"], env["REDIS_URL"] = self.database_url, self.redis_url
        argv = list(spec.get("entrypoint") or []) + list(spec["command"])
        for volume in spec.get("volumes", []):
            target = volume.split(":")[1]
            local = self.workdir / f"{name}-volume"
            local.mkdir(exist_ok=True)
            argv = [arg.replace(target, str(local)) for arg in argv]
        return argv, env

    def run(self, name, argv, env, timeout):
        return subprocess.run(self._argv(argv), cwd=ROOT, env=self._env(env), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, name, argv, env):
        log = open(self.workdir / f"{name}-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(self._argv(argv), cwd=ROOT, env=self._env(env), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process, log))
        return process

    def log(self, process):
        for _, candidate, log in self.processes:
            if candidate is process:
                return Path(log.name).read_text(errors="replace")
        return ""

    def alive(self, process):
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{self.log(process)[-3000:]}")
        return True

    def stop_all(self):
        """SIGTERM every process (docker compose stop); returns those still running after their grace period."""
        for _, process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        late = []
        for name, process, log in self.processes:
            grace = seconds(self.document["services"][name].get("stop_grace_period", "10s"))
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                late.append(name)
                process.kill()
                process.wait()
            log.close()
        return late

    @staticmethod
    def _argv(argv):
        # Console scripts (gunicorn, celery, flask) come from this interpreter's environment, as in the image.
        executable = Path(sys.executable).parent / argv[0]
        return [str(executable) if executable.exists() else argv[0], *argv[1:]]

    @staticmethod
    def _env(env):
        full = role_env(env)
        full["PATH"] = f"{Path(sys.executable).parent}:{full.get('PATH', '')}"
        full["HOSTNAME"] = socket.gethostname()
        return full


@pytest.mark.slow
def test_compose_services_run_and_come_up_healthy(app, database_url, redis_url, fake_llm, tmp_path, document):
    flower_auth = ("admin", secrets.token_urlsafe(8))
    shell_env = {
        "SECRET_KEY": secrets.token_urlsafe(32), "POSTGRES_PASSWORD": "unused-by-local-trust-auth",
        "FLOWER_BASIC_AUTH": ":".join(flower_auth), "OPENAI_API_KEY": TEST_API_KEY,
        "OPENAI_BASE_URL": fake_llm.url, "PROMPTBEAT_DEFAULT_MODEL": "fake-model", "WORKER_CONCURRENCY": "2",
        "PROMPTBEAT_BEAT_MAX_LOOP_INTERVAL": "1", "PROMPTBEAT_FERNET_KEYS": Fernet.generate_key().decode(),
    }
    runner = ComposeRunner(document, shell_env, database_url, redis_url, tmp_path)
    try:
        _migrate_from_scratch(app, runner)
        token = _api_token(app)
        web_url, flower_url = _start_services(runner)

        health = http("GET", f"{web_url}/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok", "database": "ok", "redis": "ok"})

        # The worker answers a ping, through the compose file's own healthcheck command.
        worker_check = document["services"]["worker"]["healthcheck"]["test"]
        argv, env = runner.resolve("worker")
        check = runner.run("worker", ["sh", "-c", compose.interpolate(worker_check[1], {})], env, timeout=60)
        assert check.returncode == 0 and "pong" in check.stdout, check.stdout + check.stderr

        # Two beat replicas: the RedBeat lock is held, by exactly one of them.
        client = redis_lib.Redis.from_url(redis_url)
        assert client.get("promptbeat::lock") is not None
        beats = [p for name, p, _ in runner.processes if name == "beat"]
        assert sum("beat: Acquired lock" in runner.log(b) for b in beats) == 1

        created = http("POST", f"{web_url}/api/tasks", headers={"Authorization": f"Bearer {token}"}, json_body={
            "name": "Compose check", "prompt": "Hello from compose", "schedule_type": "interval",
            "interval_seconds": 600})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        execution = wait_for(lambda: _finished(app, task_id), 30, "the immediate run to finish")
        assert execution.status == "success" and execution.output == "echo: Hello from compose"
        assert execution.worker == f"worker@{socket.gethostname()}"

        assert http("GET", f"{flower_url}/api/workers").status_code == 401
        workers = wait_for(lambda: _flower(flower_url, "/api/workers?refresh=1", flower_auth), 30, "Flower's workers")
        assert f"worker@{socket.gethostname()}" in workers

        def flower_saw_the_run():
            tasks = _flower(flower_url, "/api/tasks", flower_auth) or {}
            return [t for t in tasks.values() if t.get("name") == f"promptbeat task {task_id}"
                    and t.get("state") == "SUCCESS" and f"{task_id}," in (t.get("args") or "")]
        wait_for(flower_saw_the_run, 30, "Flower to list the run")
    finally:
        late = runner.stop_all()
    assert late == [], f"still running after stop_grace_period: {late}"
    # Flower kept its state on its volume, so a restarted container still shows past tasks.
    assert any((tmp_path / "flower-volume").iterdir())


def _migrate_from_scratch(app, runner):
    with app.app_context():
        with db.engine.begin() as connection:
            db.metadata.drop_all(connection)
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    argv, env = runner.resolve("migrate")
    result = runner.run("migrate", argv, env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with app.app_context():
        assert db.session.execute(db.text("SELECT version_num FROM alembic_version")).scalar() == head
        db.session.remove()


def _api_token(app):
    return issue_api_token(app, "compose@example.com")


def _start_services(runner):
    web_port, flower_port = free_port(), free_port()
    argv, env = runner.resolve("web")
    env["WEB_BIND"] = f"127.0.0.1:{web_port}"
    web = runner.start("web", argv, env)
    worker = runner.start("worker", *runner.resolve("worker"))
    for _ in range(runner.document["services"]["beat"]["deploy"]["replicas"]):
        runner.start("beat", *runner.resolve("beat"))
    argv, env = runner.resolve("flower")
    env.update(FLOWER_ADDRESS="127.0.0.1", FLOWER_PORT=str(flower_port))
    flower = runner.start("flower", argv, env)

    web_url, flower_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{flower_port}"
    wait_for(lambda: runner.alive(web) and _answers(f"{web_url}/healthz"), 60, "web /healthz")
    wait_for(lambda: runner.alive(worker) and "ready." in runner.log(worker), 60, "the worker to be ready")
    beats = [p for name, p, _ in runner.processes if name == "beat"]
    wait_for(lambda: all(runner.alive(b) for b in beats) and any("Acquired lock" in runner.log(b) for b in beats),
             60, "a beat to take the lock")
    wait_for(lambda: runner.alive(flower) and _answers(f"{flower_url}/healthcheck"), 60, "Flower")
    return web_url, flower_url


def _answers(url):
    try:
        return http("GET", url, timeout=5).status_code == 200
    except OSError:
        return False


def _flower(base, path, auth):
    try:
        response = http("GET", base + path, auth=auth, timeout=15)
    except OSError:
        return None
    return response.json() if response.status_code == 200 else None


def _finished(app, task_id):
    with app.app_context():
        execution = db.session.execute(db.select(Execution).filter_by(task_id=task_id)).scalar()
        db.session.expunge_all()
        db.session.remove()
    return execution if execution and execution.status in ("success", "failed", "skipped") else None
