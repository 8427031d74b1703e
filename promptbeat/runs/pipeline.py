"""Running a task once: find or create its run, check its bounds and overlap, claim it, call, record, deliver."""
import logging
import time
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from promptbeat.batches import collect as batches
from promptbeat.extensions import db
from promptbeat.models import OverlapPolicy, Task, Trigger, utcnow
from promptbeat.notify import dispatch
from promptbeat.outputs import answers
from promptbeat.runs import budget, lifecycle, liveness, overlap, preparation, store, waiting
from promptbeat.runs.attempts import call_with_retries
from promptbeat.runs.overlap import HELD_BY_THIS_RUN, run_guard
from promptbeat.runs.plan import Start
from promptbeat.runs.states import PENDING, RunStatus
from promptbeat.scheduling.sync import sync_task

logger = logging.getLogger(__name__)
TASKS = Task.__table__
# The run's task as a plain row (its attributes are the Task's columns); nothing in a run changes it.
READ_TASK = select(TASKS).where(TASKS.c.id == bindparam("task_id"))


def run(request, settings, sleep=time.sleep):
    """Run a task as request (a RunRequest) says; returns the run's id, or None if there is none.

    Safe to call twice for the same run: a scheduled fire carries its slot, and only the first
    dispatch of a slot creates a run; only the call that moves a run from queued to running does
    the work. A run left running by a dead worker is put back in the queue by promptbeat.runs.recovery,
    never taken over here; a redelivered slot message may still claim its slot's run left queued.

    This is the worker's hot path, kept to a few statements: hundreds of runs a second share one
    process's CPU. A run's row is only read back when something went unusual.
    """
    task = _read_task(request.task_id)
    if task is None:
        logger.info("task %s no longer exists; nothing to run", request.task_id)
        return None
    if request.execution_id:
        # Whether it still exists, and may still run, is settled by the claim.
        run_id = request.execution_id
    elif request.slot is not None:
        # A scheduled slot of an enabled task moves its anchor as it is claimed.
        run_id, claimed = store.claim_slot(task, request.slot, request.trigger, catch_up=request.catch_up,
                                           advance_anchor=request.trigger == Trigger.SCHEDULED and task.enabled)
        if run_id is None or (not claimed and not request.redelivered):
            return run_id
    else:
        run_id = store.create(task.id, request.trigger, task.model)

    if not task.enabled and request.trigger != Trigger.MANUAL:
        return _skip(run_id, "The task was disabled before this run started.")
    # Every run that counts towards max_runs keeps to the bounds: an immediate run too (saving an
    # interval task with max_runs lowered below its count must not run it once more).
    if lifecycle.counts(request.trigger):
        reason = lifecycle.out_of_bounds(task, request.slot)
        if reason:
            return _skip(run_id, reason)
    # A batch-mode run is collected for the provider's Batch API instead of called (promptbeat.batches);
    # its runs wait hours for their answers, so neither spreading nor the overlap guard applies to them.
    if task.batch:
        return batches.collect(request, settings, task, run_id)
    # A scheduled run's jitter and its share of a spread burst (or the rest of a wait), as a waiting run.
    delay = waiting.start_delay(request, task, settings)
    if delay is not None and waiting.hold(request, run_id, task.id, *delay, sleep, settings):
        return run_id

    if task.overlap_policy == OverlapPolicy.ALLOW or request.allow_overlap:
        return _claim_and_run(request, settings, task, run_id, sleep)
    with run_guard(settings, task, run_id) as reason:
        if reason == HELD_BY_THIS_RUN:
            logger.info("run %s is being run by another delivery of its message; leaving it", run_id)
            return run_id
        if reason:
            return _skip(run_id, reason)
        return _claim_and_run(request, settings, task, run_id, sleep, exclusive=True)


def _skip(run_id, reason):
    if store.skip(run_id, reason):
        logger.info("run %s skipped: %s", run_id, reason)
    return run_id


def _claim_and_run(request, settings, task, run_id, sleep, exclusive=False):
    started = utcnow()
    plan = preparation.call_plan(task, settings, started)
    # No connection is held during the model call: hundreds of runs share a small pool. remove(), not
    # close(): close() would first build a Session for the many runs that never used one.
    db.session.remove()
    if waiting.take_place(request, plan, task, settings, run_id, sleep):
        return run_id
    claim = liveness.claiming(run_id)
    start = Start(model=task.model, started_at=started, worker=request.worker, prompt=plan.prompt,
                  deadline_at=started + timedelta(seconds=plan.max_run_seconds), runner=claim)
    guard = ({"guard_task_id": task.id, "guard_horizon": overlap.horizon(settings, task, started)}
             if exclusive else None)
    hold = budget.reserve(task, plan, settings, started)
    if isinstance(hold, budget.Stop):
        return stop_for_budget(run_id, task, hold.message)
    if not store.claim(run_id, start, guard=guard):
        budget.release(hold)
        return _unclaimed(run_id, exclusive)
    with budget.released_unless_finished(hold):
        if preparation.templated(task):
            preparation.render(plan, task, run_id, settings, started)

        result = call_with_retries(plan, run_id, settings, sleep)
        # Parsed, validated and compared before the finish, so that one UPDATE records all of it.
        answers.settle(task, run_id, result)
    # Spend is priced for the model that answered: a fallback's price, not the task's model's.
    settle = budget.settlement(hold, settings.prices, result.answered_model or plan.model, result)
    written, counters = store.finish(run_id, {"finished_at": utcnow(), **result.columns()}, result.failed,
                                     counted=lifecycle.counts(request.trigger), claim=claim, also=settle)
    if not written:
        logger.info("run %s vanished, was cancelled, marked lost or started again elsewhere during the call; "
                    "result discarded", run_id)
        return run_id
    logger.info("task %s run %s (%s) %s in %d ms after %d attempt(s)", task.id, run_id, request.trigger,
                result.status, result.duration_ms, len(result.attempts))
    auto_paused = counters is not None and stop_if_last(task.id, run_id, request.trigger, counters, result.error)
    # Queued, not sent: deliveries run in their own Celery tasks once the run is final (promptbeat.notify).
    dispatch.after_run(run_id, task, auto_paused)
    return run_id


def _unclaimed(run_id, exclusive):
    """Say why a run could not be claimed: gone, finished, another run of its task running, or another delivery."""
    status = store.status_of(run_id)
    if status is None:
        logger.info("run %s no longer exists; nothing to run", run_id)
    elif status.is_final:
        logger.info("run %s already finished (%s); not running it again", run_id, status)
    elif exclusive and status in PENDING:
        return _skip(run_id, overlap.STILL_MARKED_RUNNING)
    else:
        logger.info("run %s is already running elsewhere (a duplicate message); leaving it", run_id)
    return run_id


def stop_for_budget(run_id, task, message):
    """Skip a run a budget stops before its call, pause its task if it asks for that, and tell its channels."""
    db.session.remove()
    if not store.skip(run_id, message, error_class=budget.ERROR_CLASS):
        return run_id
    logger.warning("task %s run %s skipped: %s", task.id, run_id, message)
    auto_paused = task.pause_on_budget and task.enabled and _stop_task(
        task.id, run_id, {"enabled": False, "pause_note": f"Paused automatically: {message}"})
    dispatch.after_run(run_id, task, auto_paused)
    return run_id


def stop_if_last(task_id, run_id, trigger, counters, error):
    """Pause or complete the task if the run just counted was its last (promptbeat.runs.lifecycle.stop_after_run);
    returns whether it paused the task automatically."""
    stop = lifecycle.stop_after_run(counters, trigger, error)
    return bool(stop) and _stop_task(task_id, run_id, stop)


def _stop_task(task_id, run_id, stop):
    """Set the stop's columns on the task and re-sync it to beat; returns whether it paused the task."""
    try:
        task = db.session.get(Task, task_id)
        if task is not None:
            for column, value in stop.items():
                setattr(task, column, value)
            db.session.commit()
            sync_task(current_app.extensions["celery"], task, reset_phase=False)
            return "pause_note" in stop
    except (StaleDataError, OperationalError):
        db.session.rollback()
        logger.info("task %s changed or was deleted while run %s ran; it was not stopped", task_id, run_id)
    return False


def _read_task(task_id):
    with db.engine.connect() as connection:
        return connection.execute(READ_TASK, {"task_id": task_id}).one_or_none()
