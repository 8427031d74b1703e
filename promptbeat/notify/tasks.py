"""The Celery task that makes delivery attempts, outside any run."""
from celery import shared_task
from flask import current_app

from promptbeat.notify import dispatch


@shared_task(name=dispatch.DELIVER, ignore_result=True)
def deliver_task(run_id, channel_id, message_id, reasons, number=1):
    """One attempt to deliver a finished run to a channel; a failure worth retrying sends the next with a countdown."""
    outcome, wait = dispatch.attempt(run_id, channel_id, message_id, reasons, number, current_app.config["PROMPTBEAT"])
    if wait is not None:
        dispatch.send_attempt(run_id, channel_id, message_id, reasons, number + 1, countdown=wait)
    if outcome is None:
        return f"run {run_id} channel {channel_id}: dropped"
    return f"run {run_id} channel {channel_id} attempt {number}: {'delivered' if outcome.delivered else 'failed'}"
