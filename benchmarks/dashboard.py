"""Dashboard, task page and live poll latency at scale in PostgreSQL, served by gunicorn.

Usage: python -m benchmarks.dashboard [--scales 10000:1000000,100000:10000000] [--admin-url postgresql://...]
For each scale (tasks:runs) in turn it creates the database pb6bench, loads it with generate_series,
starts gunicorn on 127.0.0.1, signs in, requests each page shape a bounded number of times, and drops
the database; then it prints one table with every scale's p50 and p99 side by side against the target.
"""
import argparse
import os
import re
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from benchmarks import common

BENCH_DB = "pb6bench"
EMAIL, PASSWORD = "bench@example.com", "bench password"
TARGET_P99_MS = 50
# Each page shape, by label: a path, or how to find the live poll's address on a page.
PAGES = {
    "dashboard page 1 (name sort)": "/",
    "dashboard page 200": "/?page=200",
    "dashboard search 'task 12'": "/?q=task+12",
    "dashboard enabled + cron, newest": "/?status=enabled&type=crontab&sort=newest",
    "dashboard live poll (unchanged, 204)": ("/", r'id="task-table" hx-get="([^"]+)"'),
    "task page": "/tasks/5000",
    "task page live poll (unchanged, 204)": ("/tasks/5000", r'id="runs" hx-get="([^"]+)"'),
}


def load(url, tasks, runs):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO tasks (name, prompt, model, temperature, schedule_type, interval_seconds, cron, timezone,
                               enabled, created_at, updated_at, anchor_at)
            SELECT 'task ' || i, 'prompt ' || i, 'fake-model', 0.7,
                   CASE WHEN i % 3 = 0 THEN 'crontab' ELSE 'interval' END,
                   CASE WHEN i % 3 = 0 THEN NULL ELSE 600 END,
                   CASE WHEN i % 3 = 0 THEN '*/15 * * * *' ELSE NULL END,
                   'UTC', i % 2 = 0, now(), now(), now()
            FROM generate_series(1, :tasks) AS i"""), {"tasks": tasks})
        conn.execute(text("""
            INSERT INTO executions (task_id, status, trigger, model, created_at, started_at, finished_at, duration_ms,
                                    output, prompt_tokens, completion_tokens, total_tokens)
            SELECT 1 + (i % :tasks), CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'success' END, 'scheduled', 'fake-model',
                   now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval, now(),
                   500 + (i % 1000), 'output ' || i, 10, 20, 30
            FROM generate_series(1, :runs) AS i"""), {"tasks": tasks, "runs": runs})
    # A live database has been vacuumed by autovacuum long since; a freshly loaded one has not, and
    # its index-only scans (the task count) would visit the table. Measure the steady state.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def cpu_per_page(env, paths, count):
    """CPU milliseconds the app spends per page, in process: less sensitive than wall time to a busy machine."""
    os.environ.update(env)
    from web import create_app

    client = create_app().test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    client.post("/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token})
    results = {}
    for path in paths:
        client.get(path)
        samples = []
        for _ in range(count):
            began = time.thread_time()
            assert client.get(path).status_code == 200
            samples.append((time.thread_time() - began) * 1000)
        results[path] = statistics.median(samples)
    return results


def scales(text):
    """"10000:1000000,100000:10000000" as [(10000, 1000000), (100000, 10000000)]."""
    pairs = [part.split(":") for part in text.split(",") if part]
    return [(int(tasks), int(runs)) for tasks, runs in pairs]


def measure(args, tasks, runs):
    """Load one scale into a fresh database, serve it with gunicorn and time every page shape.

    Returns {label: (p50, p99, status, app CPU ms or None)}, the baseline included.
    """
    results = {}
    with common.scratch_database(args.admin_url, BENCH_DB) as url, tempfile.TemporaryDirectory() as logs:
        env = {**os.environ, "SECRET_KEY": secrets.token_hex(16), "DATABASE_URL": url,
               "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/6")}
        common.flask_cli(env, "db", "upgrade")
        started = time.monotonic()
        load(url, tasks, runs)
        print(f"loaded {tasks} tasks and {runs} runs in {time.monotonic() - started:.1f} s", flush=True)
        api_token = common.create_admin(env, EMAIL, PASSWORD)
        cpu = cpu_per_page(env, [p for p in PAGES.values() if isinstance(p, str)], 50)
        # The web role exactly as docker compose runs it: its gunicorn config (2 processes x 4 threads).
        server = common.start_web(env, Path(logs), args.port)
        try:
            base = f"http://127.0.0.1:{args.port}"
            session = common.signed_in(base, EMAIL, PASSWORD)
            # The viewer's zone is set, as the sign-in sets it, so no page carries the detection form.
            page = session.get(base + "/account").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            session.post(base + "/account/timezone", data={"csrf_token": token, "timezone": "Europe/Berlin"},
                         timeout=10)
            for label, shape in PAGES.items():
                headers = {}
                path = shape
                if isinstance(shape, tuple):
                    page_path, pattern = shape
                    path = re.search(pattern, session.get(base + page_path).text).group(1).replace("&amp;", "&")
                    headers = {"HX-Request": "true"}
                for _ in range(10):  # warm up both workers
                    session.get(base + path, headers=headers, timeout=10)
                samples, status = [], None
                for _ in range(args.requests):
                    began = time.perf_counter()
                    response = session.get(base + path, headers=headers, timeout=10)
                    samples.append((time.perf_counter() - began) * 1000)
                    status = response.status_code
                results[label] = (statistics.median(samples), common.percentile(samples, 99), status, cpu.get(path))
            # Baseline: the first version's dashboard shape, every task with its last run in one response.
            samples = []
            for _ in range(args.baseline_requests):
                began = time.perf_counter()
                response = requests.get(base + "/api/tasks", headers={"Authorization": f"Bearer {api_token}"},
                                        timeout=600)
                samples.append((time.perf_counter() - began) * 1000)
            results["baseline: every task with its last run (GET /api/tasks, unpaginated)"] = (
                statistics.median(samples), common.percentile(samples, 99), response.status_code, None)
        finally:
            server.stop()
    return results


def report(measured):
    """One Markdown table: a row per page shape, p50 / p99 (and app CPU) per scale, and whether p99 met the target."""
    heads = [f"{tasks:,} tasks / {runs:,} runs" for tasks, runs in measured]
    print(f"\nTarget: p99 <= {TARGET_P99_MS} ms for every page shape (the baseline is for comparison only).\n")
    print("| page | " + " | ".join(f"{head}: p50 / p99 ms (status, app CPU ms)" for head in heads) + " | target |")
    print("| --- |" + " --- |" * (len(heads) + 1))
    labels = next(iter(measured.values())).keys()
    for label in labels:
        cells, met = [], True
        for results in measured.values():
            p50, p99, status, cpu = results[label]
            cells.append(f"{p50:.1f} / **{p99:.1f}** ({status}{f', {cpu:.1f}' if cpu is not None else ''})")
            met = met and p99 <= TARGET_P99_MS
        verdict = "—" if label.startswith("baseline") else ("met" if met else "**missed**")
        print(f"| {label} | " + " | ".join(cells) + f" | {verdict} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--scales", type=scales, default="10000:1000000",
                        help="tasks:runs pairs, comma-separated, measured in turn in the same run")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--baseline-requests", type=int, default=10)
    parser.add_argument("--port", type=int, default=5991)
    args = parser.parse_args()
    measured = {(tasks, runs): measure(args, tasks, runs) for tasks, runs in args.scales}
    report(measured)


if __name__ == "__main__":
    main()
