"""Overlap guard: at most one run of a task at a time, when its policy is `skip`.

A token-checked Redis lock with expiry keeps concurrent workers apart; since a lock is
not a fence (an expired holder may still be running), a database check for a run of the
same task still marked running stands behind it.
"""
import logging
import secrets
from contextlib import contextmanager
from datetime import timedelta

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, utcnow
from promptbeat.redis_client import get_client

logger = logging.getLogger(__name__)


# Release only if the token is still ours: an expired lock may now belong to another run.
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lock_ttl(settings):
    """How long a run may hold the lock: its longest possible run, retries included, plus bookkeeping."""
    return int(max(settings.max_run_seconds, settings.llm_timeout_seconds * 2)) + 60


@contextmanager
def run_guard(settings, task, execution):
    """Yield None when the run may go ahead, else the reason it must be skipped."""
    client = get_client(settings.redis_url)
    key = f"{settings.redbeat_key_prefix}running:{task.id}"
    token = secrets.token_hex(16)
    if not client.set(key, token, nx=True, ex=lock_ttl(settings)):
        yield "Skipped: a previous run of this task was still running (overlap policy: skip)."
        return
    try:
        if _running_elsewhere(settings, task, execution):
            yield "Skipped: a previous run of this task is still marked running (overlap policy: skip)."
        else:
            yield None
    finally:
        client.eval(RELEASE, 1, key, token)


def _running_elsewhere(settings, task, execution):
    # Runs older than the lock's lifetime are presumed dead (their worker was killed).
    horizon = utcnow() - timedelta(seconds=lock_ttl(settings))
    query = db.select(Execution.id).where(
        Execution.task_id == task.id,
        Execution.id != execution.id,
        Execution.status == ExecutionStatus.RUNNING,
        Execution.started_at > horizon,
    ).limit(1)
    return db.session.execute(query).first() is not None
