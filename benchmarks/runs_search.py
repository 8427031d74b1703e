"""The runs page and GET /api/runs at 1,000,000 runs in PostgreSQL, served by gunicorn: p50/p99 per query shape.

Usage: python -m benchmarks.runs_search [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
Creates the database pb16runs, loads it with generate_series (varied English and Chinese outputs, with
words from very common to very rare), prints the plan PostgreSQL picks for each search, starts gunicorn
on 127.0.0.1, signs in, requests each shape a bounded number of times and prints p50/p99; drops the
database after.
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
from sqlalchemy import create_engine, func, select, text

from benchmarks import common

BENCH_DB = "pb16runs"
# English words drawn with a skew (the first ones in most outputs, the last ones rarely), and Chinese phrases.
WORDS = ("the price market report today update gold weather rain berlin summary news stock rose fell index "
         "dollar euro oil forecast sunny cloudy wind temperature degrees inflation rates bank central policy "
         "meeting earnings quarter revenue profit shares bond yield crypto bitcoin ether release version bug "
         "issue fixed deploy server latency error timeout queue worker cluster node memory disk network "
         "traffic users signups churn growth morning evening weekly daily brief headline election vote "
         "parliament minister trade tariff export import shipping port strike union wage job hiring layoffs "
         "housing mortgage rent city council transit train delay airport flight storm flood heat cold snow "
         "pollen allergy health vaccine hospital research paper model benchmark dataset training inference "
         "token context prompt agent tool api latency throughput cache database index query vacuum replica").split()
CHINESE = ("今天天气很好 明天有雨 金价上涨 股市下跌 美元走强 央行降息 通胀回落 房价平稳 新闻摘要 每日简报 "
           "服务器延迟 数据库索引 用户增长 出口增加 航班延误 暴雨预警 空气质量良 气温下降 油价上涨 科技新闻").split()
# Words placed at fixed rates: one in 10,000 runs, one in 100, and the most common of WORDS.
RARE, MEDIUM, COMMON = "zyzzyva", "quarterly", "the"


def load(url, tasks, runs):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        conn.execute(text("SET maintenance_work_mem = '256MB'"))
        conn.execute(text("""
            INSERT INTO tasks (name, prompt, model, temperature, schedule_type, interval_seconds, timezone,
                               enabled, created_at, updated_at, anchor_at)
            SELECT 'task ' || i, 'prompt ' || i, 'fake-model', 0.7, 'interval', 600, 'UTC', true, now(), now(), now()
            FROM generate_series(1, :tasks) AS i"""), {"tasks": tasks})
        # 2,000 sentences (k - k keeps the aggregate in the inner query) of 6 to 17 skewed words (random()^3 favours the first words), then each output is
        # three of them, picked by hashing the run's number: varied text from a small, fast working set.
        conn.execute(text("""
            CREATE TEMP TABLE sentences AS
            SELECT s AS n, (SELECT string_agg(w[k - k + 1 + floor(array_length(w, 1) * random() ^ 3)::int], ' ')
                            FROM generate_series(1, 6 + s % 12) AS k) AS body
            FROM generate_series(1, 2000) AS s, (SELECT CAST(:words AS text[]) AS w) AS lexicon"""),
                     {"words": WORDS})
        conn.execute(text("CREATE TEMP TABLE cn AS SELECT row_number() OVER () AS n, p FROM unnest(CAST(:cn AS text[])) p"),
                     {"cn": CHINESE})
        # The index is built once after the load, as a restore would.
        conn.execute(text("DROP INDEX ix_executions_output_search"))
        conn.execute(text("""
            INSERT INTO executions (task_id, status, trigger, model, created_at, started_at, finished_at, duration_ms,
                                    output, prompt_tokens, completion_tokens, total_tokens, cost_usd, changed)
            SELECT 1 + (i % :tasks),
                   CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'success' END,
                   CASE WHEN i % 50 = 0 THEN 'manual' ELSE 'scheduled' END,
                   'fake-model',
                   now() - ((:runs - i) * interval '30 seconds'), now() - ((:runs - i) * interval '30 seconds'),
                   now() - ((:runs - i) * interval '30 seconds') + interval '2 seconds', 500 + (i % 1500),
                   CASE WHEN i % 20 = 0 THEN NULL
                        WHEN i % 7 = 0 THEN c1.p || '，' || c2.p || '。' || s1.body
                        ELSE s1.body || '. ' || s2.body || '. ' || s3.body END
                   || CASE WHEN i % 10000 = 1 THEN ' zyzzyva' ELSE '' END
                   || CASE WHEN i % 100 = 3 THEN ' quarterly' ELSE '' END,
                   100, 200, 300, 0.0004,
                   CASE WHEN i % 20 = 0 OR i <= :tasks THEN NULL ELSE i % 3 = 0 END
            FROM generate_series(1, :runs) AS i
            JOIN sentences s1 ON s1.n = 1 + (i * 7) % 2000 JOIN sentences s2 ON s2.n = 1 + (i * 13) % 2000
            JOIN sentences s3 ON s3.n = 1 + (i * 101) % 2000
            JOIN cn c1 ON c1.n = 1 + (i / 7) % 20 JOIN cn c2 ON c2.n = 1 + (i / 140) % 20
            ORDER BY i"""), {"tasks": tasks, "runs": runs})
        conn.execute(text("CREATE INDEX ix_executions_output_search ON executions USING gin (output_search)"))
    # A live database has been vacuumed and analysed by autovacuum long since; measure that steady state.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def plans(url):
    """For each search: the plan PostgreSQL picks for the plain query, and for the two steps the app runs."""
    os.environ["DATABASE_URL"] = url
    from promptbeat.models import Execution
    from promptbeat.runs import search

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))

    def explain(conn, query):
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        lines = [row[0] for row in conn.execute(text("EXPLAIN (ANALYZE, COSTS OFF) " + sql))]
        scans = [re.sub(r" \(actual.*", "", line.strip(" ->")) for line in lines if "Scan" in line and "tasks" not in line]
        timing = next(line for line in lines if line.startswith("Execution Time")).split(": ")[1]
        return f"{timing} ({'; '.join(scans)})"

    with engine.connect() as conn:
        top = conn.scalar(select(func.max(Execution.id))) + 1
        floor = top - search.SEARCH_WINDOW
        for q in (RARE, MEDIUM, COMMON, "天气", "gold -rain", '"price rose"', "zyzzyva quarterly"):
            filters = search.parse_filters({"q": q})
            count = conn.scalar(select(func.count()).select_from(search.runs_query(filters).subquery()))
            alone = explain(conn, search.runs_query(filters).limit(51))
            window = explain(conn, search.runs_query(filters).where(Execution.id >= floor).limit(51))
            index = explain(conn, search.runs_query(filters, floor).order_by(None)
                            .order_by((Execution.id + 0).desc()).limit(51))
            print(f"| {q} | {count:,} | {alone} | {window} | {index} |")
    engine.dispose()


def shapes(tasks, cursor):
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * 100))
    return {
        "page, unfiltered": "/runs",
        f"page, q={RARE} (1 in 10,000)": f"/runs?q={RARE}",
        f"page, q={MEDIUM} (1 in 100)": f"/runs?q={MEDIUM}",
        f"page, q={COMMON} (most runs)": f"/runs?q={COMMON}",
        "page, q=天气 (Chinese)": "/runs?q=天气",
        "page, q=gold -rain": "/runs?q=gold+-rain",
        "page, q=\"price rose\" (phrase)": "/runs?q=%22price+rose%22",
        f"page, q={MEDIUM} + status=success + trigger=manual": f"/runs?q={MEDIUM}&status=success&trigger=manual",
        "page, status=failed + trigger=manual": "/runs?status=failed&trigger=manual",
        "page, changed=yes, task": f"/runs?changed=yes&task_id={tasks // 2}",
        "page, one day 100 days ago": f"/runs?since={day}&until={day}",
        "page, older page (cursor mid-table)": f"/runs?cursor={cursor}",
        "API, unfiltered": "/api/runs",
        f"API, q={RARE}": f"/api/runs?q={RARE}",
        f"API, q={COMMON}": f"/api/runs?q={COMMON}",
        "API, status=success + changed=no": "/api/runs?status=success&changed=no",
        f"API, q={MEDIUM}, CSV": f"/api/runs?q={MEDIUM}&format=csv",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tasks", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--port", type=int, default=5993)
    parser.add_argument("--keep", action="store_true", help="keep the loaded database for another round")
    parser.add_argument("--reuse", action="store_true", help="measure the database a --keep round left")
    args = parser.parse_args()
    with (common.scratch_database(args.admin_url, BENCH_DB, keep=args.keep, reuse=args.reuse) as url,
          tempfile.TemporaryDirectory() as logs):
        env = {**os.environ, "SECRET_KEY": secrets.token_hex(16), "DATABASE_URL": url,
               "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/6")}
        if not args.reuse:
            common.flask_cli(env, "db", "upgrade")
            started = time.monotonic()
            load(url, args.tasks, args.runs)
            print(f"loaded {args.tasks} tasks and {args.runs} runs in {time.monotonic() - started:.1f} s")
        print("| q | matching runs | one query, as PostgreSQL plans it | step 1: newest runs | step 2: index |\n"
              "| --- | --- | --- | --- | --- |")
        plans(url)
        email = f"bench-{secrets.token_hex(4)}@example.com"
        api_token = common.create_admin(env, email, "bench password")
        # The web role exactly as docker compose runs it: its gunicorn config.
        server = common.start_web(env, Path(logs), args.port)
        try:
            measure(args, env, f"http://127.0.0.1:{args.port}", common.signed_in(
                f"http://127.0.0.1:{args.port}", email, "bench password"), api_token)
        finally:
            server.stop()


def measure(args, env, base, session, api_token):
    """p50/p99 of each request shape, with the runs each page holds."""
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {api_token}"
    from promptbeat.runs.search import Cursors

    # A cursor half-way down the table, as a reader paging far back holds.
    middle = Cursors(env["SECRET_KEY"]).dump(args.runs // 2)
    print("| request | p50 ms | p99 ms | runs on the page | status |\n| --- | --- | --- | --- | --- |")
    for label, path in shapes(args.tasks, middle).items():
        client = api if path.startswith("/api/") else session
        for _ in range(5):  # warm up both workers
            client.get(base + path, timeout=30)
        samples, response = [], None
        for _ in range(args.requests):
            began = time.perf_counter()
            response = client.get(base + path, timeout=30)
            samples.append((time.perf_counter() - began) * 1000)
        if path.startswith("/api/") and "format=csv" in path:
            count = response.text.count("\n") - 1
        elif path.startswith("/api/"):
            count = len(response.json()["runs"])
        else:
            count = response.text.count('<tr class="run"')
        print(f"| {label} | {statistics.median(samples):.1f} | {common.percentile(samples, 99):.1f} | {count} | "
              f"{response.status_code} |", flush=True)


if __name__ == "__main__":
    main()
