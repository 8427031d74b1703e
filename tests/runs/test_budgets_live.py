"""Budgets on a real worker: a stop before the call, and concurrent runs that never pass a budget together."""
import pytest
from sqlalchemy import select

from promptbeat.extensions import db
from promptbeat.models import Spend
from promptbeat.settings import Settings
from tests import services
from tests.services import wait_for

pytestmark = pytest.mark.slow
TASK = {"schedule_type": "crontab", "cron": "0 9 * * *", "enabled": False, "overlap_policy": "allow"}
RUNS = 10


@pytest.fixture
def two_workers(app, role_environ, tmp_path):
    """Two worker processes with room for every run at once, so that only the budget holds runs back."""
    env = services.role_env(role_environ)
    workers = []
    try:
        for number in range(2):
            workers.append(services.start_worker(env, tmp_path / f"worker{number}.log", name=f"budget{number}",
                                                 concurrency=RUNS, pool="gevent"))
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def finished_runs(api, task_id, count):
    runs = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
    return len(runs) == count and all(run["status"] in ("success", "skipped", "failed") for run in runs) and runs


def test_workers_stop_a_run_over_budget_and_keep_concurrent_runs_within_it(app, api, fake_llm, two_workers):
    fake_llm.reset()
    stopped = api.post("/tasks", json={**TASK, "name": "Over", "prompt": "Over budget",
                                       "budget_tokens_day": 10}).get_json()
    api.post(f"/tasks/{stopped['id']}/run")
    (run,) = wait_for(lambda: finished_runs(api, stopped["id"], 1), 60, "the stopped run")
    assert (run["status"], run["error_class"]) == ("skipped", "budget_exceeded")
    assert fake_llm.requests == []

    # 18 characters (5 tokens) and 1,000 for the answer: the budget has room for three such estimates at once.
    estimate = 5 + 1000
    task = api.post("/tasks", json={**TASK, "name": "Busy", "prompt": "Slow [[sleep:1.0]]", "max_tokens": 1000,
                                    "budget_tokens_day": 3 * estimate + estimate // 2}).get_json()
    for _ in range(RUNS):
        assert api.post(f"/tasks/{task['id']}/run", json={"allow_overlap": True}).status_code == 202
    runs = wait_for(lambda: finished_runs(api, task["id"], RUNS), 90, "every run finished")
    statuses = [run["status"] for run in runs]
    assert "success" in statuses and "failed" not in statuses
    # However the runs were spread over the two workers, no more than three calls were in flight at once.
    assert fake_llm.stats["peak_in_flight"] <= 3
    assert len(fake_llm.requests) == statuses.count("success")
    used = sum(run["total_tokens"] or 0 for run in runs)
    with app.app_context():
        rows = db.session.execute(select(Spend).where(Spend.scope == task["id"])).scalars().all()
        assert {row.tokens for row in rows} == {used}  # every estimate settled to the answers' usage
    assert api.get(f"/tasks/{task['id']}").get_json()["spend"]["tokens_day"] == used


def test_a_run_cancelled_mid_call_gives_its_estimate_back(app, api, fake_llm, two_workers):
    fake_llm.reset()
    task = api.post("/tasks", json={**TASK, "name": "Cancelled", "prompt": "Long [[sleep:20]]",
                                    "budget_tokens_day": 100_000}).get_json()
    run_id = api.post(f"/tasks/{task['id']}/run").get_json()["execution"]["id"]
    wait_for(lambda: fake_llm.stats["in_flight"] == 1, 30, "the call in flight")

    def held():
        with app.app_context():
            return {row.tokens for row in db.session.execute(select(Spend)).scalars()}

    # "Long [[sleep:20]]": 17 characters, 5 tokens, and the answer's allowance.
    assert held() == {5 + Settings.estimated_completion_tokens}
    assert api.post(f"/executions/{run_id}/cancel").status_code == 202
    wait_for(lambda: held() == {0}, 30, "the estimate given back")
    assert api.get(f"/tasks/{task['id']}").get_json()["last_run"]["status"] == "cancelled"
