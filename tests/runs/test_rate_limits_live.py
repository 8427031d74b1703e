"""Connection rate limits with real worker processes against the fake server, which records when calls arrive.

Two workers on a private Redis (so no other test's worker takes these runs) share one limiter; the
fake server's arrival times show what a provider would have seen.
"""
from datetime import datetime, timedelta, timezone

import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution
from promptbeat.settings import Settings
from tests import services
from tests.conftest import issue_api_token
from tests.services import wait_for
from web import create_app

pytestmark = pytest.mark.slow
WORKERS, THREADS = 2, 4


@pytest.fixture(scope="module")
def cluster(app, role_environ, tmp_path_factory):
    logs = tmp_path_factory.mktemp("rate-limits")
    private = services.PrivateRedis(logs)
    environ = {**role_environ, "REDIS_URL": private.url}
    web_app = create_app(Settings.from_environ(environ))
    env = services.role_env(environ)
    workers = [services.start_worker(env, logs / f"worker{n}.log", name=f"limited{n}", concurrency=THREADS,
                                     pool="threads") for n in range(WORKERS)]
    yield web_app
    for worker in workers:
        worker.stop(grace=30)
    with web_app.app_context():
        db.engine.dispose()
    private.stop()


@pytest.fixture
def api(cluster, fake_llm):
    fake_llm.reset()
    client = cluster.test_client()
    headers = {"Authorization": f"Bearer {issue_api_token(cluster, 'limits@example.com')}"}

    class Api:
        def __getattr__(self, method):
            def call(path, **kwargs):
                return getattr(client, method)(f"/api{path}", headers=headers, **kwargs)
            return call

    return Api()


def make_connection(api, fake_llm, **limits):
    created = api.post("/connections", json={"name": f"limited {limits}", "base_url": fake_llm.url,
                                             "api_key": "sk-test", **limits})
    assert created.status_code == 201, created.get_data(as_text=True)
    return created.get_json()["id"]


def make_task(api, connection_id, number, **fields):
    body = {"name": f"Limited {number}", "prompt": f"hi {number}", "schedule_type": "crontab", "cron": "0 0 1 1 *",
            "connection_id": connection_id, "enabled": False, **fields}
    created = api.post("/tasks", json=body)
    assert created.status_code == 201, created.get_data(as_text=True)
    return created.get_json()["id"]


def runs_of(api, task_ids):
    return [run for task_id in task_ids for run in api.get(f"/tasks/{task_id}/executions").get_json()["executions"]]


def finish_watching(api, task_ids, count, timeout=90):
    """Wait until count runs of the tasks have ended; returns every (status, wait_reason) seen while waiting."""
    seen = set()

    def done():
        runs = runs_of(api, task_ids)
        seen.update((run["status"], run["wait_reason"]) for run in runs)
        return runs if len(runs) == count and all(run["finished_at"] for run in runs) else None

    runs = wait_for(done, timeout=timeout, what=f"{count} finished runs", interval=0.1)
    return runs, seen


def arrivals(fake_llm):
    return sorted(arrival["time"] for arrival in fake_llm.arrivals)


def most_in_any_window(times, window):
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_two_workers_never_send_more_than_the_connections_rpm_and_waiting_runs_say_why(api, fake_llm):
    rpm, runs = 60, 8
    connection_id = make_connection(api, fake_llm, rpm_limit=rpm)
    task_ids = [make_task(api, connection_id, n) for n in range(runs)]
    for task_id in task_ids:
        assert api.post(f"/tasks/{task_id}/run").status_code == 202
    finished, seen = finish_watching(api, task_ids, runs)
    assert [run["status"] for run in finished] == ["success"] * runs
    # Runs waiting for their place showed it, with the reason, and no worker slept through the wait.
    assert ("waiting", "rate_limit") in seen
    times = arrivals(fake_llm)
    assert len(times) == runs
    # One request a second: in any 3 s at most 3, and one more for a call that left its moment late.
    assert most_in_any_window(times, 3.0) <= rpm * 3 // 60 + 1
    # The line was kept, not just thinned out: the last call went no sooner than its place.
    assert times[-1] - times[0] >= (runs - 1) * 60 / rpm - 0.5


def test_a_429s_retry_after_ms_holds_the_whole_connection(api, fake_llm):
    connection_id = make_connection(api, fake_llm, rpm_limit=6000)
    first, second = make_task(api, connection_id, 1), make_task(api, connection_id, 2)
    fake_llm.queue_responses([{"status": 429, "headers": {"retry-after-ms": "4000"},
                               "body": {"error": {"message": "Rate limit reached for requests.",
                                                  "type": "requests", "code": "rate_limit_exceeded"}}}])
    assert api.post(f"/tasks/{first}/run").status_code == 202
    wait_for(lambda: fake_llm.arrivals, timeout=30, what="the refused call")
    refused_at = fake_llm.arrivals[0]["time"]
    # Another run on the same connection, which got no 429 itself, waits out the provider's hint too.
    assert api.post(f"/tasks/{second}/run").status_code == 202
    finished, seen = finish_watching(api, [first, second], 2)
    assert [run["status"] for run in finished] == ["success", "success"]
    assert ("waiting", "provider") in seen
    second_prompt = "hi 2"
    second_at = [r["time"] for r in fake_llm.requests if r["messages"][-1]["content"] == second_prompt]
    assert len(second_at) == 1 and second_at[0] >= refused_at + 4.0 - 0.05


def test_a_tpm_limit_counts_each_runs_tokens(api, fake_llm):
    # Ten tokens a second; each run counts its prompt (1 token) and max_tokens (30) up front.
    connection_id = make_connection(api, fake_llm, tpm_limit=600)
    task_ids = [make_task(api, connection_id, n, max_tokens=30) for n in range(3)]
    for task_id in task_ids:
        assert api.post(f"/tasks/{task_id}/run").status_code == 202
    finished, seen = finish_watching(api, task_ids, 3)
    assert [run["status"] for run in finished] == ["success"] * 3
    assert ("waiting", "rate_limit") in seen
    times = arrivals(fake_llm)
    assert all(later - earlier >= 3.1 - 0.3 for earlier, later in zip(times, times[1:]))


def test_a_first_run_delay_holds_an_interval_tasks_first_run_as_a_waiting_run(api, fake_llm):
    saved = datetime.now(timezone.utc)
    created = api.post("/tasks", json={"name": "Delayed", "prompt": "later", "schedule_type": "interval",
                                       "interval_seconds": 3600, "first_run_delay_seconds": 3})
    assert created.status_code == 201, created.get_data(as_text=True)
    task_id = created.get_json()["id"]
    assert created.get_json()["first_run_delay_seconds"] == 3
    (run,) = runs_of(api, [task_id])
    assert (run["status"], run["wait_reason"]) == ("waiting", "first_run_delay")
    assert run["not_before"] is not None
    finished, _ = finish_watching(api, [task_id], 1)
    assert finished[0]["status"] == "success"
    assert arrivals(fake_llm)[0] >= saved.timestamp() + 3 - 0.05


def test_a_scheduled_runs_jitter_waits_after_its_slot_never_before_it(api, fake_llm, cluster):
    task_id = make_task(api, None, 1, enabled=True, jitter_seconds=4)
    slot = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    # As beat sends a slot.
    cluster.extensions["celery"].send_task("promptbeat.execute_task", args=[task_id],
                                           kwargs={"trigger": "scheduled", "slot": slot.isoformat()})
    finished, _ = finish_watching(api, [task_id], 1)
    assert finished[0]["status"] == "success"
    (arrived,) = arrivals(fake_llm)
    assert slot.timestamp() - 1 <= arrived <= slot.timestamp() + 4 + 2
    with cluster.app_context():
        run = db.session.execute(db.select(Execution).filter_by(task_id=task_id)).scalar_one()
        # A jitter past a moment was spent waiting, recorded with its moment within the jitter.
        if run.not_before is not None:
            assert run.wait_reason == "jitter"
            assert timedelta(0) <= run.not_before - slot <= timedelta(seconds=4.1)


def test_max_concurrency_lets_that_many_calls_of_the_connection_fly_at_once(api, fake_llm):
    connection_id = make_connection(api, fake_llm, max_concurrency=1)
    task_ids = [make_task(api, connection_id, n, prompt=f"[[sleep:0.3]] slow {n}") for n in range(4)]
    for task_id in task_ids:
        assert api.post(f"/tasks/{task_id}/run").status_code == 202
    finished, _ = finish_watching(api, task_ids, 4)
    assert [run["status"] for run in finished] == ["success"] * 4
    # Eight threads in two workers could have sent all four at once.
    assert fake_llm.stats["peak_in_flight"] == 1
