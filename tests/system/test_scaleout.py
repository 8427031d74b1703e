"""Scale-out with real processes: three workers share 300 runs; runs survive a SIGTERMed and a SIGKILLed worker.

The workers use a private Redis, so no other test's worker can take these runs.
"""
import os
import signal
from collections import Counter

import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution
from promptbeat.runs.states import RunStatus
from promptbeat.settings import Settings
from tests import services
from tests.conftest import issue_api_token
from tests.services import wait_for
from web import create_app

# Scale-out runs on PostgreSQL, as in docker compose.
pytestmark = pytest.mark.slow
RUNS = 300
# Enough runs that all three workers are busy when two of them go down, few enough to stay quick.
FAULT_RUNS = 120
FINAL = [str(s) for s in RunStatus if s.is_final]


@pytest.fixture
def cluster(app, database_url, role_environ, tmp_path):
    """A web app and up to three workers on a private Redis; the database is the session's."""
    private = services.PrivateRedis(tmp_path)
    environ = {**role_environ, "REDIS_URL": private.url}
    web_app = create_app(Settings.from_environ(environ))
    workers = []

    def start_workers(count, **extra):
        """Start `count` more workers (numbered on from those already started); returns the new ones."""
        env = services.role_env({**environ, **extra})
        started = []
        for number in range(len(workers) + 1, len(workers) + count + 1):
            started.append(services.start_worker(env, tmp_path / f"worker{number}.log", name=f"worker{number}"))
        workers.extend(started)
        return started

    yield web_app, start_workers
    for worker in workers:
        worker.stop(grace=30)
    with web_app.app_context():
        db.engine.dispose()
    private.stop()


def submit_runs(web_app, prompt, count):
    """Create a (disabled) task and queue `count` manual runs of it through the web API."""
    client = web_app.test_client()
    headers = {"Authorization": f"Bearer {issue_api_token(web_app, 'scale@example.com')}"}
    created = client.post("/api/tasks", headers=headers, json={
        "name": "Load", "prompt": prompt, "schedule_type": "interval", "interval_seconds": 600, "enabled": False,
        "overlap_policy": "allow"})  # many runs of one task at once is the point here
    assert created.status_code == 201, created.get_data(as_text=True)
    task_id = created.get_json()["id"]
    for _ in range(count):
        assert client.post(f"/api/tasks/{task_id}/run", headers=headers).status_code == 202
    return task_id


def executions(web_app, task_id):
    with web_app.app_context():
        rows = db.session.execute(db.select(Execution).filter_by(task_id=task_id)).scalars().all()
        db.session.expunge_all()
        db.session.remove()
    return rows


def all_final(web_app, task_id, count):
    rows = executions(web_app, task_id)
    return len(rows) == count and all(r.status in FINAL for r in rows) and rows


def test_three_workers_share_300_runs_none_lost_none_twice(cluster, fake_llm):
    web_app, start_workers = cluster
    start_workers(3)
    fake_llm.reset()
    task_id = submit_runs(web_app, "Scale out [[sleep:0.02]]", RUNS)

    rows = wait_for(lambda: all_final(web_app, task_id, RUNS), 150, f"{RUNS} runs to finish", interval=0.5)
    assert Counter(r.status for r in rows) == {"success": RUNS}
    per_worker = Counter(r.worker.split("@")[0] for r in rows)
    assert set(per_worker) == {"worker1", "worker2", "worker3"}, per_worker
    # One model call per run: a run executed twice would call the model again.
    assert len([r for r in fake_llm.requests if "Scale out" in str(r["messages"])]) == RUNS


def test_runs_survive_a_sigtermed_and_a_sigkilled_worker(cluster, fake_llm):
    web_app, start_workers = cluster
    # As in docker compose: SIGTERM starts the soft shutdown; a dead worker's runs come back after a short
    # timeout, which must exceed the run bound (max run + sweep + grace: 4 + 1 + 1 s here).
    gentle, killed, survivor = start_workers(
        3, REMAP_SIGTERM="SIGQUIT", PROMPTBEAT_VISIBILITY_TIMEOUT="7", PROMPTBEAT_MAX_RUN_SECONDS="4",
        PROMPTBEAT_WORKER_SOFT_SHUTDOWN_TIMEOUT="10")
    fake_llm.reset()
    task_id = submit_runs(web_app, "Under fire [[sleep:0.1]]", FAULT_RUNS)

    def started(name):
        return [r for r in executions(web_app, task_id) if r.worker and r.worker.startswith(name + "@")]
    wait_for(lambda: len(started("worker1")) >= 3 and len(started("worker2")) >= 3, 60, "both victims to be busy")

    gentle.process.send_signal(signal.SIGTERM)
    # SIGKILL the whole process group, as a container dies: the pool children go with the parent.
    os.killpg(killed.pid, signal.SIGKILL)
    killed.process.wait()
    gentle.process.wait(timeout=30)

    rows = wait_for(lambda: all_final(web_app, task_id, FAULT_RUNS), 150, "every run to reach a final state",
                    interval=0.5)
    assert Counter(r.status for r in rows) == {"success": FAULT_RUNS}
    assert survivor.process.poll() is None
    assert "worker3" in Counter(r.worker.split("@")[0] for r in rows)


def test_a_run_longer_than_the_soft_shutdown_is_requeued_not_lost(cluster, fake_llm):
    web_app, start_workers = cluster
    # The default visibility timeout (an hour): only the shutdown itself can bring the run back in time.
    (stopping,) = start_workers(1, REMAP_SIGTERM="SIGQUIT", PROMPTBEAT_WORKER_SOFT_SHUTDOWN_TIMEOUT="2")
    task_id = submit_runs(web_app, "Long one [[sleep:6]]", 1)
    wait_for(lambda: [r for r in executions(web_app, task_id) if r.status == "running"], 30, "the run to start")

    stopping.process.send_signal(signal.SIGTERM)
    stopping.process.wait(timeout=30)
    assert "soft shutdown" in stopping.output().lower()

    start_workers(1, REMAP_SIGTERM="SIGQUIT")
    (run,) = wait_for(lambda: all_final(web_app, task_id, 1), 60, "the requeued run to finish", interval=0.5)
    assert run.status == "success" and run.worker.startswith("worker2@")
