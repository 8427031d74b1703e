"""Running a task in-process with the real openai client against the fake LLM server."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from promptbeat.extensions import db
from promptbeat.fakellm import error_body
from promptbeat.models import Execution, Task, Trigger
from promptbeat.settings import Settings
from tests.runner import run_and_reload, separate_web_app

# A schedule beat will not fire during the test, should a live beat be running in this session.
NEW_YEAR = {"schedule_type": "crontab", "cron": "0 0 1 1 *", "timezone": "UTC"}


def add_task(app, **fields):
    values = {"name": "Digest", "prompt": f"Summarise the news {uuid.uuid4().hex[:8]}", "model": "fake-model",
              "enabled": True, **NEW_YEAR, **fields}
    with app.app_context():
        task = Task(**values)
        db.session.add(task)
        db.session.commit()
        return task.id


def run(app, task_id, trigger=Trigger.MANUAL, **kwargs):
    """run_and_reload in an app context; returns the execution as stored."""
    with app.app_context():
        execution = run_and_reload(task_id, trigger=trigger, **kwargs)
        if execution is None:
            return None
        execution_id = execution.id
        db.session.remove()
        stored = db.session.get(Execution, execution_id)
        db.session.expunge_all()
        return stored


def requests_for(fake_llm, prompt):
    return [r for r in fake_llm.requests if r["messages"][-1]["content"] == prompt]


def prompt_of(app, task_id):
    with app.app_context():
        return db.session.get(Task, task_id).prompt


def test_success_records_output_and_tokens(app, api, fake_llm):
    task_id = add_task(app, system_prompt="Answer in one line.", temperature=0.2, max_tokens=50)
    prompt = prompt_of(app, task_id)

    execution = run(app, task_id)
    assert (execution.status, execution.trigger) == ("success", "manual")
    assert execution.output == f"echo: {prompt}"
    assert execution.error is None
    assert execution.prompt_tokens > 0 and execution.completion_tokens > 0
    assert execution.total_tokens == execution.prompt_tokens + execution.completion_tokens
    assert execution.started_at <= execution.finished_at
    assert execution.duration_ms >= 0
    assert execution.model == "fake-model"

    (sent,) = requests_for(fake_llm, prompt)
    assert sent["model"] == "fake-model"
    assert sent["messages"] == [{"role": "system", "content": "Answer in one line."},
                                {"role": "user", "content": prompt}]

    (shown,) = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
    assert (shown["id"], shown["status"], shown["output"]) == (execution.id, "success", f"echo: {prompt}")
    assert shown["prompt_tokens"] == execution.prompt_tokens
    assert shown["finished_at"].endswith("Z")


def test_a_queued_execution_is_the_one_that_runs(app):
    task_id = add_task(app)
    with app.app_context():
        queued = Execution(task_id=task_id, trigger="immediate", status="queued")
        db.session.add(queued)
        db.session.commit()
        queued_id = queued.id

    execution = run(app, task_id, trigger="immediate", execution_id=queued_id)
    assert (execution.id, execution.status, execution.trigger) == (queued_id, "success", "immediate")
    with app.app_context():
        assert db.session.execute(db.select(Execution.id).filter_by(task_id=task_id)).scalars().all() == [queued_id]


def test_a_finished_execution_is_not_run_again(app, fake_llm):
    task_id = add_task(app)
    first = run(app, task_id)
    again = run(app, task_id, execution_id=first.id)
    assert (again.id, again.status, again.output, again.finished_at) == (
        first.id, "success", first.output, first.finished_at)
    assert len(requests_for(fake_llm, prompt_of(app, task_id))) == 1


def test_server_error_is_recorded_as_failed_with_its_message(app, api):
    task_id = add_task(app, prompt="Summarise [[fail:500]]")
    execution = run(app, task_id, trigger=Trigger.SCHEDULED)
    assert execution.status == "failed"
    assert execution.error == ("InternalServerError (HTTP 500): "
                               "The server had an error while processing your request.")
    assert execution.output is None
    assert execution.finished_at is not None

    (shown,) = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
    assert (shown["status"], shown["error"]) == ("failed", execution.error)


def test_without_an_api_key_or_base_url_the_run_says_what_to_set(app):
    task_id = add_task(app)
    configured = app.config["PROMPTBEAT"]
    settings = Settings(secret_key="test", database_url=configured.database_url, redis_url=configured.redis_url)
    with separate_web_app(settings) as unconfigured:
        execution = run(unconfigured, task_id)
    assert execution.status == "failed"
    assert execution.error.startswith("OPENAI_API_KEY is not set: set it to call the OpenAI API")
    assert "OPENAI_BASE_URL" in execution.error


def test_disabled_task_scheduled_run_is_skipped(app, fake_llm):
    task_id = add_task(app, enabled=False)
    execution = run(app, task_id, trigger=Trigger.SCHEDULED)
    assert execution.status == "skipped"
    assert execution.error == "The task was disabled before this run started."
    assert execution.started_at is None and execution.output is None
    assert requests_for(fake_llm, prompt_of(app, task_id)) == []


def test_disabled_task_manual_run_runs(app, fake_llm):
    task_id = add_task(app, enabled=False)
    execution = run(app, task_id, trigger=Trigger.MANUAL)
    assert execution.status == "success"
    assert execution.output == f"echo: {prompt_of(app, task_id)}"
    assert len(requests_for(fake_llm, prompt_of(app, task_id))) == 1


def test_deleted_task_returns_none_and_records_nothing(app):
    task_id = add_task(app)
    with app.app_context():
        db.session.delete(db.session.get(Task, task_id))
        db.session.commit()
    assert run(app, task_id) is None
    with app.app_context():
        assert db.session.execute(db.select(Execution)).scalars().all() == []


def test_scheduled_run_moves_the_phase_anchor_forward_only(app):
    task_id = add_task(app)
    fired = datetime(2030, 1, 1, 0, 0, tzinfo=timezone.utc)
    run(app, task_id, trigger=Trigger.SCHEDULED, slot=fired.isoformat())
    with app.app_context():
        assert db.session.get(Task, task_id).anchor_at == fired

    run(app, task_id, trigger=Trigger.SCHEDULED, slot=(fired - timedelta(hours=1)).isoformat())
    run(app, task_id, trigger=Trigger.MANUAL)
    with app.app_context():
        assert db.session.get(Task, task_id).anchor_at == fired


def test_the_api_key_never_appears_in_a_run(app, fake_llm):
    key = app.config["PROMPTBEAT"].openai_api_key
    assert key
    rejected = run(app, add_task(app, prompt="Summarise [[fail:401]]"))
    assert rejected.status == "failed"
    assert rejected.error == "AuthenticationError (HTTP 401): Incorrect API key provided."

    # Real servers echo the key they rejected; it must be masked before it is stored.
    fake_llm.queue_responses([{"status": 401, "body": error_body(
        f"Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com.",
        "invalid_request_error", "invalid_api_key")}])
    try:
        echoed = run(app, add_task(app))
    finally:
        fake_llm.reset()
    assert echoed.status == "failed"
    assert echoed.error == ("AuthenticationError (HTTP 401): Incorrect API key provided: ***. "
                            "You can find your API key at https://platform.openai.com.")

    with app.app_context():
        for execution in db.session.execute(db.select(Execution)).scalars():
            assert key not in (execution.output or "")
            assert key not in (execution.error or "")
