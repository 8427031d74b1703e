"""Scale-out: runs per second with 1, 2 and 3 worker processes at a fixed LLM latency, and CPU per run.

Each worker is a `celery -A worker worker` node (prefork, -c 2), as one compose `worker` replica.
A batch of manual runs is queued through the API and timed from the first start to the last finish
recorded on the executions. CPU is the worker process trees' user+system time over the batch.
1 worker is the baseline; the ratios are against it, in the same run.

    python -m benchmarks.scaleout --database-url postgresql://... --redis-url redis://127.0.0.1:6379/N
"""
import tempfile
from pathlib import Path

from promptbeat.extensions import db
from promptbeat.fakellm import FakeLLMServer
from promptbeat.models import Execution
from tests import services
from benchmarks import common

LLM_LATENCY = 0.2
RUNS = 120
CONCURRENCY = 2


def main():
    parser = common.arguments(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="pb-bench-scaleout-"))
    results = {}
    with FakeLLMServer(latency=LLM_LATENCY) as llm:
        env = common.environ(args.database_url, args.redis_url, llm.url)
        for workers in (1, 2, 3):
            results[workers] = measure(env, workers, args.runs, logs / str(workers))
    print(f"machine: {common.machine()}")
    print(f"{args.runs} runs per configuration, fake LLM latency {LLM_LATENCY * 1000:.0f} ms, prefork -c {CONCURRENCY}")
    base = results[1][0]
    for workers, (rate, cpu_ms) in results.items():
        ideal = workers * CONCURRENCY / LLM_LATENCY
        print(f"{workers} worker(s): {rate:6.1f} runs/s  (x{rate / base:.2f} vs 1 worker; ceiling {ideal:.0f}/s)"
              f"   CPU per run {cpu_ms:5.1f} ms")


def measure(env, count, runs, logs):
    logs.mkdir(parents=True)
    app, token = common.fresh_app(env)
    role_env = services.role_env(env)
    workers = [services.start_worker(role_env, logs / f"w{n}.log", name=f"bench{n}", concurrency=CONCURRENCY)
               for n in range(count)]
    try:
        cpu_before = sum(common.cpu_seconds(w) for w in workers)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        task_id = client.post("/api/tasks", headers=headers, json={
            "name": "Scale", "prompt": "Scale", "schedule_type": "interval", "interval_seconds": 3600,
            "enabled": False}).get_json()["id"]
        for _ in range(runs):
            client.post(f"/api/tasks/{task_id}/run", headers=headers)
        rows = services.wait_for(lambda: _finished(app, task_id, runs), 300, "the batch", interval=0.2)
        cpu_after = sum(common.cpu_seconds(w) for w in workers)
    finally:
        for worker in workers:
            worker.stop()
        with app.app_context():
            db.engine.dispose()
    span = max(r.finished_at for r in rows) - min(r.started_at for r in rows)
    return runs / span.total_seconds(), (cpu_after - cpu_before) / runs * 1000


def _finished(app, task_id, runs):
    with app.app_context():
        rows = db.session.execute(
            db.select(Execution).filter_by(task_id=task_id).where(Execution.finished_at.is_not(None))
        ).scalars().all()
        db.session.expunge_all()
        db.session.remove()
    return rows if len(rows) >= runs else None


if __name__ == "__main__":
    main()
