"""Time from SIGKILL of the process making a run's model call to the run's final state.

Two workers and beat run against the fake server; each round queues a Run-now run whose call
takes --call-seconds, kills the process that claimed it (a prefork pool child, whose worker lives
on, or the whole gevent worker, which is then replaced) as soon as the call is in flight, and
waits for the run to end. With the default settings the run is started again on a live worker
(PROMPTBEAT_RUNNER_TIMEOUT_SECONDS + PROMPTBEAT_SWEEP_SECONDS to notice, then the call again).

    python -m benchmarks.worker_kills --database-url postgresql://postgres@127.0.0.1:5432/pb4 \\
        --redis-url redis://127.0.0.1:6379/9 --kills 20 --pool gevent
"""
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import arguments, environ, fresh_app, machine, percentile
from promptbeat import service
from promptbeat.extensions import db
from promptbeat.fakellm import FakeLLMServer
from promptbeat.runs.liveness import runner_of
from promptbeat.models import Execution, Task
from tests import services

FINAL = ("success", "failed", "lost", "skipped", "cancelled")


def main(argv=None):
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--pool", choices=("prefork", "gevent"), default="gevent")
    parser.add_argument("--call-seconds", type=float, default=2.0)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra PROMPTBEAT_ setting for the roles (default: the shipped defaults)")
    options = parser.parse_args(argv)
    with FakeLLMServer() as fake, tempfile.TemporaryDirectory() as logs:
        env = {**environ(options.database_url, options.redis_url, fake.url),
               **dict(pair.split("=", 1) for pair in options.setting)}
        app, _ = fresh_app(env)
        role_env = services.role_env(env)
        count = iter(range(10**6))

        def worker():
            number = next(count)
            return services.start_worker(role_env, Path(logs) / f"worker{number}.log", name=f"w{number}",
                                         pool=options.pool, concurrency=4)

        workers = [worker(), worker()]
        beat = services.start_beat(role_env, Path(logs) / "beat.log")
        timings, outcomes = [], []
        try:
            for round_number in range(options.kills):
                elapsed, status = one_kill(app, workers, worker, fake, options.call_seconds, round_number)
                timings.append(elapsed)
                outcomes.append(status)
                print(f"kill {round_number + 1:3d}: {status:8s} {elapsed:6.1f} s", flush=True)
        finally:
            beat.stop()
            for role in workers:
                role.stop()
            with app.app_context():
                db.engine.dispose()
    settings = options.setting or "defaults"
    print(f"\n{machine()}; pool {options.pool}, call {options.call_seconds} s, settings {settings}")
    print(f"SIGKILL to final state over {len(timings)} kills: p50 {statistics.median(timings):.1f} s, "
          f"p99 {percentile(timings, 99):.1f} s, max {max(timings):.1f} s; "
          + ", ".join(f"{s} {outcomes.count(s)}" for s in sorted(set(outcomes))))


def one_kill(app, workers, make_worker, fake, call_seconds, round_number):
    """Queue a run, kill the process calling for it, and time how long until the run is final."""
    marker = f"Kill {round_number} {time.time()}"
    with app.app_context():
        task = Task(name=f"Kill {round_number}", prompt=f"{marker} [[sleep:{call_seconds}]]", model="fake-model",
                    schedule_type="interval", interval_seconds=600, enabled=False)
        db.session.add(task)
        db.session.commit()
        run_id = service.run_now(task).id
        db.session.remove()
    services.wait_for(lambda: any(marker in r["messages"][-1]["content"] for r in fake.requests), 60, "the call")
    claim = services.wait_for(lambda: _row(app, run_id)[1], 10, "the claim")
    pid = int(runner_of(claim).split(":")[-2])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    for role in list(workers):
        if role.pid == pid:  # the whole worker: replace it, so two stay alive
            role.process.wait()
            role.log.close()
            workers.remove(role)
            workers.append(make_worker())
    status = services.wait_for(lambda: _row(app, run_id)[0] in FINAL and _row(app, run_id)[0], 600, "a final state")
    return time.monotonic() - killed_at, status


def _row(app, run_id):
    with app.app_context():
        row = db.session.execute(db.select(Execution.status, Execution.runner).filter_by(id=run_id)).one()
        db.session.remove()
        return row


if __name__ == "__main__":
    main()
