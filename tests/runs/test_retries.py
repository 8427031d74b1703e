"""run_and_reload against the fake server over HTTP with the real SDK: error classes, retries, idempotency."""
import dataclasses
import threading
from datetime import timedelta

import pytest

from promptbeat.extensions import db
from promptbeat.llm.client import LLMError
from promptbeat.models import Connection, Execution, Runner, Task, Trigger, utcnow
from promptbeat.redis_client import get_client
from promptbeat.runs import recovery, retry, store
from promptbeat.runs.overlap import lock_key
from promptbeat.settings import ConfigError
from tests.runner import run_and_reload
from tests.services import wait_for


class Waits(list):
    """Records backoff waits instead of sleeping, so retry tests take no wall time."""

    def __call__(self, seconds):
        self.append(seconds)


def make_task(prompt, **values):
    task = Task(name=values.pop("name", "Retry check"), prompt=prompt, model="fake-model",
                schedule_type="interval", interval_seconds=600, **values)
    db.session.add(task)
    db.session.commit()
    return task.id


def queued_run(task_id, trigger=Trigger.MANUAL):
    execution = Execution(task_id=task_id, trigger=trigger, status="queued")
    db.session.add(execution)
    db.session.commit()
    return execution.id


def run(task_id, waits=None, trigger=Trigger.MANUAL):
    return run_and_reload(task_id, trigger=trigger, execution_id=queued_run(task_id, trigger),
                         sleep=Waits() if waits is None else waits)


def calls_for(fake_llm, marker):
    return [r for r in fake_llm.requests if marker in r["messages"][-1]["content"]]


@pytest.fixture
def ctx(app, fake_llm):
    fake_llm.reset()
    with app.app_context():
        yield app


def test_success_records_usage_cost_and_one_attempt(ctx):
    execution = run(make_task("Plain question"))
    assert execution.status == "success"
    assert execution.output == "echo: Plain question"
    assert [a["attempt"] for a in execution.attempts] == [1]
    assert execution.prompt_tokens and execution.completion_tokens
    assert execution.total_tokens == execution.prompt_tokens + execution.completion_tokens
    # fake-model is priced at 1 and 2 USD per million tokens in the test environment.
    expected = (execution.prompt_tokens * 1.0 + execution.completion_tokens * 2.0) / 1e6
    assert execution.cost_usd == pytest.approx(expected)


def test_server_errors_are_retried_with_backoff_until_success(ctx, fake_llm):
    waits = Waits()
    execution = run(make_task("Flaky [[fail:500x2]] one"), waits)
    assert execution.status == "success"
    assert [a.get("error_class") for a in execution.attempts] == ["InternalServerError", "InternalServerError", None]
    assert len(waits) == 2 and all(0 < w <= 3 for w in waits)
    assert [a["wait_s"] for a in execution.attempts[:2]] == [round(w, 3) for w in waits]
    assert len(calls_for(fake_llm, "Flaky")) == 3


def test_rate_limit_honours_retry_after_and_attempts_are_bounded(ctx, fake_llm):
    waits = Waits()
    execution = run(make_task("Busy [[fail:429]]", max_attempts=3), waits)
    assert execution.status == "failed"
    assert execution.error_class == "RateLimitError"
    assert execution.error == "RateLimitError (HTTP 429): Rate limit reached for requests."
    # The fake sends retry-after-ms: 1000; promptbeat waits that plus at most 10% jitter.
    assert len(waits) == 2 and all(1.0 <= w <= 1.1 for w in waits)
    assert len(calls_for(fake_llm, "Busy")) == 3


@pytest.mark.parametrize("directive, error_class, status, message", [
    ("quota", "InsufficientQuota", 429, "exceeded your current quota"),
    ("401", "AuthenticationError", 401, "Incorrect API key"),
    ("403", "PermissionDeniedError", 403, "not supported"),
    ("400", "BadRequestError", 400, "Invalid request"),
    ("404", "NotFoundError", 404, "model does not exist"),
])
def test_permanent_errors_fail_at_once_with_class_and_message(ctx, fake_llm, directive, error_class, status, message):
    waits = Waits()
    execution = run(make_task(f"Permanent [[fail:{directive}]]"), waits)
    assert execution.status == "failed"
    assert execution.error_class == error_class
    assert f"(HTTP {status})" in execution.error and message in execution.error
    assert len(execution.attempts) == 1 and waits == []
    assert len(calls_for(fake_llm, "Permanent")) == 1


def test_timeouts_are_retried_and_each_attempt_honours_the_request_timeout(ctx, fake_llm):
    execution = run(make_task("Stall [[sleep:5]]", request_timeout_seconds=1, max_attempts=2))
    assert execution.status == "failed"
    assert [a["error_class"] for a in execution.attempts] == ["APITimeoutError", "APITimeoutError"]
    assert all(a["ms"] < 4000 for a in execution.attempts)
    assert "no answer within 1 s" in execution.error


def test_connection_errors_are_retried(ctx):
    from tests.services import free_port

    connection = Connection(name="Nowhere", base_url=f"http://127.0.0.1:{free_port()}/v1")
    db.session.add(connection)
    execution = run(make_task("Unreachable", connection=connection, max_attempts=2))
    assert execution.status == "failed"
    assert [a["error_class"] for a in execution.attempts] == ["APIConnectionError", "APIConnectionError"]


def test_a_run_never_outlives_its_deadline(ctx):
    # Each attempt may take 10 s, but the run as a whole may take 5: the attempt is cut short.
    execution = run(make_task("Long [[sleep:8]]", request_timeout_seconds=10, max_run_seconds=5))
    assert execution.status == "failed"
    assert execution.duration_ms < 7000
    assert execution.error_class == "APITimeoutError"


def test_backoff_never_exceeds_its_cap():
    error = LLMError("x", "InternalServerError", 500)
    assert all(retry.backoff_seconds(n, error, 1.0, 60.0) <= 60.0 for n in range(1, 30))
    slow = LLMError("x", "RateLimitError", 429, retry_after=7200)
    assert retry.backoff_seconds(1, slow, 1.0, 60.0) == 60.0


def test_a_redelivered_message_never_runs_or_finishes_a_run_twice(ctx, fake_llm):
    task = make_task("Once only")
    run_id = queued_run(task)
    first = run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id)
    second = run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id)
    assert first.id == second.id and second.status == "success"
    assert len(calls_for(fake_llm, "Once only")) == 1
    assert db.session.execute(db.select(db.func.count(Execution.id))).scalar() == 1


def test_a_message_for_a_run_already_running_elsewhere_leaves_it_alone(ctx, fake_llm):
    task = make_task("Elsewhere")
    run_id = queued_run(task)
    db.session.get(Execution, run_id).status = "running"
    db.session.commit()
    execution = run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id)
    assert execution.status == "running"
    assert calls_for(fake_llm, "Elsewhere") == []


def test_concurrent_deliveries_of_one_run_make_one_call(ctx, fake_llm):
    task = make_task("Race [[sleep:0.5]]")
    run_id = queued_run(task)
    app = ctx

    def deliver():
        with app.app_context():
            run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id)
            db.session.remove()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db.session.expire_all()
    assert db.session.get(Execution, run_id).status == "success"
    assert len(calls_for(fake_llm, "Race")) == 1


def test_a_delivery_of_a_run_whose_other_delivery_holds_the_lock_leaves_it(ctx, fake_llm):
    # The first delivery took the overlap lock for this run and is about to claim it; a second
    # delivery of the same message must not mark the run skipped under it.
    settings = ctx.config["PROMPTBEAT"]
    task = make_task("Duplicate delivery")
    run_id, other_run = queued_run(task), queued_run(task)
    get_client(settings.redis_url).set(lock_key(settings, task), f"{run_id}:first-delivery")
    execution = run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id)
    assert execution.status == "queued"
    assert calls_for(fake_llm, "Duplicate delivery") == []
    # Another run of the task, meanwhile, is skipped by the overlap policy as before.
    assert run_and_reload(task, trigger=Trigger.MANUAL, execution_id=other_run).status == "skipped"


def test_sweep_marks_runs_past_their_deadline_lost_and_leaves_live_ones(ctx):
    settings = ctx.config["PROMPTBEAT"]
    task = make_task("Sweep")
    dead, live = queued_run(task), queued_run(task)
    now = utcnow()
    db.session.get(Execution, dead).status = "running"
    db.session.get(Execution, dead).deadline_at = now - timedelta(seconds=60)
    db.session.get(Execution, live).status = "running"
    db.session.get(Execution, live).deadline_at = now + timedelta(seconds=60)
    db.session.commit()
    assert recovery.sweep(settings, ctx.extensions["celery"]) == (0, 1)
    db.session.expire_all()
    assert db.session.get(Execution, dead).status == "lost"
    assert db.session.get(Execution, dead).error_class == "WorkerLost"
    assert db.session.get(Execution, live).status == "running"
    # A late result for the lost run is discarded rather than written over the record.
    execution = run_and_reload(task, trigger=Trigger.MANUAL, execution_id=dead)
    assert execution.status == "lost"


def test_the_sweep_frees_the_overlap_lock_of_a_lost_run_so_the_next_run_goes_ahead(ctx, fake_llm):
    settings = ctx.config["PROMPTBEAT"]
    dead_task, live_task = make_task("Freed lock"), make_task("Kept lock")
    dead, live = queued_run(dead_task), queued_run(live_task)
    now = utcnow()
    for run_id, deadline in ((dead, now - timedelta(seconds=60)), (live, now + timedelta(seconds=60))):
        db.session.get(Execution, run_id).status = "running"
        db.session.get(Execution, run_id).started_at = now - timedelta(seconds=90)
        db.session.get(Execution, run_id).deadline_at = deadline
    db.session.commit()
    # Each run took its task's lock as it started; the dead one's worker can no longer release it.
    client = get_client(settings.redis_url)
    client.set(lock_key(settings, dead_task), f"{dead}:dead-worker")
    client.set(lock_key(settings, live_task), f"{live}:live-worker")
    assert recovery.sweep(settings, ctx.extensions["celery"]) == (0, 1)
    assert client.get(lock_key(settings, dead_task)) is None
    assert client.get(lock_key(settings, live_task)) == f"{live}:live-worker"
    assert run(dead_task).status == "success"
    assert run(live_task).status == "skipped"


def test_a_task_deleted_during_the_run_ends_cleanly_with_no_record(ctx, fake_llm):
    task = make_task("Deleted midway [[fail:500x1]]")
    run_id = queued_run(task)
    app = ctx

    def delete_during_backoff(seconds):
        with app.app_context():
            db.session.execute(db.delete(Task).where(Task.id == task))
            db.session.commit()

    assert run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id, sleep=delete_during_backoff) is None
    assert db.session.execute(db.select(Execution)).first() is None


def test_a_task_disabled_before_its_scheduled_run_is_skipped(ctx, fake_llm):
    task = make_task("Switched off", enabled=False)
    execution = run(task, trigger=Trigger.SCHEDULED)
    assert execution.status == "skipped"
    assert "disabled" in execution.error
    assert calls_for(fake_llm, "Switched off") == []


def test_prompt_variables_are_rendered(ctx):
    task = make_task("Hi {{ task.name }}: run {{ run_count }} on {{ today }}; before: {{ last_output }}",
                     name="Greeter")
    first = run(task)
    today, first_output = first.started_at.date().isoformat(), first.output
    assert first_output == f"echo: Hi Greeter: run 0 on {today}; before: "
    second = run(task)
    assert second.prompt == f"Hi Greeter: run 1 on {today}; before: {first_output}"
    assert second.output == "echo: " + second.prompt


def test_the_sandbox_keeps_prompts_away_from_python_internals(ctx, fake_llm):
    execution = run(make_task("{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    assert execution.status == "failed"
    assert execution.error_class == "TemplateError"
    assert fake_llm.requests == []


def test_a_stored_runaway_template_fails_its_claimed_run_without_a_call(ctx, fake_llm):
    # Saved before templates were bounded, or straight into the database: validation never saw it.
    execution = run(make_task("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"))
    assert execution.status == "failed"
    assert execution.error_class == "TemplateError"
    assert execution.error == "The prompt template took too long to render (step budget of 1000000 exceeded)."
    assert execution.started_at is not None and execution.finished_at is not None
    assert fake_llm.requests == []


def test_the_size_limit_applies_to_the_prompt_as_rendered(ctx, fake_llm):
    execution = run(make_task("{% for i in range(300) %}{{ 'x' * 100 }}{% endfor %}"))
    assert execution.status == "failed"
    assert execution.error.startswith("The rendered prompt is at least 20")
    assert execution.error.endswith("characters; the limit is 20000 (PROMPTBEAT_MAX_PROMPT_CHARS).")
    assert fake_llm.requests == []


def test_the_system_prompt_is_rendered_too(ctx, fake_llm):
    execution = run(make_task("Plain {{ run_count }}", name="Terse", system_prompt="You are {{ task.name }}."))
    assert execution.status == "success" and execution.prompt == "Plain 0"
    assert fake_llm.requests[-1]["messages"][0] == {"role": "system", "content": "You are Terse."}


def test_settings_refuse_a_backoff_past_the_visibility_timeout(app):
    from promptbeat.settings import ConfigError

    settings = app.config["PROMPTBEAT"]
    with pytest.raises(ConfigError, match="VISIBILITY_TIMEOUT"):
        dataclasses.replace(settings, visibility_timeout=30, retry_max_seconds=60)


def test_settings_refuse_a_runner_timeout_that_two_late_heartbeats_would_pass(app):
    settings = app.config["PROMPTBEAT"]
    with pytest.raises(ConfigError, match="RUNNER_TIMEOUT"):
        dataclasses.replace(settings, heartbeat_seconds=5, runner_timeout_seconds=14)
    assert dataclasses.replace(settings, heartbeat_seconds=5, runner_timeout_seconds=15).runner_timeout_seconds == 15


def test_a_redelivered_message_never_takes_over_a_running_run(ctx, fake_llm):
    # A run whose worker died is started again by the sweep, under a new claim; a redelivered message
    # taking it over could run it twice.
    task = make_task("Not taken over")
    run_id = queued_run(task)
    db.session.get(Execution, run_id).status = "running"
    db.session.commit()
    execution = run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id, redelivered=True, worker="w2@host")
    assert (execution.status, execution.worker) == ("running", None)
    assert calls_for(fake_llm, "Not taken over") == []


def running_under(task_id, claim, started_ago=5):
    run_id = queued_run(task_id)
    execution = db.session.get(Execution, run_id)
    execution.status, execution.runner = "running", claim
    execution.started_at = utcnow() - timedelta(seconds=started_ago)
    execution.deadline_at = utcnow() + timedelta(seconds=600)
    db.session.commit()
    return run_id


def test_the_sweep_sends_again_the_runs_of_a_dead_runner_and_leaves_live_ones(ctx, redis_client):
    settings = ctx.config["PROMPTBEAT"]
    task = make_task("Dead runner")
    last_try = make_task("Dead runner, last attempt", max_attempts=1)
    now = utcnow()
    db.session.add_all([Runner(id="live:1:a", hostname="live", pid=1, started_at=now, heartbeat_at=now),
                        Runner(id="stale:2:b", hostname="stale", pid=2, started_at=now,
                               heartbeat_at=now - timedelta(seconds=settings.runner_timeout_seconds + 1))])
    db.session.commit()
    live = running_under(task, "live:1:a/1")
    stale = running_under(task, "stale:2:b/7")
    gone = running_under(last_try, "gone:3:c/1")
    assert recovery.sweep(settings, ctx.extensions["celery"]) == (1, 1)
    db.session.expire_all()
    assert db.session.get(Execution, live).status == "running"
    again = db.session.get(Execution, stale)
    assert (again.status, again.runner, again.started_at, again.recoveries) == ("queued", None, None, 1)
    lost = db.session.get(Execution, gone)
    assert (lost.status, lost.error_class) == ("lost", "WorkerLost")
    assert "started 1 time(s), its task's maximum" in lost.error
    # The run's message is back in the queue, marked; the dead runner is forgotten, the live one kept.
    assert redis_client.llen("promptbeat") == 1
    assert redis_client.exists(recovery.marker_key(settings, stale))
    assert [r.id for r in db.session.execute(db.select(Runner)).scalars()] == ["live:1:a"]
    assert recovery.sweep(settings, ctx.extensions["celery"]) == (0, 0)


def test_a_result_is_written_only_under_the_claim_that_made_the_call(ctx, fake_llm):
    # A worker thought dead goes on with its call while its run is started again elsewhere: its result
    # must not land on the run the new claim holds.
    app = ctx
    task = make_task("Stale holder [[sleep:1]]")
    run_id = queued_run(task)
    finished = threading.Event()

    def deliver():
        with app.app_context():
            run_and_reload(task, trigger=Trigger.MANUAL, execution_id=run_id)
            db.session.remove()
        finished.set()

    threading.Thread(target=deliver).start()
    wait_for(lambda: calls_for(fake_llm, "Stale holder"), 10, "the model call")
    db.session.execute(db.update(Execution).where(Execution.id == run_id).values(runner="elsewhere:9:z/1"))
    db.session.commit()
    assert finished.wait(20)
    db.session.expire_all()
    execution = db.session.get(Execution, run_id)
    assert (execution.status, execution.runner, execution.output) == ("running", "elsewhere:9:z/1", None)


def test_cancel_ends_a_queued_or_running_run_once(ctx, fake_llm):
    task = make_task("Cancelled before it ran")
    queued, running, done = queued_run(task), running_under(task, "w:1:a/1"), queued_run(task)
    db.session.get(Execution, done).status = "success"
    db.session.commit()
    assert [store.cancel(r) for r in (queued, running, done)] == [True, True, False]
    assert not store.cancel(queued)
    db.session.expire_all()
    assert [db.session.get(Execution, r).status for r in (queued, running, done)] == ["cancelled", "cancelled",
                                                                                      "success"]
    assert db.session.get(Execution, queued).error == store.CANCELLED_MESSAGE
    # Its message, when it arrives, runs nothing.
    assert run_and_reload(task, trigger=Trigger.MANUAL, execution_id=queued).status == "cancelled"
    assert calls_for(fake_llm, "Cancelled before it ran") == []
