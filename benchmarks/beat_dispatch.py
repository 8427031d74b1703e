"""Beat dispatch benchmark: promptbeat's scheduler against stock redbeat.RedBeatScheduler, same run.

Loads N interval entries into a private redis-server, runs each scheduler's tick loop
in this process (publishing real messages to that Redis), and reports dispatch lag
(publish time minus the slot's due time, or minus the run's start if loading the entries
overran it: p50, p99, max), time to dispatch everything that was due, and beat CPU
(process time of the tick loop). Each scheduler stops at its time limit, even mid-tick.

    python benchmarks/beat_dispatch.py --sizes 10000 100000 --seconds 20

Scenarios: `spread` (N ten-minute interval tasks, phases spread evenly; the run covers the
first --seconds, so N * seconds / 600 fires) and `burst` (10,000 due in the same second). The run is bounded: every scheduler gets at most --seconds per scenario.
"""
import argparse
import json
import logging
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery.schedules import schedule as celery_interval  # noqa: E402
from redbeat import RedBeatScheduler  # noqa: E402
from redbeat.decoder import RedBeatJSONEncoder, to_timestamp  # noqa: E402
from redbeat.schedulers import get_redis  # noqa: E402

from beat.scheduler import PromptbeatScheduler  # noqa: E402
from promptbeat.app import create_app  # noqa: E402
from promptbeat.scheduling.entries import TaskEntryEncoder  # noqa: E402
from promptbeat.scheduling.schedules import TaskSchedule  # noqa: E402
from promptbeat.settings import Settings  # noqa: E402
from tests.services import PrivateRedis  # noqa: E402

TASK = "promptbeat.execute_task"
BURST = 10_000
PERIOD = 600  # spread scenario: every entry is a ten-minute interval task


def lag(due, started):
    """Seconds from due (or from the run's start, if loading overran the due time) to now."""
    return time.time() - max(due, started)


class StockBench(RedBeatScheduler):
    """Stock RedBeat, recording each publish's lag behind its due time."""

    lags = None
    started = 0.0
    deadline = float("inf")

    def maybe_due(self, entry, **kwargs):
        if time.time() > self.deadline:
            raise RuntimeError("benchmark time is up")  # RedBeat's tick stops its loop on this
        return super().maybe_due(entry, **kwargs)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        due = entry.last_run_at + entry.schedule.run_every
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        self.lags.append(lag(due.timestamp(), self.started))
        return result


class PromptbeatBench(PromptbeatScheduler):
    """promptbeat's scheduler (reconcile off: there is no database here), recording lags."""

    lags = None
    started = 0.0

    def fire_batch(self, client, keys, now):
        # Messages leave in one push per batch: count each one's lag when its batch is done
        # (pushed and its phases saved), not when it was built.
        super().fire_batch(client, keys, now)
        self.lags.extend(lag(datetime.fromisoformat(slot).timestamp(), self.started)
                         for _, slot, _ in self.unsent_lines)


def load_entries(celery_app, kind, count, interval, first_due, spread):
    """Write count entries straight into Redis; due times from first_due, spread over `spread` seconds."""
    client = get_redis(celery_app)
    conf = celery_app.redbeat_conf
    client.flushdb()
    step = spread / count if spread else 0
    with client.pipeline(transaction=False) as pipe:
        for index in range(count):
            due = first_due + timedelta(seconds=index * step)
            last = due - timedelta(seconds=interval)
            key = f"{conf.key_prefix}task:{index}"
            if kind == "stock":
                schedule, encoder = celery_interval(run_every=timedelta(seconds=interval)), RedBeatJSONEncoder
            else:
                schedule, encoder = TaskSchedule("interval", every=interval), TaskEntryEncoder
            definition = {"name": f"task:{index}", "task": TASK, "args": [index], "kwargs": {"trigger": "scheduled"},
                          "options": {}, "schedule": schedule, "enabled": True}
            pipe.hset(key, mapping={"definition": json.dumps(definition, cls=encoder),
                                    "meta": json.dumps({"last_run_at": last}, cls=RedBeatJSONEncoder)})
            # Each scheduler's own scoring: RedBeat whole seconds, promptbeat the exact time.
            pipe.zadd(conf.schedule_key, {key: to_timestamp(due) if kind == "stock" else due.timestamp()})
            if index % 5000 == 4999:
                pipe.execute()
        pipe.execute()


def run(celery_app, kind, expected, deadline_seconds):
    """Tick until `expected` publishes happened or the time is up; returns lags and CPU seconds."""
    cls = StockBench if kind == "stock" else PromptbeatBench
    scheduler = cls(celery_app, lazy=True)
    scheduler.lock_key = None  # one beat: no lock traffic in either
    scheduler._next_reconcile = float("inf")
    scheduler.lags = []
    scheduler.started = time.time()
    scheduler.deadline = time.time() + deadline_seconds
    started, cpu = time.monotonic(), time.process_time()
    while len(scheduler.lags) < expected and time.monotonic() - started < deadline_seconds:
        time.sleep(max(0.0, min(scheduler.tick(), deadline_seconds - (time.monotonic() - started))))
    return scheduler.lags, time.process_time() - cpu, time.monotonic() - started


def summary(lags, cpu, wall, expected):
    ordered = sorted(lags)
    pick = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else (lambda q: float("nan"))
    return {"dispatched": len(lags), "expected": expected, "p50": pick(0.5), "p99": pick(0.99),
            "max": ordered[-1] if ordered else float("nan"), "cpu_s": cpu, "wall_s": wall,
            "median_check": statistics.median(ordered) if ordered else float("nan")}


def scenario(celery_app, kind, name, size, seconds):
    lead = 30.0 if size >= 100_000 else 8.0  # time to load entries before the first is due (this box is slow)
    now = datetime.now(timezone.utc)
    if name == "burst":
        load_entries(celery_app, kind, BURST, 3600, now + timedelta(seconds=lead), 0)
        expected = BURST
    else:
        # Ten-minute interval tasks with their phases spread evenly over the ten minutes;
        # the run covers the first `seconds` of it.
        load_entries(celery_app, kind, size, PERIOD, now + timedelta(seconds=lead), PERIOD)
        expected = int(size * seconds / PERIOD)
    wait = (now + timedelta(seconds=lead) - datetime.now(timezone.utc)).total_seconds()
    if wait < 0:
        print(f"  note: loading took {lead - wait:.1f} s, longer than the lead; lag counts from the run's start",
              flush=True)
    lags, cpu, wall = run(celery_app, kind, expected, seconds + lead + 30)
    if name == "spread":
        lags = lags[:expected]
    return summary(lags, cpu, wall, expected)


def _stop_on_sigterm():
    # Turn SIGTERM into an exception so the private redis-server is stopped on the way out.
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window of the spread scenario")
    parser.add_argument("--no-burst", action="store_true", help="skip the burst scenario")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _stop_on_sigterm()

    with tempfile.TemporaryDirectory() as workdir:
        private = PrivateRedis(Path(workdir))
        try:
            # Never connected to: the scheduler under test does not read the database.
            settings = Settings(secret_key="bench", database_url="postgresql://127.0.0.1:1/unused",
                                redis_url=private.url, beat_max_loop_interval=1)
            flask_app = create_app(settings)
            celery_app = flask_app.extensions["celery"]
            logging.getLogger().setLevel(logging.WARNING)
            results = []
            cases = [("spread", size) for size in args.sizes] + ([] if args.no_burst else [("burst", BURST)])
            for name, size in cases:
                for kind in ("stock", "promptbeat"):
                    print(f"{name} {size} {kind} ...", flush=True)
                    with flask_app.app_context():
                        result = scenario(celery_app, kind, name, size, args.seconds)
                    results.append((name, size, kind, result))
                    print("  " + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                             for k, v in result.items()}), flush=True)
        finally:
            private.stop()

    print("\n| scenario | entries | scheduler | dispatched | lag p50 | lag p99 | lag max | beat CPU | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, kind, r in results:
        print(f"| {name} | {size:,} | {kind} | {r['dispatched']:,}/{r['expected']:,} | {r['p50']:.3f} s | "
              f"{r['p99']:.3f} s | {r['max']:.3f} s | {r['cpu_s']:.1f} s | {r['wall_s']:.1f} s |")


if __name__ == "__main__":
    main()
