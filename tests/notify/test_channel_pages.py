"""The Channels page and deliveries on a task's page, as an admin and a viewer see them, in English and Chinese."""
import re

from promptbeat.extensions import db
from promptbeat.models import Channel
from tests.conftest import csrf_token, issue_api_token
from tests.notify.conftest import drain, make_task, run_once


def post_form(client, path, **data):
    token = csrf_token(client.get("/channels/").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **data})


def test_an_admin_adds_a_webhook_and_sees_its_secret_once(app, signed_in):
    response = post_form(signed_in, "/channels/", name="Ops hook", kind="webhook", url="http://127.0.0.1:9/hook")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    (secret,) = re.findall(r"<code>(whsec_[A-Za-z0-9+/=]+)</code>", page)
    with app.app_context():
        channel = db.session.execute(db.select(Channel)).scalar_one()
        assert channel.name == "Ops hook" and secret not in (channel.secret_encrypted or "")
    again = signed_in.get("/channels/").get_data(as_text=True)
    assert secret not in again and "Ops hook" in again and "signed" in again


def test_email_recipients_one_per_line_and_errors_at_the_field(app, signed_in):
    refused = post_form(signed_in, "/channels/", name="Mail", kind="email", to="ops@example.com\nnot an address")
    assert refused.status_code == 422 and "Each address must be a plain address" in refused.get_data(as_text=True)
    saved = post_form(signed_in, "/channels/", name="Mail", kind="email", to="ops@example.com\nlead@example.com")
    assert saved.status_code == 302
    with app.app_context():
        assert db.session.execute(db.select(Channel.recipients)).scalar_one() == ["ops@example.com",
                                                                                 "lead@example.com"]


def test_a_viewer_sees_channels_but_no_forms_and_changes_nothing(app, api, client):
    channel = api.post("/channels", json={"name": "Seen", "kind": "slack", "url": "http://127.0.0.1:9/s"}).get_json()
    issue_api_token(app, email="viewer@example.com", role="viewer")
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"email": "viewer@example.com", "password": "correct horse battery",
                                "csrf_token": csrf_token(page)})
    page = client.get("/channels/").get_data(as_text=True)
    assert "Seen" in page and "/channels/" not in re.findall(r'<form method="post" action="([^"]+)"', page)
    token = csrf_token(client.get("/account").get_data(as_text=True))
    assert client.post(f"/channels/{channel['id']}/delete", data={"csrf_token": token}).status_code == 403


def test_the_task_page_shows_deliveries_and_resends_in_chinese(app, api, signed_in, fake_llm, redis_client):
    channel = api.post("/channels", json={"name": "Closed", "kind": "webhook",
                                          "url": "http://127.0.0.1:9/hook"}).get_json()
    task_id = make_task(app, [channel["id"]])
    run_id, _ = run_once(app, task_id)
    drain(app, redis_client)
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'data-status="failed"' in page and "delivery failed" in page and "Resend" in page
    chinese = signed_in.get(f"/tasks/{task_id}", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "投递失败" in chinese and "重新发送" in chinese
    token = csrf_token(page)
    response = signed_in.post(f"/tasks/{task_id}/runs/{run_id}/resend", data={"csrf_token": token})
    assert response.status_code == 302
    assert "is being sent again to 1 channel(s)" in signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert len(drain(app, redis_client)) == app.config["PROMPTBEAT"].delivery_attempts
