"""Overlap guard: at most one run of a task at a time, when its policy is `skip`.

A token-checked Redis lock with expiry keeps concurrent workers apart; since a lock is
not a fence (an expired holder may still be running), a database check for a run of the
same task still marked running stands behind it.
"""
import logging
import secrets
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import bindparam, select

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, utcnow
from promptbeat.redis_client import get_client

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
# Another run of the task still marked running, started within the lock's lifetime.
RUNNING_ELSEWHERE = select(EXECUTIONS.c.id).where(
    EXECUTIONS.c.task_id == bindparam("task_id"),
    EXECUTIONS.c.id != bindparam("run_id"),
    EXECUTIONS.c.status == ExecutionStatus.RUNNING,
    EXECUTIONS.c.started_at > bindparam("horizon"),
).limit(1)


# Release only if the token is still ours: an expired lock may now belong to another run.
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


# Release a lock held for a given run (its token starts with the run's id): for the lost-run sweep.
RELEASE_FOR_RUN = """
local value = redis.call('get', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1])) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lock_ttl(settings, task=None):
    """How long a run may hold the lock: its longest possible run, retries included, plus bookkeeping."""
    max_run = (task.max_run_seconds if task is not None else None) or settings.max_run_seconds
    return int(max_run) + 60


def lock_key(settings, task_id):
    """The Redis key of a task's overlap lock."""
    return f"{settings.redbeat_key_prefix}running:{task_id}"


def release_for_run(settings, task_id, run_id):
    """Free the task's lock if a (dead) run holds it; returns whether it did."""
    client = get_client(settings.redis_url)
    return bool(client.eval(RELEASE_FOR_RUN, 1, lock_key(settings, task_id), f"{run_id}:"))


# Yielded by run_guard when the lock is held for this very run: another delivery of the same message.
HELD_BY_THIS_RUN = "held by this run"


@contextmanager
def run_guard(settings, task, run_id):
    """Yield None when the run may go ahead, HELD_BY_THIS_RUN, or the reason it must be skipped."""
    client = get_client(settings.redis_url)
    key = lock_key(settings, task.id)
    # The run's id leads the token, so the lost-run sweep can free a lock whose holder died.
    token = f"{run_id}:{secrets.token_hex(16)}"
    if not client.set(key, token, nx=True, ex=lock_ttl(settings, task)):
        holder = client.get(key) or ""
        # A duplicate delivery of this run must leave it to the delivery that holds the lock; marking
        # it skipped here could beat that delivery's claim and end the run without a call.
        if holder.startswith(f"{run_id}:"):
            yield HELD_BY_THIS_RUN
        else:
            yield "Skipped: a previous run of this task was still running (overlap policy: skip)."
        return
    try:
        if _running_elsewhere(settings, task, run_id):
            yield "Skipped: a previous run of this task is still marked running (overlap policy: skip)."
        else:
            yield None
    finally:
        client.eval(RELEASE, 1, key, token)


def _running_elsewhere(settings, task, run_id):
    # Runs older than the lock's lifetime are presumed dead (their worker was killed).
    horizon = utcnow() - timedelta(seconds=lock_ttl(settings, task))
    # Not through the Session, which would keep the connection while the run goes on to take another.
    with db.engine.connect() as connection:
        return connection.execute(RUNNING_ELSEWHERE, {"task_id": task.id, "run_id": run_id,
                                                      "horizon": horizon}).first() is not None
