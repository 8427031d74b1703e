"""Worker liveness: a heartbeat per worker process, its claims on runs, and abandoning runs taken from it.

Every process that runs tasks (a prefork child; the one process of a gevent, threads or solo worker)
is a *runner*: it keeps a row in `runners` whose heartbeat_at it refreshes every
PROMPTBEAT_HEARTBEAT_SECONDS, from a thread of its own (a greenlet under gevent). A run it claims
records the claim "<runner id>/<number>"; promptbeat.runs.recovery starts again the runs of a runner
silent for PROMPTBEAT_RUNNER_TIMEOUT_SECONDS. Only the holder of a run's claim can finish it.

The same thread polls, once a second, the runs in flight in this process: one cancelled, marked lost
or claimed by another runner is abandoned: its greenlet (gevent) or main thread (prefork, solo) gets
RunCancelled, which ends the model call (the HTTP connection is closed as the exception unwinds);
nothing more is written to it. A thread of the threads pool is not interrupted: its result is not written.
"""
import itertools
import logging
import os
import secrets
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from promptbeat.extensions import db
from promptbeat.models import Execution, Runner, UTCDateTime
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
RUNNERS = Runner.__table__
# How often the runs in flight are checked for a cancel: the bound on how long a cancelled call goes on.
WATCH_SECONDS = 1.0
# Under prefork (and solo) a run's call is in the process's main thread; this signal interrupts it there.
CANCEL_SIGNAL = signal.SIGUSR2
# The statuses in which a run in flight is abandoned; a run that just finished (success, failed,
# skipped) is left alone, or its webhook delivery would be cut short.
ABANDON = frozenset({RunStatus.CANCELLED, RunStatus.LOST})


class database_utcnow(FunctionElement):
    """The database server's clock in UTC: heartbeats are written and judged by one clock, whatever the hosts' skew."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(database_utcnow, "postgresql")
def _postgresql_utcnow(element, compiler, **kwargs):
    return "timezone('UTC', clock_timestamp())"


HEARTBEAT = update(RUNNERS).where(RUNNERS.c.id == bindparam("runner_id")).values(heartbeat_at=database_utcnow())
REGISTER = insert(RUNNERS).values(id=bindparam("runner_id"), hostname=bindparam("hostname"), pid=bindparam("pid"),
                                  started_at=database_utcnow(), heartbeat_at=database_utcnow())
DATABASE_NOW = select(database_utcnow())
FORGET = RUNNERS.delete().where(RUNNERS.c.id == bindparam("runner_id"))
IN_FLIGHT_ROWS = select(EXECUTIONS.c.id, EXECUTIONS.c.status, EXECUTIONS.c.runner).where(
    EXECUTIONS.c.id.in_(bindparam("run_ids", expanding=True)))


class RunCancelled(BaseException):
    """Raised in a run's thread or greenlet when it must stop: it was cancelled or taken from this process.

    A BaseException, like GreenletExit: the `except Exception` of the SDK and the run path must not swallow it.
    """


def runner_of(claim):
    """The runner id of a claim "<runner id>/<number>"."""
    return claim.rpartition("/")[0]


@dataclass(eq=False)
class InFlight:
    """A task being run by this process: the thread or greenlet running it and, once known, its run and claim."""

    target: object
    run_id: int | None = None
    claim: str | None = None
    # False once the task has left the run path: nothing may interrupt it any more.
    active: bool = True
    # Set by the watcher before it signals the main thread; the signal handler raises only then.
    interrupt_requested: bool = False
    interrupted: bool = False


@dataclass(eq=False)
class Process:
    """This process as a runner: its id, its claims and the tasks it has in flight."""

    runner_id: str
    hostname: str
    pid: int
    green: bool
    claims: itertools.count = field(default_factory=lambda: itertools.count(1))
    in_flight: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    flask_app: object = None
    stopping: bool = False


_process = None


def _gevent_patched():
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


def _target(green):
    if green:
        import gevent
        return gevent.getcurrent()
    return threading.get_ident()


def _target_key(target):
    return target if isinstance(target, int) else id(target)


def current_process():
    """This process as a runner (not yet registered: see start), made again after a fork."""
    global _process
    if _process is None or _process.pid != os.getpid():
        hostname = socket.gethostname()
        pid = os.getpid()
        _process = Process(runner_id=f"{hostname}:{pid}:{secrets.token_hex(4)}", hostname=hostname, pid=pid,
                           green=_gevent_patched())
    return _process


def start(flask_app, hostname=None):
    """Register this process as a runner and start its heartbeat and watcher, once per process."""
    process = current_process()
    if process.flask_app is not None:
        return process
    with process.lock:
        if process.flask_app is not None:
            return process
        if hostname:
            # The Celery node name says which worker a process belongs to; the pid and a random part keep it unique.
            process.hostname = hostname[:200]
            process.runner_id = f"{process.hostname}:{process.pid}:{secrets.token_hex(4)}"
        with flask_app.app_context(), db.engine.begin() as connection:
            connection.execute(REGISTER, {"runner_id": process.runner_id, "hostname": process.hostname,
                                          "pid": process.pid})
        if not process.green and threading.current_thread() is threading.main_thread():
            signal.signal(CANCEL_SIGNAL, _on_cancel_signal)
        process.flask_app = flask_app
        threading.Thread(target=_watch, args=(process,), name="promptbeat-liveness", daemon=True).start()
    logger.info("runner %s started: heartbeat every %s s", process.runner_id,
                flask_app.config["PROMPTBEAT"].heartbeat_seconds)
    return process


def stop():
    """Forget this process as a runner on a clean exit, so no sweep waits for its heartbeat to age."""
    process = _process
    if process is None or process.flask_app is None or process.pid != os.getpid():
        return
    process.stopping = True
    try:
        with process.flask_app.app_context(), db.engine.begin() as connection:
            connection.execute(FORGET, {"runner_id": process.runner_id})
    except Exception:
        logger.warning("runner %s could not remove its heartbeat; the sweep will", process.runner_id, exc_info=True)


@contextmanager
def in_flight(flask_app, hostname=None):
    """Run a task as part of this runner: its run can be abandoned while inside; RunCancelled ends here."""
    process = start(flask_app, hostname)
    entry = InFlight(target=_target(process.green))
    key = _target_key(entry.target)
    with process.lock:
        process.in_flight[key] = entry
    try:
        yield entry
    except RunCancelled:
        logger.info("run %s was cancelled or taken over; its call was abandoned and nothing more is written",
                    entry.run_id)
    finally:
        entry.active = False
        with process.lock:
            process.in_flight.pop(key, None)


def claiming(run_id):
    """The claim this process is about to make on run_id ("<runner id>/<number>"), noted for the watcher."""
    process = current_process()
    claim = f"{process.runner_id}/{next(process.claims)}"
    entry = process.in_flight.get(_target_key(_target(process.green)))
    if entry is not None:
        entry.run_id, entry.claim = run_id, claim
    return claim


def _watch(process):
    """Heartbeat every heartbeat_seconds; abandon runs in flight that were cancelled or taken from us."""
    settings = process.flask_app.config["PROMPTBEAT"]
    next_beat = time.monotonic() + settings.heartbeat_seconds
    while True:
        time.sleep(WATCH_SECONDS)
        if process.stopping:
            return
        try:
            with process.flask_app.app_context():
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + settings.heartbeat_seconds
                    _heartbeat(process)
                _abandon_taken_runs(process)
        except Exception:
            logger.warning("runner %s: heartbeat or cancel check failed; trying again", process.runner_id,
                           exc_info=True)


def _heartbeat(process):
    with db.engine.begin() as connection:
        if not connection.execute(HEARTBEAT, {"runner_id": process.runner_id}).rowcount:
            # The sweep removed this runner, thinking it dead (a long stall): it comes back as it was.
            logger.warning("runner %s was thought dead; registering again", process.runner_id)
            connection.execute(REGISTER, {"runner_id": process.runner_id, "hostname": process.hostname,
                                          "pid": process.pid})


def _abandon_taken_runs(process):
    with process.lock:
        claimed = [entry for entry in process.in_flight.values() if entry.claim and entry.active]
    if not claimed:
        return
    with db.engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(IN_FLIGHT_ROWS, {"run_ids": [e.run_id for e in claimed]})}
    for entry in claimed:
        row = rows.get(entry.run_id)
        taken = row is None or row.status in ABANDON or (
            row.status == RunStatus.RUNNING and row.runner != entry.claim)
        if taken and not (entry.interrupted or entry.interrupt_requested):
            logger.info("run %s is %s; abandoning its call", entry.run_id,
                        "gone" if row is None else row.status if row.status in ABANDON else "claimed elsewhere")
            _interrupt(process, entry)


def _interrupt(process, entry):
    """Raise RunCancelled in the entry's greenlet or thread, only while it is still on the run path."""
    if process.green:
        import gevent
        # From the hub, when the run's greenlet is switched out: checked and thrown with nothing in between.
        gevent.get_hub().loop.run_callback(_throw_into_greenlet, entry)
    elif entry.target == threading.main_thread().ident:
        entry.interrupt_requested = True
        signal.pthread_kill(entry.target, CANCEL_SIGNAL)
    else:
        # A thread of the threads pool cannot be interrupted in its socket read: its call runs to its end,
        # and its result is not written (every write after the claim is conditional on it).
        entry.interrupted = True


def _throw_into_greenlet(entry):
    if entry.active and not entry.interrupted and not entry.target.dead:
        entry.interrupted = True
        entry.target.throw(RunCancelled(entry.run_id))


def _on_cancel_signal(signum, frame):
    """In the main thread: raise RunCancelled if its run is still on the run path and was asked to stop."""
    process = _process
    entry = process.in_flight.get(threading.get_ident()) if process is not None else None
    if entry is not None and entry.active and entry.interrupt_requested and not entry.interrupted:
        entry.interrupted = True
        raise RunCancelled(entry.run_id)
