"""A real worker delivers after real runs: the signed webhook is verified, the email arrives, the run is not held up."""
import pytest
from standardwebhooks import Webhook

from tests.notify.conftest import WORKER_SMTP_ENV
from tests.receivers import Receiver
from tests.services import wait_for

pytestmark = pytest.mark.slow
# The worker sends mail to the module's SMTP server (tests/notify/conftest.py), and retries quickly.
WORKER_ENV = {**WORKER_SMTP_ENV, "PROMPTBEAT_DELIVERY_ATTEMPTS": "3", "PROMPTBEAT_DELIVERY_RETRY_SECONDS": "0.5"}


@pytest.fixture
def receiver():
    hook = Receiver()
    yield hook
    hook.stop()


@pytest.mark.parametrize("live_roles", [WORKER_ENV], indirect=True)
def test_a_worker_delivers_by_signed_webhook_and_email_and_retries_a_dead_one(app, api, fake_llm, mailbox, receiver,
                                                                             live_roles):
    hook = api.post("/channels", json={"name": "Live hook", "kind": "webhook", "url": receiver.url}).get_json()
    mail = api.post("/channels", json={"name": "Live mail", "kind": "email", "to": ["ops@example.com"]}).get_json()
    dead = api.post("/channels", json={"name": "Dead", "kind": "webhook", "url": "http://127.0.0.1:9/"}).get_json()
    task = api.post("/tasks", json={"name": "Live", "prompt": "Live report", "schedule_type": "crontab",
                                    "cron": "0 9 * * *", "enabled": False, "notify_on": ["every"],
                                    "channel_ids": [hook["id"], mail["id"], dead["id"]]}).get_json()
    run_id = api.post(f"/tasks/{task['id']}/run").get_json()["execution"]["id"]

    def run():
        return next(e for e in api.get(f"/tasks/{task['id']}/executions").get_json()["executions"] if e["id"] == run_id)

    def settled():
        deliveries = {d["channel"]: d for d in run()["deliveries"]}
        return len(deliveries) == 3 and all(d["status"] != "retrying" for d in deliveries.values()) and deliveries

    deliveries = wait_for(settled, 60, "three deliveries settled")
    assert run()["status"] == "success"
    (request,) = receiver.requests
    assert Webhook(hook["secret"]).verify(request.body, request.headers)["output"] == "echo: Live report"
    ((_, recipients, message),) = mailbox.messages
    assert recipients == ["ops@example.com"] and "echo: Live report" in message.get_body(("plain",)).get_content()
    assert [(deliveries[name]["status"], deliveries[name]["attempts"]) for name in ("Live hook", "Live mail", "Dead")] \
        == [("delivered", 1), ("delivered", 1), ("failed", 3)]
