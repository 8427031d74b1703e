"""Worker pools under load: completions per second, added latency, RSS and database connections.

Runs the real execute path (SDK call, PostgreSQL writes) and a plain Celery task making the same
call, under several pools, one worker process at a time, against the fake server answering in 1 s.
"real" runs are Run-now runs of one task that allows overlapping runs: the shortest path. "scheduled"
runs are what beat sends: one due slot for each of as many tasks, under the default overlap policy
(skip), so each run also claims its slot, advances its task's anchor, takes and releases the task's
overlap lock and updates its run counters.

    python -m benchmarks.worker_pools --database-url postgresql://postgres@127.0.0.1:5432/pb4

--repeat N runs the chosen scenarios in N rounds and adds a table of their medians: the shared
machines these ran on changed speed within the hour, so one run says little.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import redis
from celery import Celery
from sqlalchemy import create_engine, text

from tests import services

ROOT = Path(__file__).resolve().parent.parent
LATENCY = 1.0
# (kind, pool, concurrency): the baseline pools the issue names, then the real path.
SCENARIOS = [
    ("plain", "prefork", 8), ("plain", "threads", 100), ("plain", "gevent", 300),
    ("real", "prefork", 8), ("real", "threads", 100), ("real", "threads", 300),
    ("real", "gevent", 100), ("real", "gevent", 300), ("scheduled", "gevent", 300),
]


def start_fake():
    process = subprocess.Popen([sys.executable, "-m", "promptbeat.fakellm", "--port", "0", "--latency", str(LATENCY)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    url = process.stdout.readline().strip().split("=", 1)[1]
    return process, url


def migrate(env):
    from flask_migrate import upgrade

    from promptbeat.app import create_app
    from promptbeat.extensions import db
    from promptbeat.settings import Settings

    app = create_app(Settings.from_environ(env))
    with app.app_context():
        with db.engine.begin() as connection:
            db.metadata.drop_all(connection)
            connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade()
        db.engine.dispose()


def tree_rss(pid):
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0


def tree_cpu_seconds(pid):
    try:
        process = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])
    except psutil.NoSuchProcess:
        return None


class Sampler(threading.Thread):
    """Samples the worker's RSS, CPU time and the database's connection count until stopped.

    Keeps the maxima of RSS and connections, and (time, CPU seconds) pairs for the CPU per run.
    """

    def __init__(self, pid, engine):
        super().__init__(daemon=True)
        self.pid, self.engine, self.stop_event = pid, engine, threading.Event()
        self.rss = self.connections = 0
        self.cpu = []

    def cpu_at(self, moment):
        """The worker's CPU seconds at the sample nearest to moment."""
        return min(self.cpu, key=lambda sample: abs(sample[0] - moment))[1]

    def run(self):
        with self.engine.connect() as connection:
            while not self.stop_event.is_set():
                self.rss = max(self.rss, tree_rss(self.pid))
                cpu = tree_cpu_seconds(self.pid)
                if cpu is not None:
                    self.cpu.append((time.time(), cpu))
                count = connection.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND application_name NOT LIKE 'bench%'")).scalar()
                self.connections = max(self.connections, count)
                connection.rollback()  # pg_stat_activity is a per-transaction snapshot
                self.stop_event.wait(0.1)


def run_scenario(kind, pool, concurrency, runs, env, engine, workdir):
    redis_url = env["REDIS_URL"]
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # a private redis-server: nothing else lives here
    app_module = "benchmarks.plain_app" if kind == "plain" else "worker"
    queue = "plain" if kind == "plain" else "promptbeat"
    sender = Celery("sender", broker=redis_url)
    # The queue is full before the worker starts, so what is measured is the worker, not the sender.
    if kind == "plain":
        for number in range(runs):
            sender.send_task("bench.plain_call", args=[number], queue="plain")
    elif kind == "scheduled":
        slot = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        for task_id in _queue_scheduled_tasks(engine, runs):
            sender.send_task("promptbeat.execute_task", args=[task_id],
                             kwargs={"trigger": "scheduled", "slot": slot, "catch_up": False}, queue="promptbeat")
    else:
        for task_id, execution_id in _queue_runs(engine, runs):
            sender.send_task("promptbeat.execute_task", args=[task_id],
                             kwargs={"trigger": "manual", "execution_id": execution_id}, queue="promptbeat")
    sender.close()
    worker = services.Role(["celery", "-A", app_module, "worker", "-P", pool, "-c", str(concurrency), "-Q", queue,
                            "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                           env, workdir / f"{kind}-{pool}-{concurrency}.log")
    sampler = Sampler(worker.pid, engine)
    sampler.start()
    begun = time.time()
    try:
        if kind == "plain":
            services.wait_for(lambda: client.llen("bench:done") >= runs, 300, "plain runs", interval=0.2)
            spans = [json.loads(item)[1:] for item in client.lrange("bench:done", 0, -1)]
        else:
            services.wait_for(lambda: _finished(engine) >= runs, 300, "real runs", interval=0.2)
            spans = _spans(engine)
    finally:
        sampler.stop_event.set()
        sampler.join()
        worker.stop(grace=30)
        client.close()
    first, last = min(s[0] for s in spans), max(s[1] for s in spans)
    added = sorted((end - start - LATENCY) * 1000 for start, end in spans)
    rate = len(spans) / (last - first)
    # Sustained: completions between the 20% and 90% marks, past the start-up and the last wave's tail.
    ends = sorted(end for _, end in spans)
    low, high = ends[len(ends) // 5], ends[len(ends) * 9 // 10]
    steady_runs = len(ends) * 9 // 10 - len(ends) // 5
    steady = steady_runs / (high - low)
    cpu_ms = (sampler.cpu_at(high) - sampler.cpu_at(low)) * 1000 / steady_runs
    ceiling = min(concurrency, runs) / LATENCY
    return {"kind": kind, "pool": pool, "concurrency": concurrency, "runs": len(spans),
            "per_second": round(rate, 1), "steady_per_second": round(steady, 1), "ceiling": ceiling,
            "of_ceiling": round(rate / ceiling, 3), "steady_of_ceiling": round(steady / ceiling, 3),
            "cpu_ms_per_run": round(cpu_ms, 2),
            "added_p50_ms": round(statistics.median(added), 1), "added_p99_ms": round(added[int(len(added) * 0.99) - 1], 1),
            "rss_mb": round(sampler.rss / 2**20), "db_connections": sampler.connections,
            "wall_s": round(time.time() - begun, 1)}


def _queue_runs(engine, runs):
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM executions"))
        connection.execute(text("DELETE FROM tasks"))
        task_id = connection.execute(text(
            "INSERT INTO tasks (name, prompt, model, temperature, schedule_type, interval_seconds, timezone, enabled, "
            "created_at, updated_at, overlap_policy) VALUES ('bench', 'Benchmark prompt', 'fake-model', "
            "0.7, 'interval', 600, 'UTC', true, now(), now(), 'allow') RETURNING id")).scalar()
        # overlap_policy allow: hundreds of runs of one task in flight at once is the point here.
        ids = connection.execute(text(
            "INSERT INTO executions (task_id, status, trigger, created_at) "
            "SELECT :task, 'queued', 'manual', now() FROM generate_series(1, :n) RETURNING id"),
            {"task": task_id, "n": runs}).scalars().all()
    return [(task_id, execution_id) for execution_id in ids]


def _queue_scheduled_tasks(engine, count):
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM executions"))
        connection.execute(text("DELETE FROM tasks"))
        return connection.execute(text(
            "INSERT INTO tasks (name, prompt, model, temperature, schedule_type, interval_seconds, timezone, enabled, "
            "created_at, updated_at, overlap_policy) SELECT 'bench ' || n, 'Benchmark prompt', "
            "'fake-model', 0.7, 'interval', 600, 'UTC', true, now(), now(), 'skip' "
            "FROM generate_series(1, :n) AS n RETURNING id"), {"n": count}).scalars().all()


def _finished(engine):
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM executions WHERE finished_at IS NOT NULL")).scalar()


def _spans(engine):
    with engine.connect() as connection:
        failed = connection.execute(text("SELECT count(*) FROM executions WHERE status <> 'success'")).scalar()
        if failed:
            raise RuntimeError(f"{failed} benchmark runs did not succeed")
        rows = connection.execute(text(
            "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at) FROM executions")).all()
    return [(float(a), float(b)) for a, b in rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database this benchmark may wipe")
    parser.add_argument("--runs-per-slot", type=int, default=10, help="runs = concurrency x this (at least 200)")
    parser.add_argument("--only", help="run only scenarios whose 'kind-pool-concurrency' contains this")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the scenarios this many rounds, in turn, and add a table of their medians")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    private_redis = services.PrivateRedis(workdir)
    fake, fake_url = start_fake()
    env = services.role_env({
        "SECRET_KEY": "bench", "DATABASE_URL": args.database_url, "REDIS_URL": private_redis.url,
        "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": fake_url, "PROMPTBEAT_DEFAULT_MODEL": "fake-model",
        "PROMPTBEAT_LLM_TIMEOUT": "60",
        # The global LLM-call cap (default 16) would make the cap the thing measured; keep it on, above
        # any concurrency here, so its Redis semaphore is still paid per run.
        "PROMPTBEAT_MAX_CONCURRENT_LLM_CALLS": "10000",
    })
    env["PGAPPNAME"] = "worker"
    results = []
    try:
        migrate(env)
        engine = create_engine(args.database_url.replace("postgresql://", "postgresql+psycopg2://"),
                               connect_args={"application_name": "bench"})
        # Rounds, not repeats of one scenario in a row: the host's speed drifts, and each round
        # measures every scenario at nearly the same moment.
        for _ in range(args.repeat):
            for kind, pool, concurrency in SCENARIOS:
                if args.only and args.only not in f"{kind}-{pool}-{concurrency}":
                    continue
                runs = max(200, concurrency * args.runs_per_slot)
                result = run_scenario(kind, pool, concurrency, runs, env, engine, workdir)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        fake.terminate()
        fake.wait()
        private_redis.stop()
    print_table(results)
    if args.repeat > 1:
        print(f"\nMedians of {args.repeat} rounds:")
        print_table(medians(results))
    return 0


def medians(results):
    """One row per scenario: the median of each figure over its rounds (RSS and connections: the largest)."""
    rows = {}
    for result in results:
        rows.setdefault((result["kind"], result["pool"], result["concurrency"]), []).append(result)
    merged = []
    for rounds in rows.values():
        row = dict(rounds[0])
        for name, value in row.items():
            if isinstance(value, float):
                row[name] = round(statistics.median(r[name] for r in rounds), 3 if "of_ceiling" in name else 2)
        row["rss_mb"] = max(r["rss_mb"] for r in rounds)
        row["db_connections"] = max(r["db_connections"] for r in rounds)
        merged.append(row)
    return merged


def print_table(results):
    print("\n| path | pool | -c | runs | per s | sustained per s | ceiling | sustained of ceiling | worker CPU ms/run "
          "| added p50 ms | added p99 ms | RSS MB | DB conns |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['kind']} | {r['pool']} | {r['concurrency']} | {r['runs']} | {r['per_second']} | "
              f"{r['steady_per_second']} | {r['ceiling']:g} | {r['steady_of_ceiling']:.0%} | {r['cpu_ms_per_run']} | "
              f"{r['added_p50_ms']} | {r['added_p99_ms']} | {r['rss_mb']} | {r['db_connections']} |")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
