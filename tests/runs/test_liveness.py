"""Liveness and recovery with real workers: a killed worker's run completes on a survivor, a flushed
broker's queued runs run once, a redelivered duplicate is dropped, a cancelled call is abandoned.

Each test runs its own workers and beat on a private Redis, with a heartbeat every second and a
runner dead after four silent seconds (tests/conftest.py), and publishes runs through an app bound
to that Redis, as the web does.
"""
import json
import os
import secrets
import signal
from datetime import timedelta

import pytest
import redis as redis_lib

from promptbeat import service
from promptbeat.runs import recovery, store
from promptbeat.app import create_app
from promptbeat.extensions import db
from promptbeat.runs.liveness import runner_of
from promptbeat.models import Execution, Task, utcnow
from promptbeat.settings import Settings
from tests import services
from tests.services import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(role_environ, app, tmp_path):
    """start(role, **options) starts a worker or beat on a private Redis; publisher is an app bound to it."""
    redis = services.PrivateRedis(tmp_path)
    environ = {**role_environ, "REDIS_URL": redis.url}
    publisher = create_app(Settings.from_environ(environ))
    app.extensions["celery"].set_default()  # create_app made the publisher's Celery the default
    started = []

    def start(role, name="worker", extra_env=None, **kwargs):
        env = services.role_env({**environ, **(extra_env or {})})
        log = tmp_path / f"{name}{len(started)}.log"
        if role == "worker":
            started.append(services.start_worker(env, log, name=name, **kwargs))
        else:
            started.append(services.start_beat(env, log))
        return started[-1]

    class Cluster:
        pass

    cluster = Cluster()
    cluster.start, cluster.redis, cluster.publisher = start, redis, publisher
    yield cluster
    for role in reversed(started):
        role.stop()
    with publisher.app_context():
        db.engine.dispose()
    redis.stop()


def make_task(app, prompt, **values):
    with app.app_context():
        task = Task(name="Liveness", prompt=prompt, model="fake-model", schedule_type="interval",
                    interval_seconds=600, enabled=False, **values)
        db.session.add(task)
        db.session.commit()
        return task.id


def run_now(cluster, task_id):
    """Queue a manual run as the web's Run now does: the run's row, then its message, marked."""
    with cluster.publisher.app_context():
        execution = service.run_now(db.session.get(Task, task_id))
        return execution.id


def row(app, run_id):
    with app.app_context():
        execution = db.session.get(Execution, run_id)
        db.session.expunge_all()
        return execution


def calls(fake_llm, marker):
    return len([r for r in fake_llm.requests if marker in r["messages"][-1]["content"]])


def lines(role, text):
    return [line for line in role.output().splitlines() if text in line]


@pytest.mark.parametrize("pool", ["prefork", "gevent"])
def test_a_worker_killed_mid_call_has_its_run_completed_once_on_a_survivor(app, fake_llm, cluster, pool):
    marker = "Survive " + secrets.token_hex(4)
    task_id = make_task(app, marker + " [[sleep:3]]")
    workers = {name: cluster.start("worker", name=name, pool=pool) for name in ("first", "second")}
    cluster.start("beat")
    run_id = run_now(cluster, task_id)
    wait_for(lambda: calls(fake_llm, marker) == 1, 20, "the model call")
    claim = wait_for(lambda: row(app, run_id).runner, 5, "the run's claim")
    # The process making the call: a pool child under prefork (its worker lives on), the worker under gevent.
    killed = workers[claim.partition("@")[0]]
    pid = int(runner_of(claim).split(":")[-2])
    assert (pid == killed.pid) == (pool == "gevent")
    os.kill(pid, signal.SIGKILL)

    done = wait_for(lambda: row(app, run_id).status == "success" and row(app, run_id), 60, "the run to complete")
    assert done.output == f"echo: {marker} [[sleep:3]]"
    assert done.recoveries == 1 and done.runner != claim
    assert calls(fake_llm, marker) == 2  # the killed call and the one that completed
    if pool == "gevent":
        assert done.worker != claim.partition(":")[0]
    assert any(lines(worker, f"run {run_id}: its worker") for worker in workers.values())
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(Execution.id)).filter_by(task_id=task_id)).scalar() == 1


def test_a_worker_killed_on_its_last_attempt_leaves_its_run_lost_with_a_reason(app, fake_llm, cluster):
    marker = "Last attempt " + secrets.token_hex(4)
    task_id = make_task(app, marker + " [[sleep:30]]", max_attempts=1)
    worker = cluster.start("worker", pool="gevent")
    run_id = run_now(cluster, task_id)
    wait_for(lambda: calls(fake_llm, marker) == 1, 20, "the model call")
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait()
    cluster.start("worker", name="survivor", pool="gevent")
    cluster.start("beat")
    lost = wait_for(lambda: row(app, run_id).status == "lost" and row(app, run_id), 60, "the run marked lost")
    assert lost.error_class == "WorkerLost"
    assert "stopped (killed or crashed)" in lost.error and "started 1 time(s)" in lost.error
    assert calls(fake_llm, marker) == 1


def test_runs_queued_when_the_broker_is_flushed_run_once_when_a_worker_comes(app, fake_llm, cluster):
    marker = "Flushed " + secrets.token_hex(4)
    task_ids = [make_task(app, f"{marker} {n}") for n in range(3)]
    run_ids = [run_now(cluster, task_id) for task_id in task_ids]
    client = redis_lib.Redis.from_url(cluster.redis.url)
    assert client.llen("promptbeat") == 3
    client.flushdb()
    client.close()
    cluster.start("worker", pool="prefork")
    cluster.start("beat")

    def all_final():
        rows = [row(app, run_id) for run_id in run_ids]
        return all(r.status not in ("queued", "running") for r in rows) and rows

    rows = wait_for(all_final, 60, "every run to end")
    assert [r.status for r in rows] == ["success"] * 3
    assert [r.recoveries for r in rows] == [1] * 3
    for n in range(3):
        assert calls(fake_llm, f"{marker} {n}") == 1


def test_a_queued_backlog_keeps_its_messages_and_is_not_sent_again(app, cluster):
    task_id = make_task(app, "Backlog")
    run_ids = [run_now(cluster, task_id) for _ in range(3)]
    settings = cluster.publisher.config["PROMPTBEAT"]
    client = redis_lib.Redis.from_url(cluster.redis.url)
    with cluster.publisher.app_context():
        # As old as a backlog the sweep judges; the middle run lost its message (and marker).
        db.session.execute(db.update(Execution).values(created_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
        client.delete(recovery.marker_key(settings, run_ids[1]))
        assert recovery.sweep(settings, cluster.publisher.extensions["celery"]) == (1, 0)
        assert recovery.sweep(settings, cluster.publisher.extensions["celery"]) == (0, 0)
    assert [row(app, run_id).recoveries for run_id in run_ids] == [0, 1, 0]
    assert client.llen("promptbeat") == 4
    client.close()


def test_a_message_redelivered_after_its_run_completed_is_dropped_with_one_line(app, fake_llm, cluster):
    marker = "Redelivered " + secrets.token_hex(4)
    task_id = make_task(app, marker)
    run_id = run_now(cluster, task_id)
    client = redis_lib.Redis.from_url(cluster.redis.url, decode_responses=True)
    sent = json.loads(client.lindex("promptbeat", 0))
    worker = cluster.start("worker", concurrency=1)
    wait_for(lambda: row(app, run_id).status == "success", 30, "the run to complete")
    # The broker hands the message out again as kombu's Redis transport restores an unacknowledged one
    # after the visibility timeout (a worker that died before its acknowledgement reached Redis).
    sent["headers"]["redelivered"] = True
    sent["properties"]["delivery_info"]["redelivered"] = True
    client.lpush("promptbeat", json.dumps(sent))
    dropped = f"run {run_id} is already success; its redelivered message is dropped"
    wait_for(lambda: lines(worker, dropped), 30, "the redelivered message to be dropped")
    assert row(app, run_id).status == "success"
    assert calls(fake_llm, marker) == 1
    assert len(lines(worker, "redelivered message is dropped")) == 1, worker.output()
    client.close()


@pytest.mark.parametrize("pool", ["prefork", "gevent"])
def test_a_cancelled_run_abandons_its_call_and_the_worker_goes_on(app, fake_llm, cluster, pool):
    marker = "Cancel " + secrets.token_hex(4)
    held = make_task(app, marker + " held [[sleep:60]]")
    worker = cluster.start("worker", pool=pool, concurrency=1)
    run_id = run_now(cluster, held)
    wait_for(lambda: calls(fake_llm, marker + " held") == 1, 20, "the held model call")
    wait_for(lambda: row(app, run_id).runner, 5, "the run's claim")
    with app.app_context():
        assert store.cancel(run_id)
        assert not store.cancel(run_id)  # already final
    cancelled = row(app, run_id)
    worker.wait_for_output(f"run {run_id} was cancelled or taken over; its call was abandoned", timeout=5)

    # A queued run cancelled before its message arrives is dropped; the next run goes through the freed slot.
    queued = make_task(app, marker + " queued")
    later = make_task(app, marker + " later")
    with app.app_context():
        queued_run = Execution(task_id=queued, trigger="manual", status="queued")
        db.session.add(queued_run)
        db.session.commit()
        queued_run_id = queued_run.id
        assert store.cancel(queued_run_id)
    with cluster.publisher.app_context():
        cluster.publisher.extensions["celery"].send_task(
            "promptbeat.execute_task", args=[queued], kwargs={"trigger": "manual", "execution_id": queued_run_id})
    later_id = run_now(cluster, later)
    wait_for(lambda: row(app, later_id).status == "success", 20, "the next run on the same worker")
    worker.wait_for_output(f"run {queued_run_id} already finished (cancelled); not running it again", timeout=10)
    assert calls(fake_llm, marker + " queued") == 0

    after = row(app, run_id)
    assert (after.status, after.error_class, after.output) == ("cancelled", "Cancelled", None)
    assert (after.finished_at, after.attempts, after.duration_ms) == (
        cancelled.finished_at, cancelled.attempts, cancelled.duration_ms)
    assert worker.process.poll() is None
