"""Connections: keys encrypted at rest and never shown, rotation, the test action, tasks that use them."""
import logging
import re
import secrets

import pytest
from cryptography.fernet import Fernet

from promptbeat.llm import connections
from promptbeat.llm import crypto
from promptbeat.extensions import db
from promptbeat.models import Connection, Execution
from tests.conftest import csrf_token
from tests.services import wait_for


def test_api_key_is_encrypted_at_rest_and_never_returned(app, api, fake_llm):
    key = "sk-conn-" + secrets.token_hex(12)
    response = api.post("/connections", json={"name": "Local", "base_url": fake_llm.url, "api_key": key,
                                              "default_model": "fake-model", "extra_headers": {"X-Team": "a"}})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["has_api_key"] is True and "api_key" not in body
    assert key not in response.get_data(as_text=True)
    with app.app_context():
        stored = db.session.get(Connection, body["id"]).api_key_encrypted
        assert key not in stored
        assert crypto.decrypt(app.config["PROMPTBEAT"], stored) == key
    listing = api.get("/connections")
    assert key not in listing.get_data(as_text=True)
    assert listing.get_json()["connections"][0]["name"] == "Local"


def test_saving_a_key_without_fernet_keys_fails_with_a_clear_message(app, api, swap_settings):
    swap_settings(fernet_keys=())
    response = api.post("/connections", json={"name": "No crypto", "base_url": "http://127.0.0.1:9/v1",
                                              "api_key": "sk-anything"})
    assert response.status_code == 422
    assert "PROMPTBEAT_FERNET_KEYS is not set" in response.get_json()["fields"]["api_key"]
    with app.app_context():
        assert db.session.execute(db.select(Connection)).first() is None


def test_bad_connection_input_gets_field_errors(api):
    response = api.post("/connections", json={"name": "", "base_url": "ftp://x", "extra_headers": {"Authorization": "x"},
                                              "colour": "red"})
    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == {"name", "base_url", "extra_headers", "colour"}


def test_multifernet_rotation(app, swap_settings):
    old, new = app.config["PROMPTBEAT"].fernet_keys[0], Fernet.generate_key().decode()
    with app.app_context():
        db.session.add(Connection(name="Rotating", base_url="http://127.0.0.1:9/v1",
                                  api_key_encrypted=crypto.encrypt(app.config["PROMPTBEAT"], "sk-rotate-me")))
        db.session.commit()
        swap_settings(fernet_keys=(new, old))  # the new key in front, the old one still readable
        assert connections.rotate_keys() == 1
        swap_settings(fernet_keys=(new,))  # the old key retired
        stored = db.session.execute(db.select(Connection)).scalar_one().api_key_encrypted
        assert crypto.decrypt(app.config["PROMPTBEAT"], stored) == "sk-rotate-me"
        swap_settings(fernet_keys=(old,))
        with pytest.raises(crypto.CryptoError, match="cannot be decrypted"):
            crypto.decrypt(app.config["PROMPTBEAT"], stored)


def test_test_connection_action_reports_success_and_failure(api, fake_llm):
    good = api.post("/connections", json={"name": "Good", "base_url": fake_llm.url, "api_key": "sk-good",
                                          "default_model": "fake-model"}).get_json()
    bad = api.post("/connections", json={"name": "Bad", "base_url": fake_llm.url, "api_key": "sk-invalid"}).get_json()
    result = api.post(f"/connections/{good['id']}/test").get_json()
    assert result["ok"] is True and "fake-model" in result["models"]
    failure = api.post(f"/connections/{bad['id']}/test").get_json()
    assert failure["ok"] is False and failure["error_class"] == "AuthenticationError"


def test_connections_page_adds_and_tests_a_connection(signed_in, fake_llm):
    key = "sk-page-" + secrets.token_hex(12)
    page = signed_in.get("/connections/").get_data(as_text=True)
    response = signed_in.post("/connections/", data={"csrf_token": csrf_token(page), "name": "From page",
                                                     "base_url": fake_llm.url, "api_key": key}, follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "From page" in html and "key stored" in html and key not in html
    connection_id = html.split('id="connection-')[1].split('"')[0]
    tested = signed_in.post(f"/connections/{connection_id}/test", data={"csrf_token": csrf_token(html)},
                            follow_redirects=True).get_data(as_text=True)
    assert "model(s) available" in tested and key not in tested


def test_a_task_uses_its_connection_and_its_headers(app, api, fake_llm):
    from tests.runner import run_and_reload

    fake_llm.reset()
    connection = api.post("/connections", json={"name": "Team", "base_url": fake_llm.url, "api_key": "sk-team",
                                                "extra_headers": {"X-Team": "research"}}).get_json()
    task = api.post("/tasks", json={"name": "Via team", "prompt": "Team question", "schedule_type": "crontab",
                                    "cron": "0 9 * * *", "connection_id": connection["id"]}).get_json()
    assert task["connection_id"] == connection["id"]
    with app.app_context():
        execution = run_and_reload(task["id"], trigger="manual")
        assert execution.status == "success"
    (request,) = [r for r in fake_llm.requests if r["messages"][-1]["content"] == "Team question"]
    assert request["headers"]["x-team"] == "research"
    missing = api.post("/tasks", json={"name": "x", "prompt": "y", "schedule_type": "crontab", "cron": "0 9 * * *",
                                       "connection_id": 999999})
    assert missing.status_code == 422 and "connection_id" in missing.get_json()["fields"]


@pytest.mark.slow
def test_the_key_never_reaches_a_response_page_log_or_record(app, api, signed_in, fake_llm, live_roles, caplog):
    """A server that echoes the key and a header value in its error (some do) leaves no trace of them anywhere."""
    caplog.set_level(logging.DEBUG)
    key, header = "sk-secret-" + secrets.token_hex(16), "hdr-secret-" + secrets.token_hex(16)
    bodies = []

    def keep(response):
        bodies.append(response.get_data(as_text=True))
        return response

    connection = keep(api.post("/connections", json={"name": "Leaky", "base_url": fake_llm.url, "api_key": key,
                                                     "extra_headers": {"X-Org": header}}))
    connection_id = connection.get_json()["id"]
    fake_llm.queue_responses([{"status": 401, "body": {"error": {
        "message": f"Incorrect API key provided: {key} (org {header}).", "type": "invalid_request_error", "code": "invalid_api_key"}}}])
    created = keep(api.post("/tasks", json={"name": "Leak check", "prompt": "Who am I", "schedule_type": "interval",
                                            "interval_seconds": 600, "connection_id": connection_id}))
    task_id = created.get_json()["id"]

    def finished():
        with app.app_context():
            rows = db.session.execute(db.select(Execution).filter_by(task_id=task_id)).scalars().all()
            db.session.expunge_all()
            return [r for r in rows if r.finished_at] or None

    (failed,) = wait_for(finished, 15, "the run with the echoed key")
    assert failed.status == "failed" and failed.error_class == "AuthenticationError"
    assert "Incorrect API key provided: *** (org ***)" in failed.error
    keep(api.post(f"/tasks/{task_id}/run"))
    wait_for(lambda: len(finished() or []) == 2, 15, "the second run")

    for path in ("/connections", f"/connections/{connection_id}", f"/tasks/{task_id}", f"/tasks/{task_id}/executions",
                 "/tasks", "/usage"):
        keep(api.get(path))
    keep(api.post(f"/connections/{connection_id}/test"))
    for path in ("/", f"/tasks/{task_id}", "/connections/", f"/tasks/{task_id}/edit"):
        keep(signed_in.get(path))

    with app.app_context():
        rows = db.session.execute(db.select(Execution)).scalars().all()
        records = [repr({c.name: getattr(r, c.name) for c in Execution.__table__.columns}) for r in rows]
    first, second = sorted(finished(), key=lambda run: run.id)
    # The log checked is the one that recorded both runs, the refused call's error included.
    logged = [f"task {task_id} run {first.id} attempt 1 failed: ", "Incorrect API key provided: *** (org ***)",
              f"task {task_id} run {second.id} (manual) success"]
    wait_for(lambda: all(line in live_roles["worker"].output() for line in logged), 10, "both runs in the worker log")
    worker_log = live_roles["worker"].output()
    for where, text in [("responses and pages", "\n".join(bodies)), ("worker log", worker_log),
                        ("web log", caplog.text), ("execution records", "\n".join(records))]:
        assert key not in text, f"the API key leaked into the {where}"
        assert header not in text, f"the header value leaked into the {where}"


def test_task_form_picks_a_connection_and_channels(app, api, signed_in, fake_llm):
    connection = api.post("/connections", json={"name": "Form pick", "base_url": fake_llm.url}).get_json()
    channel = api.post("/channels", json={"name": "Form hook", "kind": "slack",
                                          "url": "http://127.0.0.1:9/hook"}).get_json()
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    assert "Form pick" in page
    response = signed_in.post("/tasks/new", data={
        "csrf_token": csrf_token(page), "name": "Picked", "prompt": "p", "model": "fake-model", "temperature": "0.7",
        "schedule_type": "crontab", "cron": "0 9 * * *", "timezone": "UTC", "enabled": "y",
        "connection_id": str(connection["id"]), "max_attempts": "2", "channel_ids": str(channel["id"]),
        "notify_on": ["failure", "recovery"]})
    assert response.status_code == 302, response.get_data(as_text=True)
    task_id = int(response.headers["Location"].rstrip("/").split("/")[-1])
    task = api.get(f"/tasks/{task_id}").get_json()
    assert (task["connection_id"], task["max_attempts"], task["channel_ids"], task["notify_on"]) == (
        connection["id"], 2, [channel["id"]], ["failure", "recovery"])
    edit = signed_in.get(f"/tasks/{task_id}/edit").get_data(as_text=True)
    assert re.search(rf'<input checked id="channel_ids-0" name="channel_ids" type="checkbox" value="{channel["id"]}"',
                     edit)
