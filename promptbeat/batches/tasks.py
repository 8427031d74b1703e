"""Celery tasks of batch mode, fired by beat every PROMPTBEAT_BATCH_SECONDS: send collected runs, read batches."""
from contextlib import contextmanager

from celery import shared_task
from flask import current_app

from promptbeat.batches import poll, submit
from promptbeat.redis_client import get_client

# A tick that outlasts the next one is not overlapped by it: two sends of the same runs would pay twice.
LOCK_TICKS = 10


@contextmanager
def _one_at_a_time(settings, name):
    """Hold the job's Redis lock, or yield False when another tick of the same job still runs."""
    lock = get_client(settings.redis_url).lock(f"{settings.redbeat_key_prefix}batches:{name}",
                                               timeout=max(600, LOCK_TICKS * settings.batch_seconds), blocking=False)
    held = lock.acquire()
    try:
        yield held
    finally:
        if held:
            lock.release()


@shared_task(name="promptbeat.submit_batches", ignore_result=True)
def submit_batches_task():
    """Send the runs of batch-mode tasks collected since the last tick (promptbeat.batches.submit)."""
    settings = current_app.config["PROMPTBEAT"]
    with _one_at_a_time(settings, "submit") as held:
        return submit.submit_pending(settings) if held else 0


@shared_task(name="promptbeat.poll_batches", ignore_result=True)
def poll_batches_task():
    """Read batches in flight and finish the runs of those that ended (promptbeat.batches.poll)."""
    settings = current_app.config["PROMPTBEAT"]
    with _one_at_a_time(settings, "poll") as held:
        return poll.poll(settings) if held else 0
