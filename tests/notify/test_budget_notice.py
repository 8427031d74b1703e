"""A budget stop reaches the channels whose rules ask for it, through a real receiver, and shows in the metrics."""
from standardwebhooks import Webhook

from tests.notify.conftest import drain, make_task, run_once


def create_channel(api, **body):
    response = api.post("/channels", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_budget_stop_is_delivered_to_a_channel_that_asks_for_it(app, api, client, fake_llm, receivers,
                                                                  redis_client):
    fake_llm.reset()
    hook = receivers()
    channel = create_channel(api, name="Spend", kind="webhook", url=hook.url + "/hook")
    told = make_task(app, [channel["id"]], notify_on=["budget"], budget_tokens_day=10)
    silent = make_task(app, [channel["id"]], notify_on=["every", "failure"], budget_tokens_day=10)
    run_id, status = run_once(app, told)
    assert status == "skipped"
    assert run_once(app, silent)[1] == "skipped"  # a budget stop is no failure, and skipped runs are no "every"
    drain(app, redis_client)
    (request,) = hook.requests
    body = Webhook(channel["secret"]).verify(request.body, request.headers)
    assert (body["run"]["id"], body["status"], body["error_class"], body["notify"]) == (
        run_id, "skipped", "budget_exceeded", ["budget"])
    assert body["error"].startswith("Budget exceeded: the task's daily budget")
    assert fake_llm.requests == []
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'promptbeat_budget_stops_total{trigger="scheduled"} 2.0' in metrics
    assert 'promptbeat_budget_stops_total{trigger="manual"} 0.0' in metrics


def test_a_task_paused_by_its_budget_tells_the_auto_pause_channels(app, api, fake_llm, receivers, redis_client):
    hook = receivers()
    channel = create_channel(api, name="Paused", kind="webhook", url=hook.url + "/hook")
    task_id = make_task(app, [channel["id"]], notify_on=["auto_pause"], budget_usd_month=0.0, pause_on_budget=True)
    run_once(app, task_id)
    drain(app, redis_client)
    (request,) = hook.requests
    assert Webhook(channel["secret"]).verify(request.body, request.headers)["notify"] == ["auto_pause"]
    task = api.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "paused" and task["pause_note"].startswith("Paused automatically: Budget exceeded")


def test_a_budget_stop_is_mailed_with_the_budget_named(app, api, fake_llm, smtp_server, redis_client):
    smtp = smtp_server()
    channel = create_channel(api, name="Mail", kind="email", to=["ops@example.com"])
    task_id = make_task(app, [channel["id"]], notify_on=["budget"], budget_usd_day=0.0)
    run_once(app, task_id)
    drain(app, redis_client)
    ((_, recipients, message),) = smtp.mailbox.messages
    assert recipients == ["ops@example.com"] and message["Subject"] == "[promptbeat] Notified: skipped"
    text = message.get_body(("plain",)).get_content()
    assert "Notified on: budget" in text and "the task's daily budget" in text and "in USD" in text


def test_a_batch_runs_budget_stop_is_delivered_too(app, api, fake_llm, receivers, redis_client):
    fake_llm.reset()
    hook = receivers()
    channel = create_channel(api, name="Batch spend", kind="webhook", url=hook.url + "/hook")
    task_id = make_task(app, [channel["id"]], notify_on=["budget"], budget_tokens_day=10, batch=True)
    run_id, status = run_once(app, task_id)
    assert status == "skipped"
    drain(app, redis_client)
    (request,) = hook.requests
    body = Webhook(channel["secret"]).verify(request.body, request.headers)
    assert (body["run"]["id"], body["error_class"], body["notify"]) == (run_id, "budget_exceeded", ["budget"])
    assert fake_llm.requests == []
