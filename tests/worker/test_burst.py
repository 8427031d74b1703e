"""500 interval tasks created at once: each runs at once, and the global cap queues their LLM calls.

Real worker processes on a private Redis (so no other test's worker takes these runs),
the session's PostgreSQL, and the fake server counting the calls it has in flight.
"""
import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution
from promptbeat.runs.states import RunStatus
from promptbeat.settings import Settings
from tests import services
from tests.conftest import issue_api_token
from tests.services import wait_for
from web import create_app

pytestmark = pytest.mark.slow
TASKS = 500
CAP = 4
# Two workers with 8 threads each could make 16 calls at once without the cap.
WORKERS, THREADS = 2, 8


@pytest.fixture
def burst_cluster(app, database_url, role_environ, fake_llm, tmp_path):
    private = services.PrivateRedis(tmp_path)
    environ = {**role_environ, "REDIS_URL": private.url, "PROMPTBEAT_MAX_CONCURRENT_LLM_CALLS": str(CAP)}
    web_app = create_app(Settings.from_environ(environ))
    env = services.role_env(environ)
    workers = [services.start_worker(env, tmp_path / f"worker{n}.log", name=f"burst{n}", concurrency=THREADS,
                                     pool="threads") for n in range(WORKERS)]
    fake_llm.reset()
    yield web_app
    for worker in workers:
        worker.stop(grace=30)
    with web_app.app_context():
        db.engine.dispose()
    private.stop()


# Hundreds of concurrent runs need PostgreSQL, as in docker compose.
def test_500_interval_tasks_created_at_once_all_run_with_calls_capped(burst_cluster, fake_llm):
    web_app = burst_cluster
    client = web_app.test_client()
    headers = {"Authorization": f"Bearer {issue_api_token(web_app, 'burst@example.com')}"}
    for number in range(TASKS):
        created = client.post("/api/tasks", headers=headers, json={
            "name": f"Feed check {number}", "prompt": "[[sleep:0.1]] anything new?",
            "schedule_type": "interval", "interval_seconds": 3600})
        assert created.status_code == 201, created.get_data(as_text=True)

    def finished():
        with web_app.app_context():
            rows = db.session.execute(db.select(Execution.status)).scalars().all()
            db.session.remove()
        return rows if len(rows) == TASKS and all(RunStatus(s).is_final for s in rows) else None

    statuses = wait_for(finished, timeout=240, what=f"{TASKS} finished runs", interval=1)
    # Every task ran once, at once (none waits an interval), and none failed for being queued.
    assert [str(s) for s in statuses] == [str(RunStatus.SUCCESS)] * TASKS
    stats = fake_llm.stats
    assert stats["chat_requests"] == TASKS
    # The calls queued behind the cap instead of flooding the server: never more than CAP at once,
    # and the cap was actually reached, so the workers were not simply too few to exceed it.
    assert stats["peak_in_flight"] == CAP
