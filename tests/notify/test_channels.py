"""Channels through the API: write-only secrets, refused targets and addresses, and what viewers may do."""
import base64
import logging

import pytest

from promptbeat.extensions import db
from promptbeat.llm import crypto
from promptbeat.models import Channel
from tests.conftest import issue_api_token


def test_a_webhook_gets_a_standard_webhooks_secret_once(app, api):
    created = api.post("/channels", json={"name": "Hook", "kind": "webhook", "url": "https://hooks.example.com/a"})
    assert created.status_code == 201
    channel = created.get_json()
    assert channel["secret"].startswith("whsec_") and len(base64.b64decode(channel["secret"][6:])) == 32
    listed = api.get("/channels").get_json()["channels"]
    assert channel["secret"] not in str(listed) and channel["secret"] not in api.get(f"/channels/{channel['id']}").get_data(
        as_text=True)
    with app.app_context():
        stored = db.session.get(Channel, channel["id"]).secret_encrypted
        assert channel["secret"] not in stored and crypto.decrypt(app.config["PROMPTBEAT"], stored) == channel["secret"]
    renamed = api.patch(f"/channels/{channel['id']}", json={"name": "Renamed"}).get_json()
    assert "secret" not in renamed and renamed["has_secret"]
    rotated = api.patch(f"/channels/{channel['id']}", json={"secret": ""}).get_json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != channel["secret"]


def test_a_given_secret_is_kept_and_never_returned(api):
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    channel = api.post("/channels", json={"name": "Given", "kind": "webhook", "url": "https://hooks.example.com/b",
                                          "secret": secret}).get_json()
    assert "secret" not in channel and channel["has_secret"]


@pytest.mark.parametrize(("body", "field"), [
    ({"secret": "not-a-secret"}, "secret"),
    ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "secret"),
    ({"secret": "whsec_!!!"}, "secret"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "https://hooks.example.com/a\r\nX-Forged: 1"}, "url"),
    ({"url": "https://hooks.example.com/\x00"}, "url"),
    ({"kind": "pager"}, "kind"),
    ({"to": ["ops@example.com"]}, "to"),
])
def test_bad_webhook_fields_are_refused_and_nothing_is_saved(app, api, body, field):
    response = api.post("/channels", json={"name": "Bad", "kind": "webhook", "url": "https://hooks.example.com/a",
                                           **body})
    assert response.status_code == 422 and field in response.get_json()["fields"]
    assert api.get("/channels").get_json()["channels"] == []


@pytest.mark.parametrize("to", [
    ["ops@example.com\r\nBcc: everyone@example.com"],  # header injection
    ["ops@example.com\nBcc: everyone@example.com"],
    ["ops@example.com, everyone@example.com"],
    ["Ops <ops@example.com>"],
    ["ops@example.com\x00"],
    ["not an address"],
    ["ops@localhost"],
    [],
    ["a@example.com"] * 21,
    [f"user{n}@example.com" for n in range(10_000)],
    "ops@example.com",
])
def test_email_addresses_must_be_plain_and_few(api, to):
    response = api.post("/channels", json={"name": "Mail", "kind": "email", "to": to})
    assert response.status_code in (413, 422)
    if response.status_code == 422:
        assert "to" in response.get_json()["fields"]
    assert api.get("/channels").get_json()["channels"] == []


def test_an_email_channel_has_no_url_or_secret(api):
    response = api.post("/channels", json={"name": "Mail", "kind": "email", "to": ["ops@example.com"],
                                           "url": "https://hooks.example.com/a", "secret": "whsec_x"})
    assert response.status_code == 422 and set(response.get_json()["fields"]) == {"url", "secret"}
    ok = api.post("/channels", json={"name": "Mail", "kind": "email", "to": ["ops@example.com", "OPS@example.com"]})
    assert ok.status_code == 201 and ok.get_json()["to"] == ["ops@example.com"]  # the same address once


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/hook",
                                 "http://[::ffff:127.0.0.1]/hook", "http://[64:ff9b::7f00:1]/hook",
                                 "http://0.0.0.0:9/hook", "http://100.64.0.1/hook", "http://[::1/hook"])
def test_private_targets_are_refused_unless_allowed(api, swap_settings, url):
    swap_settings(webhook_allow_private=False)
    response = api.post("/channels", json={"name": "SSRF", "kind": "webhook", "url": url})
    assert response.status_code == 422 and "url" in response.get_json()["fields"]


def test_names_are_unique_and_kinds_fixed(api):
    first = api.post("/channels", json={"name": "One", "kind": "slack", "url": "https://hooks.example.com/s"})
    again = api.post("/channels", json={"name": "One", "kind": "slack", "url": "https://hooks.example.com/t"})
    assert again.status_code == 422 and again.get_json()["fields"] == {"name": "A channel with this name exists."}
    change = api.patch(f"/channels/{first.get_json()['id']}", json={"kind": "email"})
    assert change.status_code == 422 and "kind" in change.get_json()["fields"]


def test_viewers_read_channels_and_change_nothing(app, api, client):
    channel = api.post("/channels", json={"name": "Seen", "kind": "slack",
                                          "url": "https://hooks.example.com/s"}).get_json()
    viewer = {"Authorization": "Bearer " + issue_api_token(app, email="viewer@example.com", role="viewer")}
    assert client.get("/api/channels", headers=viewer).status_code == 200
    assert client.post("/api/channels", headers=viewer, json={"name": "x", "kind": "slack",
                                                               "url": "https://hooks.example.com/s"}).status_code == 403
    assert client.patch(f"/api/channels/{channel['id']}", headers=viewer, json={"name": "y"}).status_code == 403
    assert client.delete(f"/api/channels/{channel['id']}", headers=viewer).status_code == 403


def test_changes_are_audited_without_the_secret(api, caplog):
    with caplog.at_level(logging.INFO, logger="promptbeat.audit"):
        channel = api.post("/channels", json={"name": "Audited", "kind": "webhook",
                                              "url": "https://hooks.example.com/a"}).get_json()
        api.patch(f"/channels/{channel['id']}", json={"secret": ""})
        api.delete(f"/channels/{channel['id']}")
    actions = [line for line in caplog.messages if "action=channel_" in line]
    assert [line.split("action=")[1].split()[0] for line in actions] == ["channel_created", "channel_updated",
                                                                         "channel_deleted"]
    assert "whsec_" not in caplog.text


def test_rotate_keys_re_encrypts_channel_secrets(app, api, swap_settings):
    from cryptography.fernet import Fernet

    channel = api.post("/channels", json={"name": "Rotated", "kind": "webhook",
                                          "url": "https://hooks.example.com/a"}).get_json()
    old = app.config["PROMPTBEAT"].fernet_keys
    new = Fernet.generate_key().decode()
    swap_settings(fernet_keys=(new, *old))
    result = app.test_cli_runner().invoke(args=["rotate-keys"])
    assert result.exit_code == 0 and "re-encrypted 1 channel secret(s)" in result.output
    swap_settings(fernet_keys=(new,))
    with app.app_context():
        stored = db.session.get(Channel, channel["id"]).secret_encrypted
        assert crypto.decrypt(app.config["PROMPTBEAT"], stored) == channel["secret"]
