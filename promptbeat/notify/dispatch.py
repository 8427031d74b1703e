"""Deliveries around a run: queue them once the run is final, try one attempt, schedule the next with backoff.

Nothing here runs inside a run: the run's worker only decides which channels to notify and queues one
Celery message per channel (promptbeat.deliver), after the run's row is final. A delivery that fails
is retried by a new message with a countdown, PROMPTBEAT_DELIVERY_ATTEMPTS times at most.
"""
import logging
import uuid

from flask import current_app
from sqlalchemy import bindparam, select

from promptbeat.extensions import db
from promptbeat.llm import crypto
from promptbeat.models import Channel, ChannelKind, DeliveryStatus, Execution, Task, task_channels
from promptbeat.notify import email, ledger, rules, webhook
from promptbeat.notify.channels import secret_of
from promptbeat.notify.outcome import Outcome
from promptbeat.runs.budget import ERROR_CLASS as BUDGET_EXCEEDED
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
EXECUTIONS = Execution.__table__
TASK_CHANNELS = task_channels
CHANNELS_OF_TASK = select(TASK_CHANNELS.c.channel_id).where(TASK_CHANNELS.c.task_id == bindparam("task_id"))
READ_RUN = select(EXECUTIONS.c.status, EXECUTIONS.c.changed, EXECUTIONS.c.error_class).where(EXECUTIONS.c.id == bindparam("run_id"))
# The task's previous finished run, for the recovery rule.
PREVIOUS_FINISHED = (select(EXECUTIONS.c.status)
                     .where(EXECUTIONS.c.task_id == bindparam("task_id"), EXECUTIONS.c.id < bindparam("run_id"),
                            EXECUTIONS.c.status.in_([RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.LOST]))
                     .order_by(EXECUTIONS.c.id.desc()).limit(1))
READ_TASK = select(Task.__table__).where(Task.__table__.c.id == bindparam("task_id"))
RESEND = "resend"
DELIVER = "promptbeat.deliver"


def after_run(run_id, task, auto_paused):
    """Queue a delivery to each of the task's channels whose rules the finished run meets; never raises."""
    if not task.notify_on:
        return []
    try:
        with db.engine.connect() as connection:
            channel_ids = connection.execute(CHANNELS_OF_TASK, {"task_id": task.id}).scalars().all()
            if not channel_ids:
                return []
            run = connection.execute(READ_RUN, {"run_id": run_id}).one_or_none()
            previous = connection.execute(PREVIOUS_FINISHED, {"task_id": task.id, "run_id": run_id}).scalar()
        if run is None:
            return []
        facts = rules.RunFacts(RunStatus(run.status), run.changed, RunStatus(previous) if previous else None,
                               auto_paused, budget_stopped=run.error_class == BUDGET_EXCEEDED)
        reasons = rules.reasons(task.notify_on, facts)
        if reasons:
            queue(run_id, channel_ids, [str(reason) for reason in reasons])
        return reasons
    except Exception:  # a notification must never fail the run
        logger.exception("notifications of run %s could not be queued", run_id)
        return []


def after_lost(run_id, task_id):
    """Queue the notifications of a run recovery marked lost (a failure, to the rules); never raises."""
    try:
        with db.engine.connect() as connection:
            task = connection.execute(READ_TASK, {"task_id": task_id}).one_or_none()
    except Exception:
        logger.exception("notifications of lost run %s could not be queued", run_id)
        return []
    return after_run(run_id, task, auto_paused=False) if task is not None else []


def resend(execution):
    """Queue a delivery of a finished run to each of its task's channels now, whatever the rules; returns the ids."""
    channel_ids = [channel.id for channel in execution.task.channels]
    queue(execution.id, channel_ids, [RESEND])
    return channel_ids


def queue(run_id, channel_ids, reasons):
    """One message per channel, each with its own Standard Webhooks message id kept across its retries."""
    for channel_id in channel_ids:
        send_attempt(run_id, channel_id, "msg_" + uuid.uuid4().hex, reasons)


def send_attempt(run_id, channel_id, message_id, reasons, number=1, countdown=None):
    """Queue the message of one attempt (promptbeat.notify.tasks.deliver_task), after countdown seconds."""
    current_app.extensions["celery"].send_task(DELIVER, (run_id, channel_id, message_id, reasons, number),
                                               countdown=countdown)


def attempt(run_id, channel_id, message_id, reasons, number, settings):
    """Make one delivery attempt and record it; returns (Outcome, seconds until the next attempt or None)."""
    execution = db.session.get(Execution, run_id)
    channel = db.session.get(Channel, channel_id)
    if execution is None or channel is None:
        logger.info("delivery of run %s to channel %s dropped: the run or the channel was deleted", run_id, channel_id)
        return None, None
    task = db.session.get(Task, execution.task_id)
    target = ledger.Target(channel.id, channel.name, channel.kind)
    try:
        outcome = _send(channel, task, execution, message_id, reasons, settings, number)
    except Exception as exc:  # recorded, never raised: the ledger is where a failure shows
        logger.exception("delivery of run %s to channel %s failed", run_id, channel_id)
        outcome = Outcome.failure(type(exc).__name__)
    finally:
        db.session.remove()
    again = not outcome.delivered and outcome.retryable and number < settings.delivery_attempts
    status = (DeliveryStatus.DELIVERED if outcome.delivered
              else DeliveryStatus.RETRYING if again else DeliveryStatus.FAILED)
    ledger.record(run_id, target, number, status, outcome)
    if status == DeliveryStatus.FAILED:
        logger.warning("delivery of run %s to channel %s failed after %d attempt(s): %s", run_id, channel_id, number,
                       outcome.detail)
    return outcome, (settings.delivery_retry_seconds * 2 ** (number - 1) if again else None)


def _send(channel, task, execution, message_id, reasons, settings, number):
    if channel.kind == ChannelKind.EMAIL:
        return email.deliver(settings, channel.recipients or [], task, execution, reasons)
    try:
        secret = secret_of(channel, settings)
    except crypto.CryptoError as exc:
        return Outcome.failure(exc, retryable=False)
    body = webhook.body_text(webhook.payload(channel.kind, task, execution, reasons))
    return webhook.send(channel.url, body, secret, message_id, settings, number)
