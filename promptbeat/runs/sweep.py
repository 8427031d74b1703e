"""The lost-run sweep: runs whose worker died mid-call are marked lost and their overlap locks freed."""
import logging
from datetime import timedelta

from promptbeat.models import utcnow
from promptbeat.runs import store
from promptbeat.runs.overlap import release_for_run

logger = logging.getLogger(__name__)


def sweep_lost_runs(settings, now=None):
    """Mark runs still running past their deadline (plus grace) as lost, and free their overlap locks.

    A run ends by its deadline (PROMPTBEAT_MAX_RUN_SECONDS or the task's own) even when it retries,
    so one still running after it had its worker killed mid-call. Returns how many were marked.
    """
    now = now or utcnow()
    lost = store.mark_lost(now - timedelta(seconds=settings.lost_grace_seconds), now)
    for run_id, task_id in lost:
        # The dead run can no longer release its own lock; without this the task would skip
        # every run until the lock expired.
        release_for_run(settings, task_id, run_id)
    if lost:
        logger.warning("marked %d run(s) lost: their worker stopped mid-run", len(lost))
    return len(lost)
