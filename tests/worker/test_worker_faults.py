"""A real worker killed or stopped mid-call: the run completes once or is marked lost; never twice, never stuck.

Each test runs its own worker (and beat, which fires the lost-run sweep) on a private Redis, so the
session's worker cannot take the message and the kill hits the process making the call.
"""
import os
import secrets
import signal
import time

import pytest
from celery import Celery

from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from tests import services
from tests.services import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def private_roles(role_environ, app, tmp_path):
    redis = services.PrivateRedis(tmp_path)
    env = services.role_env({**role_environ, "REDIS_URL": redis.url})
    sender = Celery("sender", broker=redis.url)
    sender.conf.task_default_queue = "promptbeat"
    started = []

    def start(role, **kwargs):
        starter = services.start_worker if role == "worker" else services.start_beat
        started.append(starter(env, tmp_path / f"{role}{len(started)}.log", **kwargs))
        return started[-1]

    def send(task_id, execution_id):
        sender.send_task("promptbeat.execute_task", args=[task_id],
                         kwargs={"trigger": "manual", "execution_id": execution_id})

    yield start, send
    for role in reversed(started):
        role.stop()  # also closes the log of a worker that was killed
    sender.close()
    redis.stop()


def queued(app, prompt, **values):
    with app.app_context():
        task = Task(name="Fault", prompt=prompt, model="fake-model", schedule_type="interval",
                    interval_seconds=600, **values)
        execution = Execution(task=task, trigger="manual", status="queued")
        db.session.add_all([task, execution])
        db.session.commit()
        return task.id, execution.id


def status(app, execution_id):
    with app.app_context():
        row = db.session.get(Execution, execution_id)
        result = (row.status, row.error_class) if row else None
        db.session.remove()
        return result


def calls(fake_llm, marker):
    return len([r for r in fake_llm.requests if marker in r["messages"][-1]["content"]])


# prefork is the default; threads and gevent are the pools for many calls in flight (docs/operations.md).
POOLS = ["prefork", "threads", "gevent"]


@pytest.mark.parametrize("pool", POOLS)
def test_sigkill_mid_call_on_its_last_attempt_marks_the_run_lost_once_and_later_runs_work(
        app, fake_llm, private_roles, pool):
    start, send = private_roles
    marker = "Killed " + secrets.token_hex(4)
    # One attempt: the run may not be started again (tests/runs/test_liveness.py shows the re-run).
    task_id, run_id = queued(app, marker + " [[sleep:30]]", max_attempts=1)
    worker = start("worker", pool=pool)
    send(task_id, run_id)
    wait_for(lambda: status(app, run_id)[0] == "running", 20, "the run to start")
    wait_for(lambda: calls(fake_llm, marker), 10, "the model call")
    os.killpg(worker.pid, signal.SIGKILL)  # the whole worker, children included
    worker.process.wait()
    start("worker", name="second", pool=pool)
    start("beat")
    # The dead worker's heartbeat ages past PROMPTBEAT_RUNNER_TIMEOUT_SECONDS, then the sweep (every second) runs.
    assert wait_for(lambda: status(app, run_id)[0] == "lost" and status(app, run_id), 30, "the run marked lost") \
        == ("lost", "WorkerLost")
    assert calls(fake_llm, marker) == 1
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(Execution.id)).filter_by(task_id=task_id)).scalar() == 1
    # The task's next run is unaffected.
    with app.app_context():
        later = Execution(task_id=task_id, trigger="manual", status="queued")
        db.session.add(later)
        db.session.get(Task, task_id).prompt = "After the kill"
        db.session.commit()
        later_id = later.id
    send(task_id, later_id)
    wait_for(lambda: status(app, later_id)[0] == "success", 20, "the next run")


@pytest.mark.parametrize("pool", POOLS)
def test_sigterm_mid_call_lets_the_run_finish(app, fake_llm, private_roles, pool):
    start, send = private_roles
    marker = "Warm shutdown " + secrets.token_hex(4)
    task_id, run_id = queued(app, marker + " [[sleep:3]]")
    worker = start("worker", pool=pool)
    send(task_id, run_id)
    wait_for(lambda: calls(fake_llm, marker), 20, "the model call")
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=60)
    assert status(app, run_id) == ("success", None)
    assert calls(fake_llm, marker) == 1
    assert "warm shutdown" in worker.output().lower()
