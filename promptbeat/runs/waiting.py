"""Runs that must wait for their moment (jitter, a spread burst, a first-run delay, a rate limit's place in line).

A wait longer than a moment is not spent in a worker: the run is recorded `waiting` with its reason
and moment, and its message is sent again with a countdown to that moment; the message says how far
the run got, so it is neither delayed nor reserved twice.
"""
import logging
import random
from datetime import timedelta

from flask import current_app

from promptbeat.models import Trigger, utcnow
from promptbeat.ratelimits import limiter
from promptbeat.ratelimits.estimate import estimated_tokens
from promptbeat.ratelimits.limiter import Admission
from promptbeat.ratelimits.limits import WaitReason
from promptbeat.runs import message_ids, store

logger = logging.getLogger(__name__)
EXECUTE_TASK = "promptbeat.execute_task"
# Waits up to this long are slept in the worker: a message's round trip through the broker costs about as much.
SHORT_WAIT_SECONDS = 0.5
# Reasons whose run already holds its place under its connection's rate limit.
RESERVED_REASONS = frozenset({WaitReason.RATE_LIMIT, WaitReason.PROVIDER})
# Knuth's multiplicative hash spreads consecutive task ids evenly over the spread.
_GOLDEN = 2654435761


def spread_offset(task_id, spread_seconds):
    """A task's stable offset in seconds within the spread (0 when spreading is off)."""
    if not spread_seconds:
        return 0.0
    return (task_id * _GOLDEN % 2**32) / 2**32 * spread_seconds


def start_delay(request, task, settings, now=None):
    """(seconds from now, reason) a run waits before it goes on; None for no wait.

    A message that came back before its run's moment waits for the rest; a scheduled slot's run
    waits after its slot for its jitter and spread, once (its message says when it already waited).
    """
    now = now or utcnow()
    if request.not_before is not None:
        left = (request.not_before - now).total_seconds()
        return (left, WaitReason(request.wait_reason or WaitReason.RATE_LIMIT)) if left > 0 else None
    if request.delayed or request.slot is None or request.trigger != Trigger.SCHEDULED:
        return None
    spread = spread_offset(task.id, settings.spread_bursts_seconds)
    jitter = random.uniform(0, task.jitter_seconds) if task.jitter_seconds else 0.0
    if not (spread or jitter):
        return None
    wait = (request.slot + timedelta(seconds=spread + jitter) - now).total_seconds()
    return wait, WaitReason.JITTER if jitter else WaitReason.SPREAD


def hold(request, run_id, task_id, wait, reason, sleep, settings, reserved=False):
    """Wait `wait` seconds for reason: a moment in the worker, longer as a waiting run; returns whether it
    was handed back to the broker (the caller then stops: the message comes back at the run's moment)."""
    if wait <= SHORT_WAIT_SECONDS:
        if wait > 0:
            sleep(wait)
        return False
    not_before = utcnow() + timedelta(seconds=wait)
    if not store.wait(run_id, reason, not_before):
        logger.info("run %s moved on (cancelled or gone) before it could wait; leaving it", run_id)
        return True
    kwargs = {"trigger": str(request.trigger), "execution_id": run_id, "catch_up": request.catch_up,
              "allow_overlap": request.allow_overlap, "delayed": True, "reserved": reserved or request.reserved,
              **moment_kwargs(not_before, reason)}
    if request.slot is not None:
        kwargs["slot"] = request.slot.isoformat()
    message_id = (message_ids.id_for_slot(task_id, request.slot) if request.slot is not None
                  else message_ids.id_for_run(run_id))
    try:
        current_app.extensions["celery"].send_task(
            EXECUTE_TASK, args=[task_id], kwargs=kwargs, countdown=countdown(settings, wait), task_id=message_id,
            shadow=message_ids.shadow_name(task_id))
    except Exception as exc:
        logger.exception("could not send waiting run %s back to the broker", run_id)
        store.fail_unqueued(run_id, f"Could not queue the run: the broker is unreachable ({type(exc).__name__}).")
        return True
    logger.info("run %s waits %.1f s (%s)", run_id, wait, reason)
    return True


def countdown(settings, wait):
    """A waiting message's countdown: its wait, but less than the broker's visibility timeout, past which
    Redis would hand the held message out again; a message back early waits again for the rest."""
    return min(wait, settings.visibility_timeout / 2)


def moment_kwargs(not_before, reason):
    """The message arguments that carry a waiting run's moment and reason."""
    return {"not_before": not_before.isoformat(), "wait_reason": str(reason)}


def resume_kwargs(wait_reason):
    """The message arguments that send a waiting run (wait_reason: its reason, None for a queued one) on its way."""
    if not wait_reason:
        return {}
    return {"delayed": True, "reserved": WaitReason(wait_reason) in RESERVED_REASONS}


def take_place(request, plan, task, settings, run_id, sleep):
    """Take the run's place in line under its connection's rate limits; returns whether it went back to wait.

    Called before the claim, once per run: a run whose message comes back at its reserved moment
    goes without reserving again, its first attempt checking only that the provider has not since
    asked calls to hold (promptbeat.ratelimits.limiter.Admission).
    """
    limits = plan.endpoint.limits if plan.endpoint is not None else None
    if limits is None or plan.error:
        return False
    plan.estimated_tokens = estimated_tokens(plan.prompt or task.prompt, plan.system_prompt, plan.max_tokens,
                                             settings.estimated_completion_tokens)
    if request.reserved:
        plan.admission = Admission.CHECK
        return False
    plan.admission = Admission.RESERVED
    reservation = limiter.reserve(settings, limits, plan.estimated_tokens)
    return hold(request, run_id, task.id, reservation.wait_seconds, reservation.reason, sleep, settings,
                reserved=True)
