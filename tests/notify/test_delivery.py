"""Deliveries after real runs: a signed webhook to a verifying receiver, Slack text, email to a real SMTP server,
failures retried and recorded in the ledger without touching the run, resend, deleted channels."""
import json
import time

import pytest
from standardwebhooks import Webhook

from promptbeat.extensions import db
from promptbeat.models import Delivery, Execution
from tests.notify.conftest import drain, make_task, run_once
from tests.receivers import Answer


def create_channel(api, **body):
    response = api.post("/channels", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def deliveries_of(api, task_id, run_id):
    (run,) = [e for e in api.get(f"/tasks/{task_id}/executions").get_json()["executions"] if e["id"] == run_id]
    return run["deliveries"]


def test_a_signed_webhook_reaches_a_receiver_that_verifies_it(app, api, fake_llm, receivers, redis_client):
    hook = receivers()
    channel = create_channel(api, name="Signed", kind="webhook", url=hook.url + "/hook")
    assert channel["secret"].startswith("whsec_") and channel["has_secret"]
    assert "secret" not in api.get(f"/channels/{channel['id']}").get_json()
    task_id = make_task(app, [channel["id"]], prompt="Signed report")
    run_id, status = run_once(app, task_id)
    assert status == "success" and hook.requests == []  # nothing is sent from inside the run
    drain(app, redis_client)
    (request,) = hook.requests
    body = Webhook(channel["secret"]).verify(request.body, request.headers)
    assert body["output"] == "echo: Signed report" and body["run"]["id"] == run_id and body["notify"] == ["every"]
    with pytest.raises(Exception, match="signature"):
        Webhook(channel["secret"]).verify(request.body.replace(b"Signed", b"Forged"), request.headers)
    (delivery,) = deliveries_of(api, task_id, run_id)
    assert (delivery["channel_id"], delivery["status"], delivery["attempts"], delivery["code"]) == (
        channel["id"], "delivered", 1, 200)


def test_slack_channels_get_text(app, api, fake_llm, receivers, redis_client):
    hook = receivers()
    channel = create_channel(api, name="Slack", kind="slack", url=hook.url + "/slack")
    assert "secret" not in channel
    run_once(app, make_task(app, [channel["id"]], prompt="Slack it"))
    drain(app, redis_client)
    (request,) = hook.requests
    body = json.loads(request.body)
    assert set(body) == {"text"} and "*Notified*" in body["text"] and "echo: Slack it" in body["text"]


def test_an_email_arrives_with_text_and_html_parts_and_the_output_escaped(app, api, fake_llm, smtp_server,
                                                                           redis_client):
    smtp = smtp_server()
    channel = create_channel(api, name="Mail", kind="email", to=["ops@example.com", "lead@example.com"])
    task_id = make_task(app, [channel["id"]], prompt="<b>bold</b> & <script>x</script>")
    run_id, _ = run_once(app, task_id)
    with app.app_context():
        # The change-detection step writes the diff in the run's finishing UPDATE; set here as it would be.
        db.session.get(Execution, run_id).diff = "-<i>old</i>\n+<b>new</b>"
        db.session.commit()
    drain(app, redis_client)
    ((sender, recipients, message),) = smtp.mailbox.messages
    assert (sender, recipients) == ("promptbeat@example.com", ["ops@example.com", "lead@example.com"])
    assert message["Subject"] == "[promptbeat] Notified: success"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    page = message.get_body(("html",)).get_content()
    assert "echo: <b>bold</b> & <script>x</script>" in text and "+<b>new</b>" in text
    assert "echo: &lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;" in page
    assert "+&lt;b&gt;new&lt;/b&gt;" in page and "<script>" not in page and "<b>new" not in page
    (delivery,) = deliveries_of(api, task_id, run_id)
    assert (delivery["status"], delivery["code"]) == ("delivered", 250)


def test_a_refusing_smtp_server_is_recorded_and_the_run_is_untouched(app, api, fake_llm, smtp_server,
                                                                      redis_client):
    smtp_server(refuse="554 5.7.1 Message rejected as spam")
    channel = create_channel(api, name="Refused", kind="email", to=["ops@example.com"])
    task_id = make_task(app, [channel["id"]])
    run_id, status = run_once(app, task_id)
    drain(app, redis_client)
    (delivery,) = deliveries_of(api, task_id, run_id)
    # A 5xx reply is final: not tried again.
    assert (delivery["status"], delivery["attempts"], delivery["code"]) == ("failed", 1, 554)
    assert "Message rejected as spam" in delivery["detail"]
    run = api.get(f"/tasks/{task_id}/executions").get_json()["executions"][0]
    assert (status, run["status"], run["error"]) == ("success", "success", None)


def test_a_temporary_smtp_refusal_is_retried(app, api, fake_llm, smtp_server, redis_client):
    smtp_server(refuse="451 4.7.1 Greylisted, try again later")
    channel = create_channel(api, name="Greylisted", kind="email", to=["ops@example.com"])
    task_id = make_task(app, [channel["id"]])
    run_id, _ = run_once(app, task_id)
    ran = drain(app, redis_client)
    attempts = app.config["PROMPTBEAT"].delivery_attempts
    assert [queued.countdown for queued in ran] == [False] + [True] * (attempts - 1)
    with app.app_context():
        rows = db.session.execute(db.select(Delivery).filter_by(execution_id=run_id).order_by(Delivery.id)).scalars()
        assert [(r.attempt, r.status, r.code) for r in rows] == (
            [(n, "retrying", 451) for n in range(1, attempts)] + [(attempts, "failed", 451)])


def test_an_unreachable_webhook_is_retried_with_backoff_and_never_delays_or_fails_the_run(
        app, api, client, fake_llm, redis_client, swap_settings, monkeypatch):
    swap_settings(delivery_attempts=4, delivery_retry_seconds=30)
    channel = create_channel(api, name="Closed port", kind="webhook", url="http://127.0.0.1:9/hook")
    task_id = make_task(app, [channel["id"]])
    started = time.monotonic()
    run_id, status = run_once(app, task_id)
    assert status == "success" and time.monotonic() - started < 5
    with app.app_context():
        assert db.session.execute(db.select(Delivery)).first() is None  # queued, not attempted, in the run
    countdowns = []
    from promptbeat.notify import dispatch
    real_send = dispatch.send_attempt

    def recording(*args, countdown=None, **kwargs):
        countdowns.append(countdown)
        return real_send(*args, countdown=countdown, **kwargs)

    monkeypatch.setattr(dispatch, "send_attempt", recording)
    drain(app, redis_client)
    assert countdowns == [30, 60, 120]
    (delivery,) = deliveries_of(api, task_id, run_id)
    assert (delivery["status"], delivery["attempts"], delivery["code"]) == ("failed", 4, None)
    assert "ConnectError" in delivery["detail"]
    assert api.get(f"/tasks/{task_id}").get_json()["last_run"]["status"] == "success"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'promptbeat_delivery_attempts_total{kind="webhook",status="failed"} 1.0' in metrics
    assert 'promptbeat_delivery_attempts_total{kind="webhook",status="retrying"} 3.0' in metrics


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (410, 1), (429, 3), (503, 3)])
def test_only_timeouts_throttles_and_server_errors_are_retried(app, api, fake_llm, receivers, redis_client,
                                                               swap_settings, status, attempts):
    swap_settings(delivery_attempts=3)
    hook = receivers(lambda received: Answer(status))
    channel = create_channel(api, name="Answers", kind="webhook", url=hook.url)
    task_id = make_task(app, [channel["id"]])
    run_id, _ = run_once(app, task_id)
    drain(app, redis_client)
    assert len(hook.requests) == attempts
    # The same message id on every attempt: a receiver can drop repeats.
    assert len({request.headers["webhook-id"] for request in hook.requests}) == 1
    (delivery,) = deliveries_of(api, task_id, run_id)
    assert (delivery["status"], delivery["attempts"], delivery["code"]) == ("failed", attempts, status)


def test_a_redirect_is_not_followed(app, api, fake_llm, receivers, redis_client):
    inside = receivers()
    hook = receivers(lambda received: Answer(307, headers=(("Location", inside.url),)))
    channel = create_channel(api, name="Redirect", kind="webhook", url=hook.url)
    task_id = make_task(app, [channel["id"]])
    run_id, _ = run_once(app, task_id)
    drain(app, redis_client)
    assert inside.requests == []
    assert deliveries_of(api, task_id, run_id)[0]["code"] == 307


def test_resend_delivers_a_finished_run_again(app, api, fake_llm, receivers, redis_client):
    hook = receivers()
    channel = create_channel(api, name="Again", kind="webhook", url=hook.url)
    task_id = make_task(app, [channel["id"]], notify_on=[])
    run_id, _ = run_once(app, task_id)
    assert drain(app, redis_client) == []  # no rule: nothing sent
    response = api.post(f"/executions/{run_id}/resend")
    assert response.status_code == 202 and response.get_json() == {"execution_id": run_id,
                                                                    "channel_ids": [channel["id"]]}
    drain(app, redis_client)
    (request,) = hook.requests
    assert Webhook(channel["secret"]).verify(request.body, request.headers)["notify"] == ["resend"]
    assert deliveries_of(api, task_id, run_id)[0]["status"] == "delivered"


def test_resend_is_refused_for_a_run_not_finished_or_a_task_without_channels(app, api):
    task = api.post("/tasks", json={"name": "Bare", "prompt": "p", "schedule_type": "crontab", "cron": "0 9 * * *"})
    task_id = task.get_json()["id"]
    queued = api.post(f"/tasks/{task_id}/run").get_json()["execution"]
    response = api.post(f"/executions/{queued['id']}/resend")
    assert response.status_code == 409 and "finished" in response.get_json()["message"]
    with app.app_context():
        db.session.get(Execution, queued["id"]).status = "success"
        db.session.commit()
    response = api.post(f"/executions/{queued['id']}/resend")
    assert response.status_code == 409 and "no channels" in response.get_json()["message"]
    assert api.post("/executions/999999/resend").status_code == 404


def test_a_deleted_channel_stays_in_the_ledger_under_its_name(app, api, fake_llm, receivers, redis_client):
    hook = receivers()
    channel = create_channel(api, name="Short-lived", kind="webhook", url=hook.url)
    task_id = make_task(app, [channel["id"]])
    run_id, _ = run_once(app, task_id)
    assert api.delete(f"/channels/{channel['id']}").status_code == 204
    drain(app, redis_client)  # its queued delivery finds no channel and is dropped
    assert hook.requests == [] and deliveries_of(api, task_id, run_id) == []
    channel = create_channel(api, name="Kept", kind="webhook", url=hook.url)
    with app.app_context():
        from promptbeat.models import Channel, Task
        db.session.get(Task, task_id).channels = [db.session.get(Channel, channel["id"])]
        db.session.commit()
    assert api.post(f"/executions/{run_id}/resend").status_code == 202
    drain(app, redis_client)
    assert api.delete(f"/channels/{channel['id']}").status_code == 204
    (delivery,) = deliveries_of(api, task_id, run_id)
    assert (delivery["channel_id"], delivery["channel"], delivery["status"]) == (None, "Kept", "delivered")
    assert api.get(f"/tasks/{task_id}").get_json()["channel_ids"] == []


def test_email_without_an_smtp_server_configured_fails_once_with_a_message(app, api, fake_llm, redis_client,
                                                                           swap_settings):
    swap_settings(smtp_host=None, smtp_from=None)
    channel = create_channel(api, name="Unconfigured", kind="email", to=["ops@example.com"])
    task_id = make_task(app, [channel["id"]])
    run_id, status = run_once(app, task_id)
    assert len(drain(app, redis_client)) == 1
    (delivery,) = deliveries_of(api, task_id, run_id)
    assert (status, delivery["status"], delivery["attempts"]) == ("success", "failed", 1)
    assert "PROMPTBEAT_SMTP_HOST" in delivery["detail"]
