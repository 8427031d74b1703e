"""Model fallback through the worker's run path, against the fake server over HTTP with the real SDK."""
import pytest

from promptbeat.extensions import db
from promptbeat.fakellm import JSON_MODE_ONLY_MODEL, error_body
from promptbeat.llm.connections import save_connection
from promptbeat.models import Execution, Task, Trigger
from promptbeat.outputs import asking
from tests.runner import run_and_reload

FALLBACK = "gpt-4o-mini"
# The fake server's answer for each failure, as the provider words it.
FAILURES = {
    "429": {"status": 429, "body": error_body("Rate limit reached.", "requests", "rate_limit_exceeded"),
            "headers": {"retry-after-ms": "10"}},
    "500": {"status": 500, "body": error_body("The server had an error.", "server_error")},
    "503": {"status": 503, "body": error_body("Overloaded.", "server_error")},
    "404": {"status": 404, "body": error_body("The model does not exist.", "invalid_request_error", "model_not_found")},
    "quota": {"status": 429, "body": error_body("You exceeded your current quota.", "insufficient_quota",
                                                "insufficient_quota")},
    "400": {"status": 400, "body": error_body("Invalid request.", "invalid_request_error")},
    "401": {"status": 401, "body": error_body("Incorrect API key provided.", "invalid_request_error",
                                              "invalid_api_key")},
    "422": {"status": 422, "body": error_body("Unprocessable.", "invalid_request_error")},
}


class Waits(list):
    """Records backoff waits instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def ctx(app, fake_llm):
    fake_llm.reset()
    asking.forget_refusals()
    with app.app_context():
        yield app
    fake_llm.reset()


def make_task(prompt, fallbacks=None, **values):
    task = Task(name="Fallback check", prompt=prompt, model="fake-model", schedule_type="interval",
                interval_seconds=600, fallbacks=fallbacks, **values)
    db.session.add(task)
    db.session.commit()
    return task.id


def run(task_id, waits=None):
    execution = Execution(task_id=task_id, trigger=Trigger.MANUAL, status="queued")
    db.session.add(execution)
    db.session.commit()
    return run_and_reload(task_id, trigger=Trigger.MANUAL, execution_id=execution.id,
                         sleep=Waits() if waits is None else waits)


def fail(fake_llm, kind, model="fake-model", times=1):
    fake_llm.queue_responses([{**FAILURES[kind], "model": model}] * times)


def models_asked(fake_llm):
    return [r["model"] for r in fake_llm.requests]


def price(execution, model_price):
    prompt_price, completion_price = model_price
    return (execution.prompt_tokens * prompt_price + execution.completion_tokens * completion_price) / 1e6


@pytest.mark.parametrize("kind, error_class, tries", [
    ("429", "RateLimitError", 2),          # after its retries
    ("500", "InternalServerError", 2),
    ("503", "InternalServerError", 2),
    ("404", "NotFoundError", 1),           # model not found: not retried, the next model at once
    ("quota", "InsufficientQuota", 1),
])
def test_a_failure_another_model_may_not_have_falls_back(ctx, fake_llm, kind, error_class, tries):
    waits = Waits()
    fail(fake_llm, kind, times=2)
    execution = run(make_task("Fall back", [{"model": FALLBACK, "connection_id": None}], max_attempts=2), waits)
    assert execution.status == "success", execution.error
    assert execution.output == "echo: Fall back"
    assert (execution.model, execution.answered_model, execution.answered_connection_id) == (
        "fake-model", FALLBACK, None)
    assert [(a["model"], a.get("error_class")) for a in execution.attempts] == (
        [("fake-model", error_class)] * tries + [(FALLBACK, None)])
    assert [a["attempt"] for a in execution.attempts] == list(range(1, tries + 2))
    assert all(a["connection_id"] is None for a in execution.attempts)
    # Backoff only between retries of the same model: the fallback is asked at once.
    assert len(waits) == tries - 1
    assert models_asked(fake_llm) == ["fake-model"] * tries + [FALLBACK]
    assert execution.cost_usd == pytest.approx(price(execution, ctx.config["PROMPTBEAT"].prices[FALLBACK]))


@pytest.mark.parametrize("kind, error_class", [
    ("400", "BadRequestError"), ("401", "AuthenticationError"), ("422", "UnprocessableEntityError")])
def test_a_refused_request_does_not_fall_back(ctx, fake_llm, kind, error_class):
    fail(fake_llm, kind)
    execution = run(make_task("No fallback", [{"model": FALLBACK, "connection_id": None}]))
    assert execution.status == "failed"
    assert execution.error_class == error_class
    assert execution.answered_model is None and execution.cost_usd is None
    assert [a["model"] for a in execution.attempts] == ["fake-model"]
    # The fallback model was never asked.
    assert models_asked(fake_llm) == ["fake-model"]


def test_an_answer_that_fails_validation_does_not_fall_back(ctx, fake_llm):
    fake_llm.queue_responses([{"model": "fake-model", "content": "not JSON at all"}])
    schema = {"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}
    execution = run(make_task("Invalid answer", [{"model": FALLBACK, "connection_id": None}], output_schema=schema))
    assert execution.status == "failed" and execution.error_class == "OutputValidationError"
    # The model did answer: the run says which one, and what its answer cost.
    assert execution.answered_model == "fake-model"
    assert execution.cost_usd == pytest.approx(price(execution, (1.0, 2.0)))
    assert models_asked(fake_llm) == ["fake-model"]


def test_fallback_on_another_connection_records_it(ctx, fake_llm):
    second = save_connection({"name": "Second route", "base_url": fake_llm.url, "api_key": "sk-second-route",
                              "extra_headers": {"X-Route": "second"}})
    fail(fake_llm, "500", times=2)
    execution = run(make_task("Elsewhere", [{"model": FALLBACK, "connection_id": second.id}], max_attempts=2))
    assert execution.status == "success", execution.error
    assert (execution.answered_model, execution.answered_connection_id) == (FALLBACK, second.id)
    assert [(a["model"], a["connection_id"]) for a in execution.attempts] == [
        ("fake-model", None), ("fake-model", None), (FALLBACK, second.id)]
    requests = fake_llm.requests
    assert [r["headers"].get("x-route") for r in requests] == [None, None, "second"]


def test_fallbacks_are_tried_in_order_and_the_last_error_is_the_runs(ctx, fake_llm):
    fail(fake_llm, "404")
    fail(fake_llm, "500", model="gpt-4o")
    fail(fake_llm, "404", model=FALLBACK)
    execution = run(make_task("All down", [{"model": "gpt-4o", "connection_id": None},
                                           {"model": FALLBACK, "connection_id": None}], max_attempts=1))
    assert execution.status == "failed"
    assert execution.error_class == "NotFoundError" and "model does not exist" in execution.error
    assert execution.answered_model is None
    assert models_asked(fake_llm) == ["fake-model", "gpt-4o", FALLBACK]


def test_a_connections_fallbacks_serve_tasks_that_list_none(ctx, fake_llm):
    connection = save_connection({"name": "With fallbacks", "base_url": fake_llm.url, "api_key": "sk-with-fallbacks",
                                  "fallbacks": [{"model": FALLBACK, "connection_id": None}]})
    fail(fake_llm, "404")
    execution = run(make_task("Connection list", connection_id=connection.id))
    assert execution.status == "success", execution.error
    assert (execution.answered_model, execution.answered_connection_id) == (FALLBACK, connection.id)
    # A task's own list wins over its connection's.
    fake_llm.reset()
    fail(fake_llm, "404")
    execution = run(make_task("Own list", [{"model": "gpt-4o", "connection_id": None}], connection_id=connection.id))
    assert execution.answered_model == "gpt-4o"
    assert models_asked(fake_llm) == ["fake-model", "gpt-4o"]


def test_a_connection_fallback_repeating_the_tasks_own_model_is_left_out(ctx, fake_llm):
    connection = save_connection({"name": "Repeats", "base_url": fake_llm.url, "api_key": "sk-repeats",
                                  "fallbacks": [{"model": "fake-model", "connection_id": None}]})
    fail(fake_llm, "404")
    execution = run(make_task("Same model", connection_id=connection.id))
    assert execution.status == "failed" and execution.error_class == "NotFoundError"
    assert models_asked(fake_llm) == ["fake-model"]


def test_structured_output_asks_each_fallback_as_it_can_answer(ctx, fake_llm):
    """The JSON-mode memory is per server and model: a fallback that refuses json_schema is asked in JSON
    mode, and the refusal (a 400) is no reason to fall back further."""
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    fail(fake_llm, "404")
    fake_llm.queue_responses([{"model": JSON_MODE_ONLY_MODEL, "content": '{"echo": "fine"}'}])
    execution = run(make_task("Structured", [{"model": JSON_MODE_ONLY_MODEL, "connection_id": None},
                                             {"model": FALLBACK, "connection_id": None}], output_schema=schema))
    assert execution.status == "success", execution.error
    assert execution.answered_model == JSON_MODE_ONLY_MODEL and execution.parsed_output == {"echo": "fine"}
    formats = [(r["model"], (r["response_format"] or {}).get("type")) for r in fake_llm.requests]
    assert formats == [("fake-model", "json_schema"), (JSON_MODE_ONLY_MODEL, "json_schema"),
                       (JSON_MODE_ONLY_MODEL, "json_object")]


def test_the_runs_time_limit_bounds_the_fallbacks(ctx, fake_llm):
    """A primary that uses up the run's time leaves none for its fallback."""
    execution = run(make_task("Slow [[sleep:8]]", [{"model": FALLBACK, "connection_id": None}],
                              max_run_seconds=5, request_timeout_seconds=30, max_attempts=1))
    assert execution.status == "failed" and execution.error_class == "APITimeoutError"
    assert models_asked(fake_llm) == ["fake-model"]


def test_a_configuration_error_does_not_fall_back(ctx, fake_llm):
    """A connection without a URL or a key cannot be called; another connection's model is not asked instead."""
    unusable = save_connection({"name": "No URL, no key"})
    working = save_connection({"name": "Working", "base_url": fake_llm.url, "api_key": "sk-working"})
    execution = run(make_task("Misconfigured", [{"model": FALLBACK, "connection_id": working.id}],
                              connection_id=unusable.id))
    assert execution.status == "failed" and execution.error_class == "ConfigurationError"
    assert models_asked(fake_llm) == []


def test_a_fallback_whose_key_cannot_be_decrypted_fails_the_run_when_reached(ctx, fake_llm):
    broken = save_connection({"name": "Broken key", "base_url": fake_llm.url, "api_key": "sk-broken"})
    broken.api_key_encrypted = "not a fernet token"
    db.session.commit()
    fail(fake_llm, "404")
    execution = run(make_task("Undecryptable", [{"model": FALLBACK, "connection_id": broken.id},
                                                {"model": "gpt-4o", "connection_id": None}]))
    assert execution.status == "failed" and execution.error_class == "CryptoError"
    assert models_asked(fake_llm) == ["fake-model"]


def test_a_fallback_on_a_deleted_connection_is_left_out(ctx, fake_llm):
    gone = save_connection({"name": "Soon gone", "base_url": fake_llm.url, "api_key": "sk-soon-gone"})
    task_id = make_task("Deleted route", [{"model": FALLBACK, "connection_id": gone.id},
                                          {"model": "gpt-4o", "connection_id": None}])
    db.session.delete(gone)
    db.session.commit()
    fail(fake_llm, "404")
    execution = run(task_id)
    assert execution.status == "success" and execution.answered_model == "gpt-4o"
    assert models_asked(fake_llm) == ["fake-model", "gpt-4o"]
