"""Immediate-run latency: from the POST /api/tasks response to the worker starting, and finishing, the run.

Web under gunicorn (as in docker compose), one prefork worker, the fake LLM server at zero latency.
Creates are sequential (each waits for its run), so this is latency, not throughput. The baseline in
the same run is a GET /healthz round trip through the same gunicorn (one database and one Redis call).

    python -m benchmarks.latency --database-url postgresql://... --redis-url redis://127.0.0.1:6379/N
"""
import tempfile
import time
from pathlib import Path

from promptbeat.extensions import db
from promptbeat.fakellm import FakeLLMServer
from promptbeat.models import Execution
from tests import services
from benchmarks import common

CREATES = 200


def main():
    args = common.arguments(__doc__.splitlines()[0]).parse_args()
    logs = Path(tempfile.mkdtemp(prefix="pb-bench-latency-"))
    with FakeLLMServer(latency=0.0) as llm:
        env = common.environ(args.database_url, args.redis_url, llm.url)
        app, token = common.fresh_app(env)
        port = services.free_port()
        web = common.start_web(env, logs, port)
        worker = services.start_worker(services.role_env(env), logs / "worker.log", name="bench", concurrency=2)
        try:
            report(app, token, port)
        finally:
            worker.stop()
            web.stop()


def report(app, token, port):
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    body = {"name": "Latency", "prompt": "Ping", "schedule_type": "interval", "interval_seconds": 3600}
    for _ in range(10):  # warm both gunicorn processes and the worker's pool
        services.http("POST", f"{base}/api/tasks", json_body=body, headers=headers)
    time.sleep(1)

    healthz = []
    for _ in range(CREATES):
        begun = time.perf_counter()
        services.http("GET", f"{base}/healthz")
        healthz.append((time.perf_counter() - begun) * 1000)

    to_start, to_finish = [], []
    for _ in range(CREATES):
        response = services.http("POST", f"{base}/api/tasks", json_body=body, headers=headers)
        answered = time.time()
        task_id = response.json()["id"]
        run = services.wait_for(lambda: _finished_run(app, task_id), 30, f"the run of task {task_id}", interval=0.002)
        to_start.append((run.started_at.timestamp() - answered) * 1000)
        to_finish.append((run.finished_at.timestamp() - answered) * 1000)

    print(f"machine: {common.machine()}")
    print(f"{CREATES} sequential creates, fake LLM at zero latency, gunicorn 2x4, worker prefork -c 2")
    print(f"baseline GET /healthz round trip:     {common.summary(healthz)}")
    print(f"POST response -> worker starts run:   {common.summary(to_start)}")
    print(f"POST response -> run finished:        {common.summary(to_finish)}")


def _finished_run(app, task_id):
    with app.app_context():
        run = db.session.execute(db.select(Execution).filter_by(task_id=task_id)).scalar()
        db.session.expunge_all()
        db.session.remove()
    return run if run is not None and run.finished_at is not None else None


if __name__ == "__main__":
    main()
