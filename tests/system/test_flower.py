"""Flower tells the truth: a real worker and a real Flower, read through Flower's HTTP API."""
import secrets

import pytest

from promptbeat import service
from promptbeat.runs import message_ids
from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger
from tests import services
from tests.services import http, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=["gevent", "prefork"])
def worker_and_flower(request, app, role_environ, tmp_path):
    """A worker on the session's broker, and a Flower watching it behind basic auth; yields Flower's URL and auth."""
    env = services.role_env(role_environ)
    worker = services.start_worker(env, tmp_path / "worker.log", pool=request.param)
    auth = ("admin", secrets.token_urlsafe(8))
    port = services.free_port()
    flower = services.Role(["celery", "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}"],
                           {**env, "FLOWER_BASIC_AUTH": ":".join(auth)}, tmp_path / "flower.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/healthcheck"), 60, "Flower")
        # Flower sees task events only once it knows the worker.
        wait_for(lambda: _api(url, "/api/workers?refresh=1", auth), 30, "Flower to see the worker")
        yield url, auth
    finally:
        flower.stop()
        worker.stop()


def _answers(url):
    try:
        return http("GET", url, timeout=2).status_code == 200
    except OSError:
        return False


def _api(base, path, auth):
    response = http("GET", base + path, auth=auth)
    return response.json() if response.status_code == 200 else None


def _flower_task(base, auth, execution, states):
    """Flower's record of the message that carried this run, once it reached one of states."""
    celery_id = message_ids.message_id(execution)

    def reached():
        info = _api(base, f"/api/task/info/{celery_id}", auth)
        return info if info and info.get("state") in states else None
    return wait_for(reached, 60, f"Flower to show run {execution.id} as one of {states}")


def _task(**values):
    task = Task(**{"name": "Flower report", "prompt": "hello", "model": "fake-model", "schedule_type": "interval",
                   "interval_seconds": 600, "enabled": False, **values})
    db.session.add(task)
    db.session.commit()
    return task


def test_flower_shows_a_failed_run_as_failure_and_a_skipped_run_as_success(app, worker_and_flower, redis_client):
    base, auth = worker_and_flower
    with app.app_context():
        # A 401 is not retried: the run fails at its first attempt.
        failing = _task(prompt="[[fail:401]] report")
        failed = service.run_now(failing)
        # An immediate run of a disabled task is recorded as skipped, not run.
        skipped = service.enqueue_run(_task(name="Paused report"), Trigger.IMMEDIATE)
        failed_info = _flower_task(base, auth, failed, {"SUCCESS", "FAILURE"})
        skipped_info = _flower_task(base, auth, skipped, {"SUCCESS", "FAILURE"})
        db.session.expire_all()
        failed = db.session.get(Execution, failed.id)
        skipped = db.session.get(Execution, skipped.id)
        assert (failed.status, skipped.status) == ("failed", "skipped")
        failing_id = failing.id

    assert failed_info["state"] == "FAILURE"
    # Flower names the promptbeat task and the run, and shows the run's error.
    assert failed_info["name"] == f"promptbeat task {failing_id}"
    assert f"run {failed.id}" in failed_info["exception"]
    assert "Incorrect API key provided" in failed_info["exception"]
    assert f"'execution_id': {failed.id}" in failed_info["kwargs"]
    assert skipped_info["state"] == "SUCCESS"
    assert skipped_info["result"] == repr(f"task {skipped.task_id} run {skipped.id}: skipped")
    # Nothing secret or private reaches Flower: not the API key, not the prompt.
    everything = str(_api(base, "/api/tasks", auth))
    assert "[[fail:401]]" not in everything and "report" not in everything
    assert app.config["PROMPTBEAT"].openai_api_key not in everything
    # The failed run's message was acknowledged, not requeued or retried: nothing waits in the queue
    # or in kombu's record of unacknowledged messages.
    wait_for(lambda: redis_client.hlen("unacked") == 0, 10, "the failed run's message to be acknowledged")
    assert redis_client.llen("promptbeat") == 0

