"""Beat's bulk path sends exactly what Celery's send_task sends, and saves each fired entry's phase."""
import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
import redis as redis_lib

from beat.publisher import BulkPublisher
from beat.scheduler import LockLost, PromptbeatScheduler
from promptbeat.runs import message_ids
from promptbeat.app import create_app
from promptbeat.scheduling.entries import EXECUTE_TASK, TaskEntry, entry_name
from promptbeat.scheduling.schedules import TaskSchedule
from promptbeat.settings import Settings
from tests import services

# Differ per message by design: the ids, and the process that built the message.
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag"}


@pytest.fixture
def beat_app(tmp_path, database_url):
    """A Celery app on a private Redis, so no worker or beat of the session takes its messages."""
    private = services.PrivateRedis(tmp_path)
    settings = Settings(secret_key="test", database_url=database_url, redis_url=private.url)
    flask_app = create_app(settings)
    celery_app = flask_app.extensions["celery"]
    client = redis_lib.Redis.from_url(private.url)
    yield celery_app, client
    client.close()
    private.stop()


def queued(celery_app, client):
    """Every message in the task queue, oldest first, with its body decoded."""
    messages = [json.loads(raw) for raw in reversed(client.lrange(celery_app.conf.task_default_queue, 0, -1))]
    for message in messages:
        message["body"] = json.loads(base64.b64decode(message["body"]))
    return messages


def without_ids(message):
    headers = {key: value for key, value in message["headers"].items() if key not in PER_MESSAGE}
    properties = {key: value for key, value in message["properties"].items() if key not in PER_MESSAGE}
    # Beat pushes to the queue itself and names the queue's exchange; send_task names the default
    # exchange. Both route a restored (unacknowledged) message back to the same queue.
    properties["delivery_info"] = {**properties["delivery_info"], "exchange": None}
    return {**message, "headers": headers, "properties": properties}


def test_bulk_messages_match_send_task(beat_app):
    celery_app, client = beat_app
    first = {"trigger": "scheduled", "slot": "2026-03-29T01:00:00+00:00", "catch_up": False}
    second = {"trigger": "scheduled", "slot": "2026-03-29T01:05:00+00:00", "catch_up": True}
    with celery_app.connection_for_write() as connection:
        bulk = BulkPublisher(celery_app, connection.default_channel)
        ids = [bulk.add(EXECUTE_TASK, [7], first, shadow="promptbeat task 7"),
               bulk.add(EXECUTE_TASK, [8], second, task_id="given-id", shadow="promptbeat task 8")]
        assert bulk.flush() == 2
    celery_app.send_task(EXECUTE_TASK, [8], second, headers={"celery_beat_task": True}, shadow="promptbeat task 8")

    built_first, built_second, canonical = queued(celery_app, client)
    # The second bulk message came from the template; it equals send_task's but for its ids.
    assert without_ids(built_second) == without_ids(canonical)
    assert built_second["body"] == [[8], second, canonical["body"][2]]
    assert built_first["body"][:2] == [[7], first]
    assert ids[1] == "given-id"
    for message, task_id in zip((built_first, built_second), ids):
        assert message["headers"]["id"] == message["headers"]["root_id"] == task_id
        assert message["properties"]["correlation_id"] == task_id
    assert ids[0] != ids[1]
    assert [m["headers"]["shadow"] for m in (built_first, built_second)] == ["promptbeat task 7", "promptbeat task 8"]
    # Two messages of one slot share a task id, never a delivery tag (kombu's key for unacknowledged messages).
    assert len({m["properties"]["delivery_tag"] for m in (built_first, built_second, canonical)}) == 3
    assert built_second["headers"]["kwargsrepr"] == repr(second)


def test_a_batch_fires_every_due_entry_once_and_saves_its_phase(beat_app):
    celery_app, client = beat_app
    last = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=61)
    for task_id in range(1, 2501):  # more than one batch
        TaskEntry(name=entry_name(task_id), task=EXECUTE_TASK, schedule=TaskSchedule("interval", every=60),
                  args=[task_id], kwargs={"trigger": "scheduled"}, options={}, last_run_at=last,
                  app=celery_app).save(reset_phase=True)
    scheduler = PromptbeatScheduler(celery_app, lazy=True)
    scheduler.lock_key = None
    scheduler.fire_due()
    # Redis lost its script cache (a restart): the next batch loads the scripts again.
    client.script_flush()
    scheduler.fire_due()

    messages = queued(celery_app, client)
    slot = (last + timedelta(seconds=60)).isoformat()
    assert sorted(message["body"][0][0] for message in messages) == list(range(1, 2501))
    assert {message["body"][1]["slot"] for message in messages} == {slot}
    assert len({message["headers"]["id"] for message in messages}) == 2500
    # Each message carries the id the web derives from its run's slot, and names its task for Flower.
    first = next(m for m in messages if m["body"][0] == [1])
    assert first["headers"]["id"] == message_ids.id_for_slot(1, last + timedelta(seconds=60))
    assert first["headers"]["shadow"] == "promptbeat task 1"
    for task_id in (1, 1250, 2500):
        key = TaskEntry.generate_key(celery_app, entry_name(task_id))
        assert TaskEntry.from_key(key, app=celery_app).last_run_at == last + timedelta(seconds=60)
        # The next fire is one interval after the slot, not one interval after the send.
        score = client.zscore(celery_app.redbeat_conf.schedule_key, key)
        assert score == pytest.approx((last + timedelta(seconds=120)).timestamp(), abs=0.01)


def test_a_beat_that_lost_the_lock_mid_batch_sends_and_logs_nothing(beat_app, caplog):
    celery_app, client = beat_app
    last = datetime.now(timezone.utc) - timedelta(seconds=61)
    TaskEntry(name=entry_name(1), task=EXECUTE_TASK, schedule=TaskSchedule("interval", every=60), args=[1],
              kwargs={"trigger": "scheduled"}, options={}, last_run_at=last, app=celery_app).save(reset_phase=True)
    scheduler = PromptbeatScheduler(celery_app, lazy=True)
    # This beat held the lock, stalled, and another beat took it meanwhile.
    scheduler.lock = client.lock(scheduler.lock_key, timeout=30)
    scheduler.lock.local.token = b"stalled beat"
    client.set(scheduler.lock_key, "standby beat")
    with caplog.at_level("INFO"), pytest.raises(LockLost):
        scheduler.fire_due()
    assert queued(celery_app, client) == []
    # Only what really left beat is logged as sent: operators (and the failover tests) count these lines.
    assert "Sending due task" not in caplog.text
    assert TaskEntry.from_key(TaskEntry.generate_key(celery_app, entry_name(1)), app=celery_app).last_run_at == last
