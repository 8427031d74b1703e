"""Webhook delivery rules, against real receivers on 127.0.0.1: no redirects followed, which answers are retried."""
import dataclasses

import pytest

from promptbeat.runs import delivery
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from promptbeat.settings import Settings
from tests.receivers import Answer, Receiver
from tests.runner import run_and_reload

SETTINGS = Settings(secret_key="webhook-rules", webhook_allow_private=True, webhook_attempts=3,
                    webhook_timeout_seconds=5)


@pytest.fixture
def receivers():
    started = []

    def start(status=200, headers=()):
        started.append(Receiver(lambda received: Answer(status, headers=headers)))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(receivers, status):
    # A redirect could send the payload on to an address the guard never checked (SSRF).
    target = receivers()
    hook = receivers(status, headers=(("Location", target.url + "/elsewhere"),))
    outcome, attempts = delivery.deliver(hook.url + "/hook", {"text": "x"}, SETTINGS, sleep=lambda seconds: None)
    assert target.requests == []
    assert outcome == "failed"
    assert hook.requests and {a.get("status") for a in attempts} == {status}


def test_a_run_whose_webhook_redirects_records_a_failed_delivery(app, fake_llm, receivers):
    target = receivers()
    hook = receivers(302, headers=(("Location", target.url + "/elsewhere"),))
    with app.app_context():
        task = Task(name="Redirected", prompt="Hello", model="fake-model", schedule_type="interval",
                    interval_seconds=600, webhook_url=hook.url + "/hook")
        db.session.add(task)
        db.session.commit()
        run_id = run_and_reload(task.id, trigger="manual", sleep=lambda seconds: None).id
        db.session.remove()
        execution = db.session.get(Execution, run_id)
        assert execution.status == "success" and execution.webhook_status == "failed"
        assert {a.get("status") for a in execution.webhook_attempts} == {302}
    assert target.requests == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 413, 422])
def test_a_refusal_is_not_retried(receivers, status):
    # The receiver rejects this payload; sending it again would get the same answer.
    hook = receivers(status)
    outcome, attempts = delivery.deliver(hook.url + "/hook", {"text": "x"}, SETTINGS, sleep=lambda seconds: None)
    assert (outcome, len(hook.requests)) == ("failed", 1)
    assert [a["status"] for a in attempts] == [status]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_a_timeout_throttle_or_server_error_is_retried(receivers, status):
    hook = receivers(status)
    outcome, attempts = delivery.deliver(hook.url + "/hook", {"text": "x"}, SETTINGS, sleep=lambda seconds: None)
    assert (outcome, len(hook.requests)) == ("failed", SETTINGS.webhook_attempts)
    assert [a["status"] for a in attempts] == [status] * SETTINGS.webhook_attempts


def test_a_retried_delivery_stops_at_the_first_success():
    answers = iter([503, 429, 200])
    hook = Receiver(lambda received: Answer(next(answers)))
    try:
        settings = dataclasses.replace(SETTINGS, webhook_attempts=5)
        outcome, attempts = delivery.deliver(hook.url + "/hook", {"text": "x"}, settings, sleep=lambda seconds: None)
    finally:
        hook.stop()
    assert (outcome, [a["status"] for a in attempts]) == ("delivered", [503, 429, 200])
    assert len(hook.requests) == 3
