"""Recovery: runs whose worker died or whose broker message was lost are sent again or marked lost; cancel.

The sweep (beat's fixed job, every PROMPTBEAT_SWEEP_SECONDS) looks at two kinds of run:

- `running` runs whose claim belongs to a runner (promptbeat.runs.liveness) silent for
  PROMPTBEAT_RUNNER_TIMEOUT_SECONDS: each goes back to `queued` and its message is sent again,
  while the times it was started stay within its task's max_attempts; else it is marked `lost`.
- `queued` runs older than QUEUED_GRACE_SECONDS with no message marker: every message for a known
  run marks it in the broker's Redis as it is published (the marker is removed when a worker
  receives it), so a run without one lost its message with the Redis that held both (flushed, or
  restarted without persistence). It is sent again, or marked `lost` past its attempts. A long
  backlog keeps its markers and is left alone. A `waiting` run is judged the same way once its
  moment (not_before) is QUEUED_GRACE_SECONDS past: its message is held until then.

Runs still `running` past their deadline plus PROMPTBEAT_LOST_GRACE_SECONDS (a live worker stuck, or
a run claimed before claims were recorded) are marked `lost` as before.
"""
import logging
from datetime import datetime, timedelta, timezone

from celery.signals import before_task_publish
from flask import current_app, has_app_context
from sqlalchemy import and_, bindparam, or_, select

from promptbeat.extensions import db
from promptbeat.models import Execution, Runner, Task, utcnow
from promptbeat.notify import dispatch
from promptbeat.redis_client import get_client
from promptbeat.runs import message_ids, store
from promptbeat.runs.liveness import DATABASE_NOW, runner_of
from promptbeat.runs.overlap import release_for_run
from promptbeat.runs.states import PENDING, RunStatus
from promptbeat.runs.waiting import resume_kwargs

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
TASKS = Task.__table__
RUNNERS = Runner.__table__
EXECUTE_TASK = "promptbeat.execute_task"
# A queued run younger than this may not have its marker yet (the web commits the run, then sends
# its message) or may be between its worker's slot claim and run claim: it is not judged.
QUEUED_GRACE_SECONDS = 10
# A marker outlives any backlog a deployment could work through; one that expires under a longer
# backlog costs a duplicate message, which the run's claim drops.
MARKER_TTL_SECONDS = 24 * 3600
# Queued runs are checked in pages of this many, one round trip to Redis per page.
PAGE = 500


# ---- Reads ---------------------------------------------------------------------------------------

_RUN_COLUMNS = (EXECUTIONS.c.id, EXECUTIONS.c.task_id, EXECUTIONS.c.trigger, EXECUTIONS.c.slot,
                EXECUTIONS.c.recoveries, EXECUTIONS.c.worker, TASKS.c.max_attempts)
RUNNING_CLAIMED = (select(*_RUN_COLUMNS, EXECUTIONS.c.runner).join(TASKS, TASKS.c.id == EXECUTIONS.c.task_id)
                   .where(EXECUTIONS.c.status == RunStatus.RUNNING, EXECUTIONS.c.runner.is_not(None)))
OLD_QUEUED = (select(*_RUN_COLUMNS, EXECUTIONS.c.wait_reason).join(TASKS, TASKS.c.id == EXECUTIONS.c.task_id)
              .where(or_(and_(EXECUTIONS.c.status == RunStatus.QUEUED, EXECUTIONS.c.created_at < bindparam("before")),
                         and_(EXECUTIONS.c.status == RunStatus.WAITING, EXECUTIONS.c.not_before < bindparam("before"))),
                     EXECUTIONS.c.id > bindparam("after"))
              .order_by(EXECUTIONS.c.id).limit(PAGE))
LIVE_RUNNERS = select(RUNNERS.c.id).where(RUNNERS.c.heartbeat_at >= bindparam("since"))
FORGET_DEAD_RUNNERS = RUNNERS.delete().where(RUNNERS.c.heartbeat_at < bindparam("since"))
_REDELIVERED_COLUMNS = (*_RUN_COLUMNS, EXECUTIONS.c.status, EXECUTIONS.c.runner)
RUN_BY_ID = (select(*_REDELIVERED_COLUMNS).join(TASKS, TASKS.c.id == EXECUTIONS.c.task_id)
             .where(EXECUTIONS.c.id == bindparam("run_id")))
RUN_BY_SLOT = (select(*_REDELIVERED_COLUMNS).join(TASKS, TASKS.c.id == EXECUTIONS.c.task_id)
               .where(EXECUTIONS.c.task_id == bindparam("task_id"), EXECUTIONS.c.slot == bindparam("slot")))
RUNNER_ALIVE = select(RUNNERS.c.id).where(RUNNERS.c.id == bindparam("runner_id"),
                                          RUNNERS.c.heartbeat_at >= bindparam("since"))


def sweep(settings, celery_app, now=None):
    """One pass of recovery; returns how many runs were sent again and how many marked lost."""
    now = now or utcnow()
    resent, lost = _recover_dead_runners(settings, celery_app, now)
    queued_resent, queued_lost = _recover_lost_messages(settings, celery_app, now)
    lost += queued_lost + _lose_past_deadline(settings, now)
    return resent + queued_resent, lost


def _starts_allowed(settings, run):
    return run.max_attempts or settings.max_attempts


def _recover_dead_runners(settings, celery_app, now):
    with db.engine.connect() as connection:
        # Heartbeats are judged by the database's clock, which wrote them.
        since = connection.execute(DATABASE_NOW).scalar() - timedelta(seconds=settings.runner_timeout_seconds)
        running = connection.execute(RUNNING_CLAIMED).all()
        live = set(connection.execute(LIVE_RUNNERS, {"since": since}).scalars()) if running else set()
    resent = lost = 0
    for run in running:
        if runner_of(run.runner) in live:
            continue
        outcome = _release_dead_run(settings, run, now)
        if outcome == RunStatus.QUEUED:
            # It was admitted once under its task's overlap policy: a second start continues it.
            _send(celery_app, run, allow_overlap=True)
            resent += 1
        elif outcome == RunStatus.LOST:
            lost += 1
    with db.engine.begin() as connection:
        connection.execute(FORGET_DEAD_RUNNERS, {"since": since})
    return resent, lost


def _release_dead_run(settings, run, now):
    """Put a run whose runner died back in the queue, or mark it lost past its attempts; returns the
    status it was given, or None if it had moved on meanwhile (finished, re-run, cancelled)."""
    starts = run.recoveries + 1
    if starts < _starts_allowed(settings, run):
        if not store.requeue_dead(run.id, run.runner):
            return None
        # The dead run can no longer free its overlap lock; its next delivery would find it held.
        release_for_run(settings, run.task_id, run.id)
        logger.warning("run %s: its worker %s stopped mid-run; starting it again (start %d of %d)",
                       run.id, run.worker, starts + 1, _starts_allowed(settings, run))
        return RunStatus.QUEUED
    message = (f"The worker running this call ({run.worker}) stopped (killed or crashed) and the run was "
               f"started {starts} time(s), its task's maximum; it was not started again.")
    if not store.lose_dead(run.id, run.runner, message, now):
        return None
    release_for_run(settings, run.task_id, run.id)
    dispatch.after_lost(run.id, run.task_id)
    logger.warning("run %s marked lost: its worker %s stopped and it was started %d time(s)",
                   run.id, run.worker, starts)
    return RunStatus.LOST


def _recover_lost_messages(settings, celery_app, now):
    client = get_client(settings.redis_url)
    before = now - timedelta(seconds=QUEUED_GRACE_SECONDS)
    resent = lost = 0
    after = 0
    while True:
        with db.engine.connect() as connection:
            page = connection.execute(OLD_QUEUED, {"before": before, "after": after}).all()
        if not page:
            return resent, lost
        after = page[-1].id
        pipeline = client.pipeline(transaction=False)
        for run in page:
            pipeline.exists(marker_key(settings, run.id))
        for run, marked in zip(page, pipeline.execute()):
            if marked:
                continue
            if run.recoveries + 1 < _starts_allowed(settings, run):
                if not store.count_resend(run.id, run.recoveries):
                    continue
                logger.warning("run %s: its queued message was lost (Redis flushed or restarted); sending it again",
                               run.id)
                _send(celery_app, run, allow_overlap=False, **resume_kwargs(run.wait_reason))
                resent += 1
            else:
                message = ("The run's queued message was lost (Redis flushed or restarted without persistence) "
                           f"and it was sent {run.recoveries + 1} time(s), its task's maximum; it was not sent again.")
                if store.lose_queued(run.id, run.recoveries, message, now):
                    logger.warning("run %s marked lost: its queued message was lost", run.id)
                    dispatch.after_lost(run.id, run.task_id)
                    lost += 1


def _lose_past_deadline(settings, now):
    lost = store.mark_lost(now - timedelta(seconds=settings.lost_grace_seconds), now)
    for run_id, task_id in lost:
        # The run's worker can no longer free its overlap lock; the task's next run would find it held.
        release_for_run(settings, task_id, run_id)
        logger.warning("run %s marked lost: still running past its deadline", run_id)
        dispatch.after_lost(run_id, task_id)
    return len(lost)


def _send(celery_app, run, allow_overlap, **resume):
    """Send a run's message again, under the id and name Flower knows it by; its slot goes with it for the bounds.

    resume says how far a waiting run got (promptbeat.runs.waiting.resume_kwargs).
    """
    kwargs = {"trigger": str(run.trigger), "execution_id": run.id, "allow_overlap": allow_overlap, **resume}
    if run.slot is not None:
        kwargs["slot"] = run.slot.isoformat()
    celery_app.send_task(EXECUTE_TASK, args=[run.task_id], kwargs=kwargs, task_id=message_ids.message_id(run),
                         shadow=message_ids.shadow_name(run.task_id))


# ---- Message markers -----------------------------------------------------------------------------

def marker_key(settings, run_id):
    """The Redis key that says a message for this run is in the broker."""
    return f"{settings.redbeat_key_prefix}queued:{run_id}"


@before_task_publish.connect(weak=False)
def mark_published(sender=None, body=None, **kwargs):
    """Mark every run message (one naming an execution) in the broker's Redis as it is published.

    Every publisher of such a message (the web's Run now and immediate runs, the sweep) does so in an
    application context whose Redis is the broker.
    """
    if sender != EXECUTE_TASK or not has_app_context() or not isinstance(body, (tuple, list)) or len(body) < 2:
        return
    run_id = (body[1] or {}).get("execution_id")
    if run_id is None:
        return
    settings = current_app.config["PROMPTBEAT"]
    get_client(settings.redis_url).set(marker_key(settings, run_id), 1, ex=MARKER_TTL_SECONDS)


def message_received(run_id):
    """A worker took the run's message: from here its run is the runner's, not the broker's."""
    settings = current_app.config["PROMPTBEAT"]
    get_client(settings.redis_url).delete(marker_key(settings, run_id))


# ---- Redelivered messages ------------------------------------------------------------------------

def drop_redelivered(settings, task_id, execution_id, slot):
    """Whether a redelivered message is dropped (with one log line): its run is final or held by a live runner.

    The broker hands a message back when its worker did not acknowledge it: after the visibility
    timeout (the worker was killed, or the run outlasted the timeout), or at once when a prefork
    child died or a soft shutdown gave up on the run. A run still queued is left to this message; a
    run whose runner is dead (its heartbeat stale or removed at its exit) is put back in the queue
    for this message to claim, as the sweep would.
    """
    with db.engine.connect() as connection:
        if execution_id is not None:
            run = connection.execute(RUN_BY_ID, {"run_id": execution_id}).one_or_none()
        elif _moment(slot) is not None:
            run = connection.execute(RUN_BY_SLOT, {"task_id": task_id, "slot": _moment(slot)}).one_or_none()
        else:
            return False
        if run is None or run.status in PENDING:
            return False
        held = run.status != RunStatus.RUNNING or run.runner is None or connection.execute(
            RUNNER_ALIVE, {"runner_id": runner_of(run.runner), "since": connection.execute(DATABASE_NOW).scalar()
                           - timedelta(seconds=settings.runner_timeout_seconds)}).first() is not None
    status = run.status
    if not held:
        status = _release_dead_run(settings, run, utcnow()) or status
        if status == RunStatus.QUEUED:
            return False
    logger.info("run %s is already %s; its redelivered message is dropped", run.id, status)
    return True


def _moment(value):
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
