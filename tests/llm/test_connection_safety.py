"""Connections under attack: secrets never follow a URL, the address policy, header secrets, hostile input."""
import json
import logging
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from promptbeat.llm import connections
from promptbeat.llm import crypto
from promptbeat.llm import netguard
from promptbeat.extensions import db
from promptbeat.models import Connection, Execution, Task
from tests.conftest import csrf_token, issue_api_token
from tests.runner import run_and_reload

MODELS = json.dumps({"object": "list", "data": [{"id": "caught-model", "object": "model"}]}).encode()


class Catcher:
    """An HTTP server that records every request's path and headers and answers with one fixed body."""

    def __init__(self, body=MODELS, content_type="application/json", status=200, location=None):
        self.requests = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                catcher.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def catcher():
    made = []

    def make(**kwargs):
        made.append(Catcher(**kwargs))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def stored_rows(app):
    """Every connection row as stored, to compare before and after a refused change."""
    with app.app_context():
        rows = db.session.execute(db.select(Connection).order_by(Connection.id)).scalars().all()
        return [{c.name: getattr(row, c.name) for c in Connection.__table__.columns} for row in rows]


def secrets_seen(catcher, *values):
    return [value for value in values for _, headers in catcher.requests if value in " ".join(headers.values())]


# --- A connection's secrets never follow its URL to another server --------------------------------------

def test_moving_a_connection_to_another_server_needs_its_secrets_again(app, api, fake_llm, catcher):
    key, header = "sk-moving-" + secrets.token_hex(8), "hdr-" + secrets.token_hex(8)
    created = api.post("/connections", json={"name": "Moving", "base_url": fake_llm.url, "api_key": key,
                                             "extra_headers": {"X-Secret": header}}).get_json()
    path = f"/connections/{created['id']}"
    attacker = catcher()
    before = stored_rows(app)

    refused = api.patch(path, json={"base_url": attacker.url})
    assert refused.status_code == 422
    assert set(refused.get_json()["fields"]) == {"api_key", "extra_headers"}
    # Masked header values are not values: they would carry the stored ones along.
    masked = api.patch(path, json={"base_url": attacker.url, "api_key": "", "extra_headers": {"X-Secret": "••••"}})
    assert masked.status_code == 422 and set(masked.get_json()["fields"]) == {"extra_headers"}
    assert stored_rows(app) == before
    assert api.post(f"{path}/test").get_json()["ok"] is True  # still its own server, with its key
    assert attacker.requests == []

    moved = api.patch(path, json={"base_url": attacker.url, "api_key": "", "extra_headers": {}})
    assert moved.status_code == 200 and moved.get_json()["has_api_key"] is False
    assert api.post(f"{path}/test").get_json()["ok"] is True
    assert len(attacker.requests) == 1 and secrets_seen(attacker, key, header) == []


def test_a_new_path_on_the_same_server_keeps_the_key(app, api, fake_llm):
    created = api.post("/connections", json={"name": "Same host", "base_url": fake_llm.url,
                                             "api_key": "sk-same-host"}).get_json()
    moved = api.patch(f"/connections/{created['id']}", json={"base_url": fake_llm.url.replace("/v1", "/openai/v1")})
    assert moved.status_code == 200 and moved.get_json()["has_api_key"] is True
    port = fake_llm.port
    # Another scheme, host or port is another server.
    for other in (f"https://127.0.0.1:{port}/v1", f"http://localhost:{port}/v1", f"http://127.0.0.1:{port + 1}/v1"):
        answer = api.patch(f"/connections/{created['id']}", json={"base_url": other})
        assert answer.status_code == 422 and "api_key" in answer.get_json()["fields"], other


def test_the_page_moves_a_connection_only_with_its_key_given_again_or_removed(app, api, signed_in, fake_llm,
                                                                               catcher):
    key = "sk-page-move-" + secrets.token_hex(8)
    created = api.post("/connections", json={"name": "Paged", "base_url": fake_llm.url, "api_key": key}).get_json()
    attacker = catcher()
    page = signed_in.get("/connections/").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "name": "Paged", "base_url": attacker.url, "default_model": "",
            "api_key": ""}
    refused = signed_in.post(f"/connections/{created['id']}/edit", data=form)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "points to another server" in html and key not in html
    assert api.get(f"/connections/{created['id']}").get_json()["base_url"] == fake_llm.url

    moved = signed_in.post(f"/connections/{created['id']}/edit", data={**form, "remove_key": "1"},
                           follow_redirects=True).get_data(as_text=True)
    assert "no key" in moved and attacker.url in moved
    signed_in.post(f"/connections/{created['id']}/test", data={"csrf_token": csrf_token(moved)})
    assert len(attacker.requests) == 1 and secrets_seen(attacker, key) == []

    new_key = "sk-new-server-" + secrets.token_hex(8)
    signed_in.post(f"/connections/{created['id']}/edit", data={**form, "api_key": new_key})
    signed_in.post(f"/connections/{created['id']}/test", data={"csrf_token": csrf_token(moved)})
    assert secrets_seen(attacker, new_key) == [new_key]


def test_viewers_cannot_edit_a_connection_on_its_page(app, api, client, fake_llm):
    created = api.post("/connections", json={"name": "Viewed", "base_url": fake_llm.url}).get_json()
    issue_api_token(app, "viewer@example.com", "viewer password 1", role="viewer")
    login = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"email": "viewer@example.com", "password": "viewer password 1",
                                "csrf_token": csrf_token(login)})
    page = client.get("/connections/").get_data(as_text=True)
    assert f'action="/connections/{created["id"]}/edit"' not in page
    answer = client.post(f"/connections/{created['id']}/edit", data={
        "csrf_token": csrf_token(page), "name": "Taken", "base_url": "http://127.0.0.1:9/v1"})
    assert answer.status_code == 403
    assert api.get(f"/connections/{created['id']}").get_json()["name"] == "Viewed"


def test_viewers_cannot_change_test_or_delete_connections_through_the_api_or_the_page(app, api, client, fake_llm):
    created = api.post("/connections", json={"name": "Guarded", "base_url": fake_llm.url,
                                             "api_key": "sk-guarded"}).get_json()
    before = stored_rows(app)
    viewer = {"Authorization": f"Bearer {issue_api_token(app, 'v@example.com', 'viewer password 1', 'viewer')}"}
    path = f"/api/connections/{created['id']}"
    answers = [client.patch(path, json={"name": "Taken"}, headers=viewer), client.delete(path, headers=viewer),
               client.post(f"{path}/test", headers=viewer),
               client.post("/api/connections", json={"name": "New", "base_url": fake_llm.url}, headers=viewer)]
    login = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"email": "v@example.com", "password": "viewer password 1",
                                "csrf_token": csrf_token(login)})
    token = csrf_token(client.get("/connections/").get_data(as_text=True))
    for action in ("delete", "test", "edit"):
        answers.append(client.post(f"/connections/{created['id']}/{action}", data={"csrf_token": token,
                                                                                    "name": "Taken"}))
    answers.append(client.post("/connections/", data={"csrf_token": token, "name": "New", "base_url": fake_llm.url}))
    assert [answer.status_code for answer in answers] == [403] * len(answers)
    assert stored_rows(app) == before


def test_the_api_returns_no_form_of_the_key(app, api, fake_llm):
    created = api.post("/connections", json={"name": "Keyed", "base_url": fake_llm.url, "api_key": "sk-keyed"})
    (row,) = stored_rows(app)
    for answer in (created, api.get(f"/connections/{row['id']}"), api.get("/connections")):
        text = answer.get_data(as_text=True)
        assert "sk-keyed" not in text and row["api_key_encrypted"] not in text and "api_key_encrypted" not in text


# --- Address policy --------------------------------------------------------------------------------------

def test_private_addresses_are_allowed_by_default_for_local_servers(app, api, fake_llm):
    assert app.config["PROMPTBEAT"].connection_allow_private is True
    created = api.post("/connections", json={"name": "Ollama-like", "base_url": fake_llm.url})
    assert created.status_code == 201


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434/v1", "http://localhost:8000/v1", "http://10.0.0.5/v1",
                                 "http://[::ffff:127.0.0.1]/v1", "http://[64:ff9b::7f00:1]/v1",
                                 "http://169.254.169.254/v1", "http://0.0.0.0:8000/v1"])
def test_private_addresses_are_refused_at_save_when_forbidden(app, api, swap_settings, url):
    swap_settings(connection_allow_private=False)
    answer = api.post("/connections", json={"name": "Inside", "base_url": url})
    assert answer.status_code == 422
    assert "PROMPTBEAT_CONNECTION_ALLOW_PRIVATE" in answer.get_json()["fields"]["base_url"]
    assert stored_rows(app) == []


def test_private_addresses_are_refused_at_call_time_when_forbidden(app, api, swap_settings, catcher):
    # A connection saved while private addresses were allowed, or whose name now resolves inside.
    inside = catcher()
    created = api.post("/connections", json={"name": "Saved before", "base_url": inside.url,
                                             "api_key": "sk-inside"}).get_json()
    swap_settings(connection_allow_private=False)
    result = api.post(f"/connections/{created['id']}/test").get_json()
    assert result["ok"] is False and result["error_class"] == "AddressRefused"
    assert "127.0.0.1" in result["message"] and "PROMPTBEAT_CONNECTION_ALLOW_PRIVATE" in result["message"]
    with app.app_context():
        task = Task(name="Inside", prompt="p", model="m", schedule_type="interval", interval_seconds=600,
                    connection_id=created["id"])
        db.session.add(task)
        db.session.commit()
        execution = run_and_reload(task.id, trigger="manual", sleep=lambda s: None)
        # Refused, not retried: the next attempt would be refused as well.
        assert (execution.status, execution.error_class, len(execution.attempts)) == ("failed", "AddressRefused", 1)
    assert inside.requests == []


def test_calls_connect_to_the_address_that_was_checked_not_to_a_second_answer(app, api, swap_settings, catcher,
                                                                              monkeypatch):
    # DNS rebinding: the name answers a checked address first and an inside one afterwards. The call
    # must connect where the check looked, with the name kept in the Host header. The only address a
    # test can serve on is loopback, so the check is told to take 127.0.0.1 as the public one.
    server = catcher()
    port = server.server.server_address[1]
    real_getaddrinfo, answers = socket.getaddrinfo, []

    def rebinding(host, *args, **kwargs):
        if host != "models.rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        answers.append("127.0.0.1" if not answers else "10.255.255.1")
        return real_getaddrinfo(answers[-1], *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(netguard, "_reason", lambda address: None if str(address) == "127.0.0.1" else "private")
    swap_settings(connection_allow_private=False)
    created = api.post("/connections", json={"name": "Rebound", "base_url": f"http://models.rebind.test:{port}/v1"})
    assert created.status_code == 201 and answers == ["127.0.0.1"]
    result = api.post(f"/connections/{created.get_json()['id']}/test").get_json()
    assert result["ok"] is False and "10.255.255.1" in result["message"] and server.requests == []
    answers.clear()
    result = api.post(f"/connections/{created.get_json()['id']}/test").get_json()
    assert result["ok"] is True and result["models"] == ["caught-model"] and answers == ["127.0.0.1"]
    assert [headers["host"] for _, headers in server.requests] == [f"models.rebind.test:{port}"]


def test_a_redirect_is_checked_like_the_first_request(app, api, swap_settings, catcher, monkeypatch):
    server = catcher(status=307, location="http://10.255.255.1:1/v1/models")
    # As above: 127.0.0.1 stands for a public address, the only kind a test can serve on.
    monkeypatch.setattr(netguard, "_reason", lambda address: None if str(address) == "127.0.0.1" else "private")
    swap_settings(connection_allow_private=False)
    created = api.post("/connections", json={"name": "Redirecting", "base_url": server.url}).get_json()
    result = api.post(f"/connections/{created['id']}/test").get_json()
    assert result["ok"] is False and result["error_class"] == "AddressRefused" and "10.255.255.1" in result["message"]
    assert len(server.requests) == 1


def test_a_url_saved_before_urls_were_checked_counts_as_moved(app, api):
    with app.app_context():
        db.session.add(Connection(name="Old", base_url="http://old.example:99999/v1",
                                  api_key_encrypted=crypto.encrypt(app.config["PROMPTBEAT"], "sk-old")))
        db.session.commit()
        connection_id = db.session.execute(db.select(Connection.id)).scalar_one()
    answer = api.patch(f"/connections/{connection_id}", json={"base_url": "http://old.example:9999/v1"})
    assert answer.status_code == 422 and "api_key" in answer.get_json()["fields"]


# --- Header values are secrets ---------------------------------------------------------------------------

def test_header_values_are_encrypted_masked_and_never_logged(app, api, client, fake_llm, caplog):
    caplog.set_level(logging.DEBUG)
    value = "hdr-secret-" + secrets.token_hex(8)
    fake_llm.reset()
    created = api.post("/connections", json={"name": "Headed", "base_url": fake_llm.url, "api_key": "sk-h",
                                             "extra_headers": {"X-Org-Token": value}})
    assert created.status_code == 201 and created.get_json()["extra_headers"] == {"X-Org-Token": "••••"}
    connection_id = created.get_json()["id"]
    assert value not in repr(stored_rows(app))

    # Sent back masked (a client that read the connection first), the value is kept.
    kept = api.patch(f"/connections/{connection_id}", json={"extra_headers": {"X-Org-Token": "••••", "X-B": "bbbb"}})
    assert kept.get_json()["extra_headers"] == {"X-Org-Token": "••••", "X-B": "••••"}
    with app.app_context():
        task = Task(name="Headed run", prompt="Header check", model="fake-model", schedule_type="interval",
                    interval_seconds=600, connection_id=connection_id)
        db.session.add(task)
        db.session.commit()
        assert run_and_reload(task.id, trigger="manual").status == "success"
    (sent,) = [r for r in fake_llm.requests if r["messages"][-1]["content"] == "Header check"]
    assert sent["headers"]["x-org-token"] == value and sent["headers"]["x-b"] == "bbbb"

    viewer = {"Authorization": f"Bearer {issue_api_token(app, 'v@example.com', 'viewer password 1', 'viewer')}"}
    seen = [client.get("/api/connections", headers=viewer), client.get(f"/api/connections/{connection_id}",
                                                                       headers=viewer)]
    login = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"email": "v@example.com", "password": "viewer password 1",
                                "csrf_token": csrf_token(login)})
    seen.append(client.get("/connections/"))
    text = "\n".join(answer.get_data(as_text=True) for answer in seen)
    assert "X-Org-Token: ••••" in text and value not in text
    assert value not in caplog.text


def test_header_values_saved_in_plain_text_before_still_work_and_are_encrypted_by_rotation(app, api, fake_llm):
    with app.app_context():
        db.session.add(Connection(name="Legacy", base_url=fake_llm.url, extra_headers={"X-Legacy": "plain-old"}))
        db.session.commit()
        connection = db.session.execute(db.select(Connection)).scalar_one()
        endpoint = connections.endpoint_of(connection, app.config["PROMPTBEAT"])
        assert dict(endpoint.headers) == {"X-Legacy": "plain-old"}
        connections.rotate_keys()
        stored = db.session.execute(db.select(Connection)).scalar_one().extra_headers["X-Legacy"]
        assert crypto.decrypt(app.config["PROMPTBEAT"], stored["fernet"]) == "plain-old"
    assert api.get("/connections").get_json()["connections"][0]["extra_headers"] == {"X-Legacy": "••••"}


def test_a_header_value_echoed_in_a_server_error_is_redacted(app, api, fake_llm):
    value = "hdr-echoed-" + secrets.token_hex(8)
    created = api.post("/connections", json={"name": "Echo", "base_url": fake_llm.url, "api_key": "sk-echo",
                                             "extra_headers": {"X-Org": value}}).get_json()
    fake_llm.queue_responses([{"status": 400, "body": {"error": {"message": f"Bad org {value}", "type": "x"}}}])
    with app.app_context():
        task = Task(name="Echo", prompt="p", model="fake-model", schedule_type="interval", interval_seconds=600,
                    connection_id=created["id"])
        db.session.add(task)
        db.session.commit()
        execution = run_and_reload(task.id, trigger="manual")
        assert execution.status == "failed" and "Bad org ***" in execution.error and value not in execution.error


# --- Hostile input: 4xx with a field message, nothing changed ---------------------------------------------

HOSTILE = [
    ("name", "a\x00b"), ("name", "line\r\nbreak"), ("name", "x" * 1_000_000), ("name", ["list"]), ("name", 7),
    ("name", "\ud800"),
    ("base_url", "http://[::1/v1"), ("base_url", "http://h\x00st/v1"), ("base_url", "http://h:99999/v1"),
    ("base_url", "http://user:pass@example.com/v1"), ("base_url", "javascript:alert(1)"),
    ("base_url", "http://x/" + "a" * 1_000_000), ("base_url", {"a": 1}),
    ("api_key", "sk-\x00"), ("api_key", "k" * 1_000_000), ("api_key", 12), ("api_key", "sk\ud800"),
    ("default_model", "m\x00"), ("default_model", "m\nx"), ("default_model", True),
    ("extra_headers", {"X-A": "v\r\nInjected: yes"}), ("extra_headers", {"X-A": "v\x00"}),
    ("extra_headers", {"X A": "v"}), ("extra_headers", {"X-A\r\n": "v"}), ("extra_headers", {"": "v"}),
    ("extra_headers", {"X-A": "v" * 5000}), ("extra_headers", {f"X-{i}": "v" for i in range(21)}),
    ("extra_headers", {"X-A": "a", "x-a": "b"}), ("extra_headers", {"Authorization": "Bearer x"}),
    ("extra_headers", {"X-A": 1}), ("extra_headers", ["X-A"]), ("extra_headers", {"X-New": "••••"}),
    ("extra_headers", {"X-A": "é"}),
]


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE)])
def test_hostile_connection_input_is_refused_with_a_field_message_and_changes_nothing(app, api, fake_llm,
                                                                                      field, value):
    created = api.post("/connections", json={"name": "Target", "base_url": fake_llm.url, "api_key": "sk-t",
                                             "extra_headers": {"X-Kept": "kept"}})
    assert created.status_code == 201
    before = stored_rows(app)
    create = api.post("/connections", json={"name": "New one", "base_url": fake_llm.url, field: value})
    update = api.patch(f"/connections/{created.get_json()['id']}", json={field: value})
    for answer in (create, update):
        assert answer.status_code == 422, answer.get_data(as_text=True)[:300]
        assert set(answer.get_json()["fields"]) == {field}
    assert stored_rows(app) == before


def test_hostile_input_on_the_page_is_refused_with_a_field_message(app, signed_in):
    page = signed_in.get("/connections/").get_data(as_text=True)
    answer = signed_in.post("/connections/", data={"csrf_token": csrf_token(page), "name": "nul\x00name",
                                                  "base_url": "http://[::1/v1"})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 422 and "control characters" in html and "Use an http(s) URL" in html
    assert stored_rows(app) == []


# --- A server that answers with something other than a model list ----------------------------------------

@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", b"not json at all"), ("text/html", b"<html>Welcome to nginx</html>"),
    ("application/json", b'{"data": 5}'), ("application/json", b"[1, 2]"),
])
def test_a_test_against_a_server_that_does_not_answer_a_model_list_fails_cleanly(app, api, signed_in, catcher,
                                                                                 content_type, body):
    server = catcher(body=body, content_type=content_type)
    created = api.post("/connections", json={"name": "Odd server", "base_url": server.url}).get_json()
    answer = api.post(f"/connections/{created['id']}/test")
    assert answer.status_code == 200
    result = answer.get_json()
    assert result["ok"] is False and result["error_class"] == "APIResponseValidationError" and result["message"]
    page = signed_in.get("/connections/").get_data(as_text=True)
    tested = signed_in.post(f"/connections/{created['id']}/test", data={"csrf_token": csrf_token(page)},
                            follow_redirects=True)
    assert tested.status_code == 200 and "Connection test failed" in tested.get_data(as_text=True)
