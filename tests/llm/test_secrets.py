"""A connection's key never comes back: not in API bodies, pages, nor the error of a failed connection test.

Bodies are checked as raw text, so a key, its encrypted column or any Fernet token is found under any name.
"""
import re
import secrets

import pytest

from promptbeat.extensions import db
from promptbeat.models import Connection
from tests.conftest import csrf_token
from tests.receivers import Answer, Receiver

# Every Fernet token starts with the version byte 0x80 and a timestamp: "gAAAAA" in URL-safe base64.
FERNET_TOKEN = re.compile(r"gAAAAA[A-Za-z0-9_=-]{20,}")


def assert_no_secret(text, *keys, stored=()):
    assert "api_key_encrypted" not in text
    for secret in (*keys, *stored):
        assert secret not in text, "a key or its ciphertext is in the answer"
    assert not FERNET_TOKEN.search(text), "a Fernet token is in the answer"


def stored_ciphertext(app, connection_id):
    with app.app_context():
        value = db.session.get(Connection, connection_id).api_key_encrypted
        db.session.remove()
        return value


def test_connection_bodies_never_carry_the_key_or_its_ciphertext(app, api, signed_in):
    first_key, second_key = "sk-first-" + secrets.token_hex(12), "sk-second-" + secrets.token_hex(12)
    created = api.post("/connections", json={"name": "Keyed", "base_url": "http://127.0.0.1:9/v1",
                                              "api_key": first_key})
    assert created.status_code == 201, created.get_json()
    connection_id = created.get_json()["id"]
    first_stored = stored_ciphertext(app, connection_id)
    assert first_stored and FERNET_TOKEN.fullmatch(first_stored)  # the pattern finds what is really stored
    updated = api.patch(f"/connections/{connection_id}", json={"name": "Rekeyed", "api_key": second_key})
    assert updated.status_code == 200, updated.get_json()
    second_stored = stored_ciphertext(app, connection_id)
    assert second_stored != first_stored
    renamed = api.patch(f"/connections/{connection_id}", json={"name": "Renamed"})
    answers = {"create": created, "update with a key": updated, "update": renamed,
               "list": api.get("/connections"), "get": api.get(f"/connections/{connection_id}"),
               "page": signed_in.get("/connections/")}
    for name, response in answers.items():
        assert response.status_code == 200 or (name == "create" and response.status_code == 201), name
        assert_no_secret(response.get_data(as_text=True), first_key, second_key,
                         stored=(first_stored, second_stored))
    assert renamed.get_json()["has_api_key"] is True


@pytest.fixture
def key_echoing_server():
    """An OpenAI-compatible endpoint that refuses every key and, as some servers do, quotes it back."""

    def refuse(received):
        key = received.headers.get("authorization", "").partition(" ")[2]
        return Answer(401, {"error": {"message": f"Incorrect API key provided: {key}. Check it.",
                                      "type": "invalid_request_error", "code": "invalid_api_key"}})

    server = Receiver(refuse)
    yield server
    server.stop()


def test_a_failed_connection_test_never_shows_the_key(api, signed_in, key_echoing_server):
    key = "sk-echoed-" + secrets.token_hex(12)
    connection_id = api.post("/connections", json={"name": "Echoing", "base_url": key_echoing_server.url + "/v1",
                                                   "api_key": key}).get_json()["id"]

    through_api = api.post(f"/connections/{connection_id}/test")
    assert through_api.status_code == 200
    outcome = through_api.get_json()
    assert outcome["ok"] is False and outcome["error_class"] == "AuthenticationError"
    assert "Incorrect API key provided" in outcome["message"]  # the server's words are shown, the key is not
    assert_no_secret(through_api.get_data(as_text=True), key)

    page = signed_in.get("/connections/").get_data(as_text=True)
    through_page = signed_in.post(f"/connections/{connection_id}/test", data={"csrf_token": csrf_token(page)},
                                  follow_redirects=True)
    html = through_page.get_data(as_text=True)
    assert "Incorrect API key provided" in html
    assert_no_secret(html, key)
    # Both tests reached the server with the key, so the key was there to be echoed and was masked.
    sent = [r for r in key_echoing_server.requests if r.path == "/v1/models"]
    assert len(sent) == 2 and all(r.headers["authorization"] == f"Bearer {key}" for r in sent)
