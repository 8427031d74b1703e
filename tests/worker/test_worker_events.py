"""Task events from a real gevent worker: every one reaches the event stream, in batches, for Flower."""
import base64
import json
import secrets

import pytest
import redis as redis_lib
from celery import Celery

from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from tests import services
from tests.services import wait_for

pytestmark = pytest.mark.slow
RUNS = 10


def event_messages(pubsub):
    """The task event messages published so far: each a list of events (a batch) or one event."""
    messages = []
    while (message := pubsub.get_message(timeout=0.05)) is not None:
        if message["type"] != "pmessage":
            continue
        envelope = json.loads(message["data"])
        body = json.loads(base64.b64decode(envelope["body"]))
        events = body if isinstance(body, list) else [body]
        if events and events[0]["type"].startswith("task-"):
            messages.append(events)
    return messages


def test_a_gevent_worker_sends_every_task_event_in_batches(app, role_environ, tmp_path):
    private_redis = services.PrivateRedis(tmp_path)
    env = services.role_env({**role_environ, "REDIS_URL": private_redis.url})
    listener = redis_lib.Redis.from_url(private_redis.url)
    pubsub = listener.pubsub()
    pubsub.psubscribe("*celeryev*")
    worker = services.start_worker(env, tmp_path / "worker.log", pool="gevent", concurrency=RUNS)
    sender = Celery("sender", broker=private_redis.url)
    try:
        marker = "Events " + secrets.token_hex(4)
        with app.app_context():
            task = Task(name="Events", prompt=marker, model="fake-model", schedule_type="interval",
                        interval_seconds=600, overlap_policy="allow")
            runs = [Execution(task=task, trigger="manual", status="queued") for _ in range(RUNS)]
            db.session.add_all([task, *runs])
            db.session.commit()
            ids = [(task.id, run.id) for run in runs]
        for task_id, run_id in ids:
            sender.send_task("promptbeat.execute_task", args=[task_id], queue="promptbeat",
                             kwargs={"trigger": "manual", "execution_id": run_id})
        messages = []

        def all_events_seen():
            messages.extend(event_messages(pubsub))
            return sum(len(batch) for batch in messages) >= 3 * RUNS

        wait_for(all_events_seen, 30, "received, started and succeeded events for every run")
        events = [event for batch in messages for event in batch]
        for kind in ("task-received", "task-started", "task-succeeded"):
            assert len([e for e in events if e["type"] == kind]) == RUNS, kind
        # Sent in batches: fewer messages than events, not one message per event.
        assert len(messages) < len(events)
        assert max(len(batch) for batch in messages) > 1
    finally:
        sender.close()
        worker.stop()
        pubsub.close()
        listener.close()
        private_redis.stop()
