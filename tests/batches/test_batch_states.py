"""A batch-mode run in-process: collected without a call, its failures at once, and left alone by the sweep
until the batch poll ends it."""
from datetime import timedelta

import pytest
from sqlalchemy import update

from promptbeat.batches import poll, results
from promptbeat.extensions import db
from promptbeat.models import Connection, Execution, Task, Trigger, utcnow
from promptbeat.outputs.answers import OUTPUT_INVALID
from promptbeat.runs import recovery, store
from promptbeat.runs.states import RunStatus
from tests.runner import run_and_reload


def submitted_run(deadline_at, task_id=None, **values):
    if task_id is None:
        task = Task(name="Batch", prompt="Say hi", model="fake-model", schedule_type="crontab", cron="0 0 1 1 *",
                    timezone="UTC", enabled=False, batch=True)
        db.session.add(task)
        db.session.commit()
        task_id = task.id
    run_id = store.create(task_id, Trigger.SCHEDULED, "fake-model")
    db.session.execute(update(Execution).where(Execution.id == run_id).values(
        status=RunStatus.SUBMITTED, created_at=utcnow() - timedelta(days=2), deadline_at=deadline_at, **values))
    db.session.commit()
    return run_id


def reread(run_id):
    db.session.expire_all()
    return db.session.get(Execution, run_id)


def test_the_sweep_never_marks_a_submitted_run_lost_or_sends_it_again(app):
    with app.app_context():
        # Past any worker deadline, with a claim of a runner that never lived, and no queued-message marker.
        run_id = submitted_run(utcnow() - timedelta(hours=1), runner="gone:1:ab/1", batch_id="batch_x")
        assert recovery.sweep(app.config["PROMPTBEAT"], app.extensions["celery"]) == (0, 0)
        assert (reread(run_id).status, reread(run_id).recoveries) == (RunStatus.SUBMITTED, 0)


def test_the_batch_poll_gives_up_a_run_past_its_batch_window_only(app):
    with app.app_context():
        stranded = submitted_run(utcnow() - timedelta(seconds=1))
        waiting = submitted_run(utcnow() + timedelta(hours=20), batch_id="batch_y")
        poll.poll(app.config["PROMPTBEAT"])
        lost = reread(stranded)
        assert (lost.status, lost.error_class, lost.error) == (RunStatus.LOST, "BatchLost", poll.STRANDED_MESSAGE)
        assert reread(waiting).status == RunStatus.SUBMITTED


def batch_task(**fields):
    task = Task(name="Batch", prompt="Weekly summary, {{ task.name }}", system_prompt="Be brief.", model="fake-model",
                schedule_type="crontab", cron="0 0 1 1 *", timezone="UTC", enabled=True, batch=True, max_tokens=50,
                output_schema={"type": "object"}, **fields)
    db.session.add(task)
    db.session.commit()
    return task.id


def test_a_batch_run_is_collected_with_its_request_and_calls_nothing(app, fake_llm):
    fake_llm.reset()
    with app.app_context():
        run = run_and_reload(batch_task(), trigger=Trigger.MANUAL)
        assert (run.status, run.batch_id, run.runner, run.prompt) == (
            RunStatus.SUBMITTED, None, None, "Weekly summary, Batch")
        assert run.batch_request["messages"] == [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Weekly summary, Batch"}]
        assert run.batch_request["max_tokens"] == 50
        assert run.batch_request["response_format"]["type"] == "json_schema"
        assert run.deadline_at > utcnow() + timedelta(hours=24)
    assert fake_llm.requests == []


def test_a_batch_run_that_cannot_be_asked_fails_at_once(app, fake_llm):
    fake_llm.reset()
    with app.app_context():
        broken = Connection(name="Unreadable key", base_url=fake_llm.url, api_key_encrypted="not-a-fernet-token")
        db.session.add(broken)
        db.session.commit()
        run = run_and_reload(batch_task(connection_id=broken.id), trigger=Trigger.SCHEDULED,
                             slot=utcnow().replace(microsecond=0))
        assert (run.status, run.error_class) == (RunStatus.FAILED, "CryptoError")
        assert db.session.get(Task, run.task_id).consecutive_failures == 1
    assert fake_llm.requests == []


def result_line(content, status_code=200):
    """A line of a batch's output file, as the provider writes it."""
    return {"custom_id": "run-1", "error": None, "response": {"status_code": status_code, "body": {
        "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}}}


def test_a_result_line_is_settled_against_the_schema_and_compared_like_a_called_run(app):
    settings = app.config["PROMPTBEAT"]
    with app.app_context():
        task_id = batch_task()
        task = db.session.get(Task, task_id)
        first, second, third = (submitted_run(utcnow() + timedelta(hours=1), batch_id="batch_z", task_id=task_id)
                                for _ in range(3))
        for run_id, content in ((first, '{"a": 1}'), (second, '{"a": 2}'), (third, "not JSON")):
            assert results.finish(task, run_id, "batch_z", "scheduled",
                                  results.from_line(result_line(content), settings, "fake-model", 5), settings,
                                  None, "fake-model")
        ok, changed, invalid = reread(first), reread(second), reread(third)
        assert (ok.status, ok.parsed_output, ok.changed) == (RunStatus.SUCCESS, {"a": 1}, None)
        assert (changed.status, changed.parsed_output, changed.changed) == (RunStatus.SUCCESS, {"a": 2}, True)
        # Half the price table's (1.0, 2.0) USD per million tokens, at the default discount.
        assert ok.cost_usd == pytest.approx((10 * 1.0 + 20 * 2.0) / 1e6 * 0.5)
        assert (invalid.status, invalid.error_class) == (RunStatus.FAILED, OUTPUT_INVALID)
        assert db.session.get(Task, task_id).run_count == 3
        # A second result for a run already finished writes nothing.
        assert not results.finish(task, first, "batch_z", "scheduled",
                                  results.from_line(result_line('{"a": 3}'), settings, "fake-model", 5), settings,
                                  None, "fake-model")
