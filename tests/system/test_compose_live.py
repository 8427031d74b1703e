"""docker-compose.yml run for real: the operator's path from `up --build` to scaling, failover and restart.

Needs a Docker engine with the compose v2 plugin and the base images the compose file names
(tests/system/compose_engine.sh provides all three; .ci/run calls it). PROMPTBEAT_SKIP_COMPOSE=1 skips
these tests; without an engine they are skipped too, except under PROMPTBEAT_REQUIRE_SERVICES=1 (CI),
where that is a failure. Every compose call uses a project name of its own, so a user's containers and
volumes are never touched, and the project is removed (volumes included) at the end.
"""
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.services import ROOT, free_port, http, wait_for

pytestmark = pytest.mark.compose

SKIP = os.environ.get("PROMPTBEAT_SKIP_COMPOSE") == "1"
# An init script that keeps PostgreSQL's first start on its Unix-socket-only set-up server this long.
SLOW_INIT_SECONDS = 20
# Short enough for a quick takeover, long enough that a busy two-core machine does not lose the lock.
LOCK_TIMEOUT = 10
# How long the fake model takes over the run in flight when compose stops.
IN_FLIGHT_SECONDS = 8
WORKERS = 3
TASKS = 12
ADMIN_PASSWORD = "Compose-admin-" + secrets.token_hex(4)
FLOWER_AUTH = ("ops", secrets.token_urlsafe(8))
# Written for the report of the run (durations of the slow steps).
TIMINGS = ROOT / "test-artifacts" / "compose-timings.txt"


def engine_problem():
    """Why docker compose cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    for argv in (["docker", "info"], ["docker", "compose", "version"]):
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            return f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()[:300]}"
    return None


@pytest.fixture(scope="module")
def engine():
    if SKIP:
        pytest.skip("PROMPTBEAT_SKIP_COMPOSE=1")
    problem = engine_problem()
    if problem:
        message = f"{problem}; run tests/system/compose_engine.sh as root, or set PROMPTBEAT_SKIP_COMPOSE=1"
        if os.environ.get("PROMPTBEAT_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


class Timings:
    """Seconds spent on each named step, written to TIMINGS."""

    def __init__(self):
        self.steps = []

    def measure(self, name, function, *args, **kwargs):
        started = time.monotonic()
        result = function(*args, **kwargs)
        self.steps.append((name, time.monotonic() - started))
        return result

    def write(self):
        TIMINGS.parent.mkdir(exist_ok=True)
        TIMINGS.write_text("".join(f"{name}: {seconds:.1f}s\n" for name, seconds in self.steps))


class Project:
    """One compose project over the checkout's docker-compose.yml, with its own name and .env."""

    def __init__(self, workdir, env_values, override=None):
        self.name = f"pbtest{os.getpid()}{secrets.token_hex(3)}"
        self.env_file = workdir / ".env"
        self.env_file.write_text(dotenv(env_values))
        self.files = [ROOT / "docker-compose.yml"] + ([override] if override else [])

    def argv(self, *args):
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return ["docker", "compose", "--project-directory", str(ROOT), *files, "--env-file", str(self.env_file),
                "-p", self.name, *args]

    def run(self, *args, timeout=600, check=True):
        result = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, env=docker_env())
        if check and result.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{self.logs()[-6000:]}")
        return result

    def logs(self, service=None):
        args = ["logs", "--no-color", "--no-log-prefix"] + ([service] if service else [])
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=120, env=docker_env()).stdout

    def containers(self, service):
        """Ids of the service's running containers."""
        return self.run("ps", "-q", service).stdout.split()

    def states(self):
        """Each running container's service and health, from `docker compose ps`."""
        lines = self.run("ps", "--format", "json").stdout.strip().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):
            rows = rows[0]
        return [(row["Service"], row.get("Health", "")) for row in rows]

    def down(self):
        self.run("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


def docker_env():
    """Only what docker needs from this environment: compose would let any shell variable override .env."""
    return {key: value for key, value in os.environ.items() if key in ("PATH", "HOME") or key.startswith("DOCKER_")}


def dotenv(values):
    return "".join(f"{name}={value}\n" for name, value in values.items())


def env_values(web_port, flower_port):
    """.env as an operator fills it in from .env.example: secrets, the demo model server, free host ports."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    values.update(
        SECRET_KEY=secrets.token_urlsafe(32), POSTGRES_PASSWORD=secrets.token_hex(16),
        PROMPTBEAT_FERNET_KEYS=Fernet.generate_key().decode(),
        FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH), COMPOSE_PROFILES="demo",
        OPENAI_API_KEY="demo", OPENAI_BASE_URL="http://fakellm:8089/v1", PROMPTBEAT_DEFAULT_MODEL="fake-model",
        WEB_HOST_PORT=str(web_port), FLOWER_HOST_PORT=str(flower_port),
        # Its own image tag, so a user's promptbeat:latest is left alone (and this one is reused next time).
        PROMPTBEAT_IMAGE_TAG="compose-test",
        PROMPTBEAT_BEAT_LOCK_TIMEOUT=str(LOCK_TIMEOUT), PROMPTBEAT_BEAT_MAX_LOOP_INTERVAL="2",
    )
    return values


def slow_postgres_override(workdir):
    """A compose file adding an init script that holds PostgreSQL's first start on its set-up server."""
    script = workdir / "slow-init.sh"
    script.write_text(f'echo "slow init: {SLOW_INIT_SECONDS}s"\nsleep {SLOW_INIT_SECONDS}\n')
    script.chmod(0o644)
    override = workdir / "slow-postgres.yml"
    override.write_text("services:\n  postgres:\n    volumes:\n"
                        f"      - {script}:/docker-entrypoint-initdb.d/slow-init.sh:ro\n")
    return override


@pytest.fixture
def project(engine, tmp_path):
    web_port, flower_port = free_port(), free_port()
    created = Project(tmp_path, env_values(web_port, flower_port), slow_postgres_override(tmp_path))
    created.web = f"http://127.0.0.1:{web_port}"
    created.flower = f"http://127.0.0.1:{flower_port}"
    try:
        yield created
    finally:
        created.down()


def test_a_blank_env_stops_compose_with_a_clear_message(engine, tmp_path):
    blank = Project(tmp_path, {})
    result = blank.run("config", "--quiet", check=False)
    assert result.returncode != 0
    # Compose names the first required variable it meets; each says what to set.
    assert re.search(r"set (SECRET_KEY|POSTGRES_PASSWORD|PROMPTBEAT_FERNET_KEYS) in \.env", result.stderr)


def test_the_operators_path_from_build_to_failover_and_restart(project):
    timings = Timings()
    try:
        _walk_the_path(project, timings)
    finally:
        timings.write()


def _walk_the_path(project, timings):
    timings.measure("build", project.run, "build")
    # PostgreSQL's first start runs an init script for SLOW_INIT_SECONDS: migrate must wait for the real
    # server (a healthcheck over the Unix socket let it start early and fail).
    timings.measure("up --wait (first start, slow init)", project.run, "up", "-d", "--wait", "--wait-timeout", "300")
    assert f"slow init: {SLOW_INIT_SECONDS}s" in project.logs("postgres")
    states = project.states()
    assert {service for service, _ in states} == {"postgres", "redis", "web", "worker", "beat", "flower", "fakellm"}
    assert all(health in ("healthy", "") for _, health in states), states
    assert [health for service, health in states if service == "beat"] == ["healthy", "healthy"]

    # Published on the loopback address only, and /metrics off by default.
    assert project.run("port", "web", "8000").stdout.strip().startswith("127.0.0.1:")
    assert project.run("port", "flower", "5555").stdout.strip().startswith("127.0.0.1:")
    assert http("GET", f"{project.web}/healthz").json() == {"status": "ok", "database": "ok", "redis": "ok"}
    assert http("GET", f"{project.web}/metrics").status_code == 404
    assert "[ERROR]" not in project.logs("web")

    # create-admin without a terminal: the password comes from --password, the API token is the last line.
    created = project.run("run", "--rm", "-T", "web", "flask", "--app", "web", "create-admin",
                          "admin@example.com", "--password", ADMIN_PASSWORD)
    token = created.stdout.strip().splitlines()[-1]
    api = {"Authorization": f"Bearer {token}"}
    assert http("GET", f"{project.web}/api/tasks", headers=api).status_code == 200

    timings.measure(f"up --scale worker={WORKERS}", project.run,
                    "up", "-d", "--wait", "--wait-timeout", "180", "--scale", f"worker={WORKERS}")
    hostnames = {project.run("exec", "-T", "--index", str(i), "worker", "hostname").stdout.strip()
                 for i in range(1, WORKERS + 1)}
    assert len(hostnames) == WORKERS

    task_ids = [_create_task(project, api, f"compose {i}") for i in range(TASKS)]
    runs = timings.measure("interval tasks run at once", wait_for,
                           lambda: _finished_runs(project, api, task_ids), 120, "every task's first run")
    assert all(run["status"] == "success" for run in runs), runs
    assert {run["output"] for run in runs} == {f"echo: compose {i} [[sleep:1]]" for i in range(TASKS)}
    assert {run["worker"] for run in runs} == {f"worker@{hostname}" for hostname in hostnames}

    # Flower: its UI and API behind basic auth, and it sees every worker.
    assert http("GET", f"{project.flower}/api/workers").status_code == 401
    wait_for(lambda: _flower_workers(project) == {f"worker@{hostname}" for hostname in hostnames}, 60,
             "Flower to list every worker")

    # Two beats, exactly one holding the lock; killing it hands the schedule to the other.
    beats = project.containers("beat")
    assert len(beats) == 2
    holders = [beat for beat in beats if "beat: Acquired lock" in _container_logs(beat)]
    assert len(holders) == 1, [_container_logs(beat)[-2000:] for beat in beats]
    standby = next(beat for beat in beats if beat not in holders)
    subprocess.run(["docker", "kill", holders[0]], check=True, capture_output=True)
    timings.measure("beat takeover after docker kill", wait_for,
                    lambda: "beat: Acquired lock" in _container_logs(standby), LOCK_TIMEOUT + 60,
                    "the standby beat to take the lock")
    after_takeover = _create_task(project, api, "after takeover")
    wait_for(lambda: _finished_runs(project, api, [after_takeover]), 60, "a run scheduled by the new lock holder")
    task_ids.append(after_takeover)

    # down waits for a run in flight (the worker's warm shutdown), and for no longer than that run.
    in_flight = _create_task(project, api, "in flight at down", sleep=IN_FLIGHT_SECONDS)
    wait_for(lambda: _runs(project, api, in_flight, "running"), 60, "the run to start")
    started = time.monotonic()
    timings.measure("down (a run in flight)", project.run, "down")
    assert time.monotonic() - started < IN_FLIGHT_SECONDS + 40
    task_ids.append(in_flight)

    # down keeps the volumes: the tasks, their runs and the admin's token are there after up.
    # Only web and what it needs: the data is what is checked, the other services were above.
    timings.measure("up --wait web (restart)", project.run, "up", "-d", "--wait", "--wait-timeout", "180", "web")
    listed = http("GET", f"{project.web}/api/tasks", headers=api)
    assert listed.status_code == 200
    assert {task["id"] for task in listed.json()["tasks"]} >= set(task_ids)
    (finished,) = _runs(project, api, in_flight, "success")
    assert finished["output"] == f"echo: in flight at down [[sleep:{IN_FLIGHT_SECONDS}]]"


def _create_task(project, api, prompt, sleep=1):
    created = http("POST", f"{project.web}/api/tasks", headers=api, json_body={
        "name": prompt, "prompt": f"{prompt} [[sleep:{sleep}]]", "schedule_type": "interval",
        "interval_seconds": 3600})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _runs(project, api, task_id, status):
    """The task's runs in that status."""
    listed = http("GET", f"{project.web}/api/tasks/{task_id}/executions", headers=api).json()["executions"]
    return [run for run in listed if run["status"] == status]


def _finished_runs(project, api, task_ids):
    """Each task's first run once every one has finished, else None."""
    runs = []
    for task_id in task_ids:
        listed = http("GET", f"{project.web}/api/tasks/{task_id}/executions", headers=api).json()["executions"]
        finished = [run for run in listed if run["status"] not in ("queued", "running")]
        if not finished:
            return None
        runs.append(finished[-1])
    return runs


def _flower_workers(project):
    try:
        answer = http("GET", f"{project.flower}/api/workers?refresh=1", auth=FLOWER_AUTH, timeout=20)
    except OSError:
        return set()
    return set(answer.json()) if answer.status_code == 200 else set()


def _container_logs(container):
    result = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr
