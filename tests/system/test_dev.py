"""`python3 dev.py start`, stopped with Ctrl-C during a run: a warm shutdown that says what it waits for."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from promptbeat import service
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from tests import services
from tests.services import wait_for

pytestmark = pytest.mark.slow


class DevStart:
    """`python3 dev.py start` against the test database and Redis, in this test's virtualenv."""

    def __init__(self, role_environ, log_path, *args, **extra):
        env = services.role_env(role_environ)
        env.update(PROMPTBEAT_VENV=sys.prefix, PROMPTBEAT_WEB_PORT=str(services.free_port()),
                   PROMPTBEAT_FLOWER_PORT=str(services.free_port()), **extra)
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.web_url = f"http://127.0.0.1:{env['PROMPTBEAT_WEB_PORT']}"
        self.process = subprocess.Popen([sys.executable, "dev.py", "start", *args], cwd=services.ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_until_ready(self):
        wait_for(lambda: "Ctrl-C stops everything" in self.output() and "ready." in self.output(), 120,
                 "dev.py start and its worker")

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


def _run_status(app, run_id):
    with app.app_context():
        status = db.session.get(Execution, run_id).status
        db.session.remove()
        return status


def _start_slow_run(app, seconds, overlap_policy="skip"):
    with app.app_context():
        task = Task(name="Slow report", prompt=f"[[sleep:{seconds}]] hello", model="fake-model",
                    schedule_type="interval", interval_seconds=600, enabled=False, overlap_policy=overlap_policy)
        db.session.add(task)
        db.session.commit()
        run_id = service.run_now(task).id
    wait_for(lambda: _run_status(app, run_id) == "running", 60, "the run to start")
    return run_id


@pytest.mark.parametrize("pool", ["gevent", "prefork"])
def test_ctrl_c_lets_the_run_in_flight_finish_and_says_so(app, role_environ, tmp_path, pool):
    dev = DevStart(role_environ, tmp_path / "dev.log", WORKER_POOL=pool, WORKER_CONCURRENCY="4")
    try:
        dev.wait_until_ready()
        run_id = _start_slow_run(app, 4)
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(timeout=90) == 0, dev.output()[-3000:]
    finally:
        dev.close()
    output = dev.output()
    assert _run_status(app, run_id) == "success", output[-3000:]
    assert "waiting for worker to finish 1 run in flight" in output
    assert "Warm shutdown" in output
    assert "WorkerLostError" not in output and "stopping worker with" not in output


def test_a_run_outlasting_the_stop_timeout_is_delivered_again_and_completes(app, role_environ, tmp_path,
                                                                             redis_client):
    dev = DevStart(role_environ, tmp_path / "dev.log", PROMPTBEAT_DEV_WORKER_STOP_TIMEOUT="1")
    try:
        dev.wait_until_ready()
        # Overlapping runs allowed: the killed run's overlap lock would otherwise hold off its own
        # redelivered message until the lock expires.
        run_id = _start_slow_run(app, 6, overlap_policy="allow")
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(timeout=90) == 0, dev.output()[-3000:]
    finally:
        dev.close()
    output = dev.output()
    assert "stopping worker with 1 run in flight" in output, output[-3000:]
    assert "WorkerLostError" not in output
    # The run's message stayed unacknowledged: a worker started later takes it once the visibility
    # timeout passes, and the redelivered message takes over the run left running.
    assert redis_client.hlen("unacked") == 1
    # A short visibility timeout, above the run bound (max run + sweep + grace) every role checks.
    env = services.role_env({**role_environ, "PROMPTBEAT_VISIBILITY_TIMEOUT": "13",
                             "PROMPTBEAT_MAX_RUN_SECONDS": "10"})
    worker = services.start_worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: _run_status(app, run_id) == "success", 60, "the run to complete on the new worker")
    finally:
        worker.stop()
