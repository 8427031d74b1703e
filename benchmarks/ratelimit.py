"""A burst of runs due in the same minute against a connection's requests-per-minute limit, limiter on and off.

--tasks tasks (default 2,000) have one slot each, all at the same moment, sent as beat sends a burst;
their connection allows --rpm requests a minute (default 1,200), and the fake server enforces that
limit itself over 10-second windows, as providers enforce a minute's limit in shorter periods (a
request beyond rpm / 6 in any 10 s is answered 429 with retry-after-ms), and records when each
request arrives. Two worker processes run them. With the limiter on, the connection carries
rpm_limit; off, it has none and the runs meet the provider's 429s with their retries. Reported per
scenario: the most requests in any 10-second window (the limit allows rpm / 6), 429s, retries, lost
or unfinished runs, the time from the slot to the last run's end against the time the limit implies
(plus 10%), and the workers' CPU per run. The limiter's own cost per run is measured apart, on a
private redis-server where nothing else runs: the commands Redis processed and this process's CPU
for --tasks acquisitions as a run makes them (reserve its place, admit it just before the call, then
settle with the answer's usage: the settle costs a round trip only when it changes something, as a
tokens-per-minute correction does).

    python -m benchmarks.ratelimit --database-url postgresql://postgres@127.0.0.1:5432/pb_bench \\
        --redis-url redis://127.0.0.1:6379/9

Not part of the test suite. A smoke run: --tasks 40 --rpm 600.
"""
import dataclasses
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis

from benchmarks.common import arguments, cpu_seconds, environ, fresh_app, machine
from promptbeat.extensions import db
from promptbeat.fakellm import FakeLLMServer
from promptbeat.models import Connection, Execution, Task
from promptbeat.ratelimits import limiter
from promptbeat.ratelimits.limits import RateLimits
from promptbeat.runs import message_ids
from promptbeat.runs.states import FINAL, RunStatus
from promptbeat.settings import Settings
from tests import services

WINDOW_SECONDS = 10
EXECUTE_TASK = "promptbeat.execute_task"


def main(argv=None):
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--pool", choices=("gevent", "threads", "prefork"), default="gevent")
    parser.add_argument("--concurrency", type=int, default=100, help="calls per worker process")
    parser.add_argument("--scenario", choices=("both", "on", "off"), default="both")
    options = parser.parse_args(argv)
    print(f"{machine()}; {options.tasks} runs due at once, {options.rpm} rpm, 2 workers "
          f"({options.pool} x {options.concurrency})", flush=True)
    for limiter_on in {"both": (True, False), "on": (True,), "off": (False,)}[options.scenario]:
        report(limiter_on, options, scenario(limiter_on, options))
    limiter_cost(options)


def limiter_cost(options):
    """Round trips and CPU of the limiter alone per run, on a private redis-server."""
    with tempfile.TemporaryDirectory() as workdir:
        private = services.PrivateRedis(Path(workdir))
        try:
            env = environ(options.database_url, private.url, "http://127.0.0.1:9/v1")
            settings = dataclasses.replace(Settings.from_environ(env), redis_url=private.url)
            limits = RateLimits("connection:1", rpm=10**6, tpm=10**9)
            client = redis.Redis.from_url(private.url)
            before = round_trips(client)
            began = time.process_time()
            for _ in range(options.tasks):
                reservation = limiter.reserve(settings, limits, 120)
                with limiter.Call(settings, limits, 120, limiter.Admission.RESERVED) as call:
                    call.answered(100, {})
                assert reservation.wait_seconds < 1
            cpu = time.process_time() - began
            commands = round_trips(client) - before
            client.close()
        finally:
            private.stop()
    print(f"\nlimiter alone: {commands / options.tasks:.2f} Redis round trips and "
          f"{cpu / options.tasks * 1e6:.0f} us of CPU per run (reserve, admit, settle)", flush=True)


def round_trips(client):
    """The script calls Redis has answered: the limiter's only commands (those its scripts run count apart)."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval", "script|load"))


def scenario(limiter_on, options):
    implied = options.tasks / options.rpm * 60
    with (FakeLLMServer(rpm_limit=options.rpm, rate_window=WINDOW_SECONDS) as fake,
          tempfile.TemporaryDirectory() as logs):
        env = environ(options.database_url, options.redis_url, fake.url)
        # The burst takes minutes by design; a run must not give up before its place comes.
        env.update({"PROMPTBEAT_MAX_RUN_SECONDS": str(int(implied * 2 + 600)),
                    "PROMPTBEAT_VISIBILITY_TIMEOUT": str(int(implied * 2 + 1200)),
                    "PROMPTBEAT_MAX_ATTEMPTS": "10", "PROMPTBEAT_MAX_CONCURRENT_LLM_CALLS": "0"})
        app, _ = fresh_app(env)
        task_ids = make_tasks(app, fake.url, options, limiter_on)
        role_env = services.role_env(env)
        workers = [services.start_worker(role_env, Path(logs) / f"worker{n}.log", name=f"rl{n}", pool=options.pool,
                                         concurrency=options.concurrency) for n in range(2)]
        try:
            cpu_before = sum(cpu_seconds(w) for w in workers)
            slot = send_burst(app, task_ids)
            ended = wait_until_final(app, options.tasks, timeout=implied * 3 + 300)
            cpu = sum(cpu_seconds(w) for w in workers) - cpu_before
        finally:
            for worker in workers:
                worker.stop(grace=60)
        with app.app_context():
            rows = db.session.execute(db.select(Execution.status, Execution.attempts)).all()
            db.engine.dispose()
        return {"arrivals": fake.arrivals, "rows": rows, "slot": slot.timestamp(), "ended": ended,
                "implied": implied, "cpu": cpu}


def make_tasks(app, url, options, limiter_on):
    """The tasks (a yearly cron: beat is not running, the burst below stands for its fire) and their connection."""
    with app.app_context():
        connection = Connection(name="provider", base_url=url, rpm_limit=options.rpm if limiter_on else None)
        db.session.add(connection)
        db.session.flush()
        tasks = [Task(name=f"Burst {n}", prompt=f"Anything new? {n}", model="fake-model", schedule_type="crontab",
                      cron="0 0 1 1 *", connection_id=connection.id, max_tokens=20) for n in range(options.tasks)]
        db.session.add_all(tasks)
        db.session.commit()
        ids = [task.id for task in tasks]
        db.session.remove()
    return ids


def send_burst(app, task_ids):
    """One message per task for the same slot, a moment from now, as beat sends a burst."""
    slot = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    celery = app.extensions["celery"]
    with app.app_context():
        for task_id in task_ids:
            celery.send_task(EXECUTE_TASK, args=[task_id], kwargs={"trigger": "scheduled", "slot": slot.isoformat()},
                             task_id=message_ids.id_for_slot(task_id, slot), shadow=message_ids.shadow_name(task_id))
    return slot


def wait_until_final(app, count, timeout):
    """The time the last run ended (or the timeout passed, leaving the rest unfinished)."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        with app.app_context():
            done = db.session.execute(db.select(db.func.count(Execution.id)).where(
                Execution.status.in_([str(s) for s in FINAL]))).scalar()
            db.session.remove()
        if done >= count:
            break
        time.sleep(1)
    return time.time()


def most_in_window(times, window):
    times = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window:
            start += 1
        most = max(most, end - start + 1)
    return most


def report(limiter_on, options, result):
    rows, arrivals = result["rows"], result["arrivals"]
    runs = len(rows)
    statuses = {status: sum(1 for row in rows if row.status == status) for status in {row.status for row in rows}}
    retries = sum(max(0, len(row.attempts or []) - 1) for row in rows)
    unfinished = sum(1 for row in rows if not RunStatus(row.status).is_final)
    total = result["ended"] - result["slot"]
    allowed = options.rpm * WINDOW_SECONDS / 60
    print(f"\nlimiter {'on' if limiter_on else 'off'}:")
    most = most_in_window([a["time"] for a in arrivals], WINDOW_SECONDS)
    print(f"  requests {len(arrivals)}, most in any {WINDOW_SECONDS} s window {most} (the limit allows {allowed:g}), "
          f"429s {sum(1 for a in arrivals if a['status'] == 429)}, retries {retries}")
    print(f"  runs {runs}: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
          + f"; lost {statuses.get(RunStatus.LOST, 0)}, unfinished {unfinished}")
    print(f"  slot to last run's end {total:.1f} s; the limit implies {result['implied']:.1f} s "
          f"(+10%: {result['implied'] * 1.1:.1f} s)")
    print(f"  worker CPU {result['cpu'] / max(1, runs) * 1000:.2f} ms per run", flush=True)


if __name__ == "__main__":
    main()
