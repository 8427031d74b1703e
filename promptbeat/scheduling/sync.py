"""Schedule sync: write, remove and reconcile tasks' RedBeat entries from the database."""
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from redbeat.schedulers import ensure_conf, get_redis

from promptbeat.scheduling.entries import ENTRY_PREFIX, TaskEntry, build_entry, entry_key
from promptbeat.scheduling.schedules import problem

logger = logging.getLogger(__name__)


def write_entry(celery_app, task, reset_phase):
    """Write a task's entry; with reset_phase its next fire counts from now."""
    last_run_at = datetime.now(timezone.utc) if reset_phase else None
    build_entry(celery_app, task, last_run_at=last_run_at).save(reset_phase=reset_phase)


def remove_entry(celery_app, task_id):
    """Delete a task's entry so beat no longer fires it."""
    ensure_conf(celery_app)
    key = entry_key(celery_app, task_id)
    with get_redis(celery_app).pipeline() as pipe:
        pipe.zrem(celery_app.redbeat_conf.schedule_key, key)
        pipe.delete(key)
        pipe.execute()


def sync_task(celery_app, task, reset_phase):
    """Bring one task's entry in line with its row; log, never raise, on a Redis failure.

    The database is the source of truth: a failed write here is healed by beat's
    periodic reconcile, so it must not fail the user's save.
    """
    try:
        if task.enabled:
            write_entry(celery_app, task, reset_phase)
        else:
            remove_entry(celery_app, task.id)
        return True
    except Exception:
        logger.exception("schedule sync failed for task %s; beat's reconcile will repair it", task.id)
        return False


@dataclass
class ReconcileResult:
    """What a reconcile changed."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    # Enabled tasks whose schedule beat cannot use: logged, left without an entry.
    skipped: int = 0


def reconcile(celery_app, tasks):
    """Make Redis hold exactly one entry per enabled task: add missing, fix changed, drop stale.

    Restored entries take their phase from the task's anchor_at, so a lost entry
    neither fires at once nor waits a whole interval from now. A task whose stored
    schedule is unusable is skipped (and its entry dropped), never failing the pass.
    """
    ensure_conf(celery_app)
    redis = get_redis(celery_app)
    conf = celery_app.redbeat_conf
    result = ReconcileResult()
    entries = {}
    for task in tasks:
        if not task.enabled:
            continue
        reason = problem(task)
        if reason:
            result.skipped += 1
            logger.warning("reconcile: task %s has no entry until its schedule is fixed: %s", task.id, reason)
            continue
        entries[entry_key(celery_app, task.id)] = build_entry(celery_app, task, last_run_at=task.anchor_at)
    keys = list(entries)

    with redis.pipeline() as pipe:
        for key in keys:
            pipe.hget(key, "definition")
            pipe.zscore(conf.schedule_key, key)
        stored = pipe.execute()

    for index, key in enumerate(keys):
        entry = entries[key]
        definition, score = stored[2 * index], stored[2 * index + 1]
        if definition is None:
            entry.save(reset_phase=True)
            result.added += 1
            logger.info("reconcile: restored entry for task %s", entry.args[0])
        elif definition != entry.encoded_definition():
            _rewrite_keeping_phase(celery_app, key, entry)
            result.updated += 1
        elif score is None:
            _rewrite_keeping_phase(celery_app, key, entry)
            result.updated += 1
        else:
            result.unchanged += 1

    task_prefix = conf.key_prefix + ENTRY_PREFIX
    stale = {k for k in redis.zrange(conf.schedule_key, 0, -1) if k.startswith(task_prefix)}
    stale |= set(redis.scan_iter(match=task_prefix + "*", count=1000))
    stale -= set(entries)
    for key in stale:
        with redis.pipeline() as pipe:
            pipe.zrem(conf.schedule_key, key)
            pipe.delete(key)
            pipe.execute()
        result.removed += 1
        logger.info("reconcile: removed stale entry %s", key)
    return result


def _rewrite_keeping_phase(celery_app, key, entry):
    # Beat records each fire in Redis before the worker records it in the database,
    # so the later of the two phases is the true one.
    try:
        fired = TaskEntry.from_key(key, app=celery_app).last_run_at
    except (KeyError, ValueError, TypeError):  # gone, or no longer readable: the database's phase stands
        fired = None
    if fired and (entry.last_run_at is None or fired > entry.last_run_at):
        entry.last_run_at = fired
    entry.save(reset_phase=True)
