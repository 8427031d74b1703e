"""Webhooks: a receiver on 127.0.0.1 gets the payload; failures are retried and recorded; private targets refused."""
import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from promptbeat import webhooks
from promptbeat.execution import run_execution
from promptbeat.extensions import db
from promptbeat.models import Execution, Task


class Receiver:
    """An HTTP receiver that answers `failures` 500s first, then 200, and keeps every body."""

    def __init__(self, failures=0):
        self.bodies, self.failures = [], failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status = 500 if len(receiver.bodies) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(failures=0):
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def run_with_webhook(app, prompt, url, kind="json"):
    with app.app_context():
        task = Task(name="Hooked", prompt=prompt, model="fake-model", schedule_type="interval",
                    interval_seconds=600, webhook_url=url, webhook_format=kind)
        db.session.add(task)
        db.session.commit()
        run_id = run_execution(task.id, trigger="manual", sleep=lambda s: None).id
        db.session.remove()
        return db.session.get(Execution, run_id)


def test_receiver_gets_the_json_payload(app, fake_llm, receiver):
    hook = receiver()
    with app.app_context():
        execution = run_with_webhook(app, "Report please", hook.url)
        (body,) = hook.bodies
        assert body["task"]["name"] == "Hooked"
        assert body["run"]["id"] == execution.id and body["status"] == "success"
        assert body["output"] == "echo: Report please"
        assert body["usage"]["total_tokens"] == execution.total_tokens and body["usage"]["cost_usd"] > 0
        assert execution.webhook_status == "delivered"


def test_slack_format_sends_text(app, fake_llm, receiver):
    hook = receiver()
    run_with_webhook(app, "Slack it", hook.url, kind="slack")
    (body,) = hook.bodies
    assert set(body) == {"text"} and "*Hooked*" in body["text"] and "echo: Slack it" in body["text"]


def test_failed_deliveries_are_retried_and_recorded(app, fake_llm, receiver):
    hook = receiver(failures=2)
    with app.app_context():
        execution = run_with_webhook(app, "Retry hook", hook.url)
        assert len(hook.bodies) == 3
        assert execution.webhook_status == "delivered"
        assert [a["status"] for a in execution.webhook_attempts] == [500, 500, 200]


def test_a_failing_webhook_never_fails_the_run(app, fake_llm, receiver):
    hook = receiver(failures=99)
    with app.app_context():
        execution = run_with_webhook(app, "Hook down", hook.url)
        assert execution.status == "success" and execution.webhook_status == "failed"
        assert len(execution.webhook_attempts) == app.config["PROMPTBEAT"].webhook_attempts


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "ftp://example.com/x"])
def test_private_targets_are_refused_at_save_and_at_delivery(app, api, url):
    original = app.config["PROMPTBEAT"]
    app.config["PROMPTBEAT"] = strict = dataclasses.replace(original, webhook_allow_private=False)
    try:
        response = api.post("/tasks", json={"name": "SSRF", "prompt": "x", "schedule_type": "crontab",
                                            "cron": "0 9 * * *", "webhook_url": url})
        assert response.status_code == 422
        assert "webhook_url" in response.get_json()["fields"]
        status, attempts = webhooks.deliver(url, {"text": "x"}, strict)
        assert status == "refused" and len(attempts) == 1 and "error" in attempts[0]
    finally:
        app.config["PROMPTBEAT"] = original
