"""Notify rules: which finished runs notify a task's channels, by the rules alone and through real runs."""
import base64
import json
import uuid
from datetime import timedelta

import pytest

from promptbeat.extensions import db
from promptbeat.models import Channel, Execution, NotifyOn, Task, utcnow
from promptbeat.notify import rules
from promptbeat.runs import recovery
from promptbeat.notify.rules import RunFacts
from promptbeat.runs.states import RunStatus
from tests.notify.conftest import QUEUE, make_task, run_once
from tests.outputs.fakes import script_answers

SUCCESS, FAILED, LOST = RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.LOST


@pytest.mark.parametrize(("facts", "met"), [
    (RunFacts(SUCCESS, None, None), {"every"}),  # a first run, with nothing to compare with, is no change
    (RunFacts(SUCCESS, True, SUCCESS), {"every", "change"}),
    (RunFacts(SUCCESS, False, SUCCESS), {"every"}),
    (RunFacts(SUCCESS, False, FAILED), {"every", "recovery"}),
    (RunFacts(SUCCESS, True, LOST), {"every", "change", "recovery"}),
    (RunFacts(FAILED, None, SUCCESS), {"every", "failure"}),
    (RunFacts(FAILED, None, FAILED, auto_paused=True), {"every", "failure", "auto_pause"}),
    # A budget stop is a skipped run: only the budget rule, and auto_pause when it paused its task, tell of it.
    (RunFacts(RunStatus.SKIPPED, None, FAILED, budget_stopped=True), {"budget"}),
    (RunFacts(RunStatus.SKIPPED, None, SUCCESS, auto_paused=True, budget_stopped=True), {"budget", "auto_pause"}),
])
def test_each_rule_decides_on_the_run_alone(facts, met):
    assert set(rules.reasons(list(NotifyOn), facts)) == met
    for rule in NotifyOn:
        assert rules.reasons([rule], facts) == ([rule] if rule in met else [])


def test_no_rules_no_notification_and_a_rule_given_twice_counts_once():
    assert rules.reasons([], RunFacts(SUCCESS, True, FAILED)) == []
    assert rules.reasons(["every", "every"], RunFacts(SUCCESS, True, FAILED)) == ["every"]


def queued(redis_client):
    """The reasons of each delivery message queued since the last call (the queue is emptied)."""
    messages = [json.loads(raw) for raw in redis_client.lrange(QUEUE, 0, -1)][::-1]
    redis_client.delete(QUEUE)
    return [json.loads(base64.b64decode(m["body"]))[0][3] for m in messages if m["headers"]["task"] == "promptbeat.deliver"]


@pytest.fixture
def channel_id(app):
    with app.app_context():
        channel = Channel(name="Rules", kind="webhook", url="http://127.0.0.1:9/hook")
        db.session.add(channel)
        db.session.commit()
        return channel.id


def test_failure_notifies_only_failed_runs(app, fake_llm, channel_id, redis_client):
    failing = make_task(app, [channel_id], prompt="[[fail:401]]", notify_on=["failure"])
    fine = make_task(app, [channel_id], prompt="Fine", notify_on=["failure"])
    assert run_once(app, failing)[1] == "failed"
    assert run_once(app, fine)[1] == "success"
    assert queued(redis_client) == [["failure"]]


def test_failure_notifies_a_run_the_sweep_marks_lost_and_a_later_success_is_a_recovery(app, fake_llm, channel_id,
                                                                                        redis_client):
    task_id = make_task(app, [channel_id], prompt="Watched", notify_on=["failure", "recovery"])
    with app.app_context():
        # A run whose worker vanished: still running a minute past its deadline.
        run = Execution(task_id=task_id, trigger="scheduled", status="running", started_at=utcnow(),
                        deadline_at=utcnow() - timedelta(minutes=1))
        db.session.add(run)
        db.session.commit()
        assert recovery.sweep(app.config["PROMPTBEAT"], app.extensions["celery"]) == (0, 1)
    assert queued(redis_client) == [["failure"]]
    assert run_once(app, task_id)[1] == "success"
    assert queued(redis_client) == [["recovery"]]


def test_recovery_notifies_the_first_success_after_a_failure(app, fake_llm, channel_id, redis_client):
    # The fake server fails this prompt's first call only; one attempt per run, so the first run fails.
    task_id = make_task(app, [channel_id], prompt=f"{uuid.uuid4()} [[fail:500x1]]", notify_on=["recovery"],
                        max_attempts=1)
    statuses = [run_once(app, task_id)[1] for _ in range(3)]
    assert statuses == ["failed", "success", "success"]
    assert queued(redis_client) == [["recovery"]]


def test_auto_pause_notifies_the_run_that_paused_its_task(app, fake_llm, channel_id, redis_client):
    task_id = make_task(app, [channel_id], prompt="[[fail:401]]", notify_on=["auto_pause"], auto_pause_after=2)
    run_once(app, task_id)
    assert queued(redis_client) == []
    run_once(app, task_id)
    with app.app_context():
        assert db.session.get(Task, task_id).enabled is False
    assert queued(redis_client) == [["auto_pause"]]


def test_several_rules_send_one_delivery_per_channel_naming_each_rule_met(app, fake_llm, channel_id, redis_client):
    task_id = make_task(app, [channel_id], prompt="[[fail:401]]", notify_on=["every", "failure", "change"])
    run_once(app, task_id)
    assert queued(redis_client) == [["every", "failure"]]


def test_change_notifies_a_changed_answer_but_not_a_first_or_an_unchanged_one(app, fake_llm, channel_id,
                                                                               redis_client):
    task_id = make_task(app, [channel_id], prompt="Watch", notify_on=["change"])
    script_answers(fake_llm, "Price: 3", "Price:   3", "Price: 4")
    notified = []
    for _ in range(3):
        run_once(app, task_id)
        notified.append(queued(redis_client))
    assert notified == [[], [], [["change"]]]


def test_a_task_without_channels_or_rules_queues_nothing(app, fake_llm, channel_id, redis_client):
    run_once(app, make_task(app, [], prompt="Alone"))
    run_once(app, make_task(app, [channel_id], prompt="Quiet", notify_on=[]))
    assert queued(redis_client) == []
