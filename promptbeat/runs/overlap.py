"""Overlap guard: at most one run of a task at a time, when its policy is `skip`.

A token-checked Redis lock with expiry keeps concurrent workers apart; since a lock is
not a fence (an expired holder may still be running), a database check for a run of the
same task still marked running stands behind it, as a condition of the run's claim.
"""
import logging
import secrets
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import bindparam, exists

from promptbeat.models import Execution
from promptbeat.redis_client import get_client
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
_OTHER_RUNS = EXECUTIONS.alias("other_runs")
# For a claim's WHERE: no other run of the task is marked running, among those started after the
# horizon (older ones are presumed dead: their worker was killed). Parameters: guard_task_id,
# guard_horizon (an UPDATE of executions may not bind a name of its columns).
NO_OTHER_RUN_RUNNING = ~exists().where(
    _OTHER_RUNS.c.task_id == bindparam("guard_task_id"),
    _OTHER_RUNS.c.id != EXECUTIONS.c.id,
    _OTHER_RUNS.c.status == RunStatus.RUNNING,
    _OTHER_RUNS.c.started_at > bindparam("guard_horizon"),
)
STILL_MARKED_RUNNING = "Skipped: a previous run of this task is still marked running (overlap policy: skip)."


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


def horizon(settings, task, now):
    """Runs of the task started before this are not counted as running (NO_OTHER_RUN_RUNNING)."""
    return now - timedelta(seconds=lock_ttl(settings, task))


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
    """Yield None when the run may go on to its claim, HELD_BY_THIS_RUN, or the reason it must be skipped."""
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
        yield None
    finally:
        client.eval(RELEASE, 1, key, token)

