"""A waiting run whose message was lost is sent again by the sweep, past its moment, without waiting twice."""
import base64
import dataclasses
import json
from datetime import datetime, timedelta

import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, utcnow
from promptbeat.ratelimits.limits import WaitReason
from promptbeat.runs import recovery, store, waiting
from promptbeat.runs.plan import RunRequest
from promptbeat.runs.states import RunStatus


def queued_messages(redis_client):
    """(args, kwargs) of every message in the broker's queue."""
    messages = []
    for raw in redis_client.lrange("promptbeat", 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        messages.append((args, kwargs))
    return messages


def waiting_run(reason, moment):
    task = Task(name="Waits", prompt="hi", model="fake-model", schedule_type="crontab", cron="0 0 1 1 *")
    db.session.add(task)
    db.session.commit()
    run_id = store.create(task.id, Trigger.MANUAL, "fake-model")
    assert store.wait(run_id, reason, moment)
    return task.id, run_id


@pytest.mark.parametrize("reason,reserved", [(WaitReason.RATE_LIMIT, True), (WaitReason.PROVIDER, True),
                                             (WaitReason.JITTER, False), (WaitReason.FIRST_RUN_DELAY, False)])
def test_a_waiting_run_past_its_moment_without_a_message_is_sent_again(app, redis_client, reason, reserved):
    settings = app.config["PROMPTBEAT"]
    with app.app_context():
        task_id, run_id = waiting_run(reason, utcnow() - timedelta(seconds=recovery.QUEUED_GRACE_SECONDS + 5))
        assert recovery.sweep(settings, app.extensions["celery"]) == (1, 0)
        run = db.session.get(Execution, run_id)
        assert (run.status, run.recoveries) == (RunStatus.WAITING, 1)
    (args, kwargs), = queued_messages(redis_client)
    assert args == [task_id]
    # It goes on from where it waited: its place under the rate limit is not taken a second time.
    assert (kwargs["execution_id"], kwargs["delayed"], kwargs["reserved"]) == (run_id, True, reserved)


def test_a_waiting_run_before_its_moment_or_with_its_message_is_left_alone(app, redis_client):
    settings = app.config["PROMPTBEAT"]
    with app.app_context():
        waiting_run(WaitReason.RATE_LIMIT, utcnow() + timedelta(minutes=5))
        _, marked = waiting_run(WaitReason.RATE_LIMIT, utcnow() - timedelta(minutes=5))
        redis_client.set(recovery.marker_key(settings, marked), 1)
        assert recovery.sweep(settings, app.extensions["celery"]) == (0, 0)
    assert queued_messages(redis_client) == []


def test_a_waiting_run_whose_message_was_lost_past_its_attempts_is_lost(app, redis_client):
    settings = app.config["PROMPTBEAT"]
    with app.app_context():
        _, run_id = waiting_run(WaitReason.RATE_LIMIT, utcnow() - timedelta(minutes=5))
        db.session.execute(db.update(Execution).where(Execution.id == run_id).values(recoveries=settings.max_attempts))
        db.session.commit()
        assert recovery.sweep(settings, app.extensions["celery"]) == (0, 1)
        db.session.expire_all()
        assert db.session.get(Execution, run_id).status == RunStatus.LOST


def test_spread_offsets_are_stable_per_task_and_within_the_spread():
    offsets = [waiting.spread_offset(task_id, 60) for task_id in range(1, 1001)]
    assert offsets == [waiting.spread_offset(task_id, 60) for task_id in range(1, 1001)]
    assert all(0 <= offset < 60 for offset in offsets)
    # A thousand tasks fill the spread, about evenly: each ten-second part holds its share.
    for part in range(6):
        assert 120 < sum(1 for offset in offsets if part * 10 <= offset < part * 10 + 10) < 215
    assert waiting.spread_offset(7, 0) == 0


def test_only_a_scheduled_slot_waits_for_jitter_and_only_once(app):
    settings = app.config["PROMPTBEAT"]
    task = Task(id=1, jitter_seconds=30)
    slot = utcnow()
    scheduled = RunRequest(task_id=1, trigger=Trigger.SCHEDULED, slot=slot)
    delays = [waiting.start_delay(scheduled, task, settings, now=slot) for _ in range(50)]
    assert all(reason == WaitReason.JITTER and 0 <= wait <= 30 for wait, reason in delays)
    assert len({wait for wait, _ in delays}) > 1
    assert waiting.start_delay(RunRequest(task_id=1, trigger=Trigger.SCHEDULED, slot=slot, delayed=True), task,
                               settings, now=slot) is None
    assert waiting.start_delay(RunRequest(task_id=1, trigger=Trigger.MANUAL), task, settings) is None


def test_a_spread_burst_waits_each_task_its_own_offset_after_the_slot(app):
    settings = dataclasses.replace(app.config["PROMPTBEAT"], spread_bursts_seconds=60)
    slot = utcnow()
    for task_id in (3, 4):
        wait, reason = waiting.start_delay(RunRequest(task_id=task_id, trigger=Trigger.SCHEDULED, slot=slot),
                                           Task(id=task_id, jitter_seconds=0), settings, now=slot)
        assert (wait, reason) == (pytest.approx(waiting.spread_offset(task_id, 60)), WaitReason.SPREAD)


def test_a_long_wait_comes_back_before_the_visibility_timeout_and_waits_again_for_the_rest(app, redis_client):
    settings = app.config["PROMPTBEAT"]
    wait = settings.visibility_timeout * 3
    with app.test_request_context():
        task_id, run_id = waiting_run(WaitReason.RATE_LIMIT, utcnow())
        request = RunRequest(task_id=task_id, trigger=Trigger.MANUAL, execution_id=run_id)
        assert waiting.hold(request, run_id, task_id, wait, WaitReason.RATE_LIMIT, None, settings, reserved=True)
        moment = db.session.get(Execution, run_id).not_before
    (_, kwargs), = queued_messages(redis_client)
    envelope = json.loads(redis_client.lindex("promptbeat", 0))
    eta = datetime.fromisoformat(envelope["headers"]["eta"])
    # Held by a worker for less than the visibility timeout, so Redis never hands it out twice.
    assert eta - utcnow() < timedelta(seconds=settings.visibility_timeout)
    assert (kwargs["reserved"], kwargs["wait_reason"], kwargs["not_before"]) == (True, "rate_limit", moment.isoformat())
    back = RunRequest.from_message(task_id, "manual", execution_id=run_id, **{
        name: kwargs[name] for name in ("delayed", "reserved", "not_before", "wait_reason")})
    left, reason = waiting.start_delay(back, Task(id=task_id, jitter_seconds=0), settings, now=eta)
    assert reason == WaitReason.RATE_LIMIT and left == pytest.approx((moment - eta).total_seconds())
    assert waiting.start_delay(back, Task(id=task_id, jitter_seconds=0), settings, now=moment) is None
