"""Fallbacks through the API and pages: hostile lists refused whole, runs by a real worker show who answered."""
import re

import pytest

from promptbeat.extensions import db
from promptbeat.fakellm import error_body
from promptbeat.models import Connection, Execution, Task
from tests.conftest import csrf_token
from tests.services import wait_for

BASE = {"name": "Fallback task", "prompt": "Which model?", "model": "fake-model", "schedule_type": "crontab",
        "cron": "0 0 1 1 *", "enabled": False}
MODEL_NOT_FOUND = {"status": 404, "body": error_body("The model does not exist.", "invalid_request_error",
                                                     "model_not_found")}


def snapshot(app):
    with app.app_context():
        return ([(t.id, t.fallbacks, t.model) for t in db.session.query(Task).order_by(Task.id)],
                [(c.id, c.fallbacks) for c in db.session.query(Connection).order_by(Connection.id)],
                db.session.query(Execution).count())


@pytest.fixture
def other(api, fake_llm):
    response = api.post("/connections", json={"name": "Backup route", "base_url": fake_llm.url,
                                              "api_key": "sk-backup-route"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_update_and_clear_fallbacks(api, other):
    fallbacks = [{"model": "gpt-4o-mini", "connection_id": None}, {"model": "fake-model", "connection_id": other["id"]}]
    created = api.post("/tasks", json={**BASE, "fallbacks": fallbacks})
    assert created.status_code == 201, created.get_json()
    task = created.get_json()
    assert task["fallbacks"] == fallbacks
    # A partial update that leaves them out keeps them; null or [] clears them.
    assert api.patch(f"/tasks/{task['id']}", json={"name": "Renamed"}).get_json()["fallbacks"] == fallbacks
    assert api.patch(f"/tasks/{task['id']}", json={"fallbacks": []}).get_json()["fallbacks"] == []
    # A model name is stored without its surrounding blanks.
    patched = api.patch(f"/tasks/{task['id']}", json={"fallbacks": [{"model": "  gpt-4o  ", "connection_id": None}]})
    assert patched.get_json()["fallbacks"] == [{"model": "gpt-4o", "connection_id": None}]


HOSTILE = [
    ("text", "gpt-4o", "Must be a list."),
    ("object", {"model": "gpt-4o"}, "Must be a list."),
    ("list of text", ["gpt-4o"], "valid dictionary"),
    ("nested junk", [{"model": {"model": ["x"]}, "connection_id": None}], "Must be text."),
    ("unknown key", [{"model": "gpt-4o", "connection_id": None, "api_key": "sk-x"}], "Unknown field."),
    ("no model", [{"connection_id": None}], "Field required"),
    ("empty model", [{"model": "  ", "connection_id": None}], "This field is required."),
    ("nul", [{"model": "gpt\x00-4o", "connection_id": None}], "Must not contain NUL characters."),
    ("crlf", [{"model": "gpt-4o\r\nX-Forged: 1", "connection_id": None}], "control characters"),
    ("long model", [{"model": "m" * 201, "connection_id": None}], "at most 200 characters"),
    ("huge list", [{"model": f"m{i}", "connection_id": None} for i in range(10_000)], "The list is too long."),
    ("six", [{"model": f"m{i}", "connection_id": None} for i in range(6)], "The list is too long."),
    ("text id", [{"model": "gpt-4o", "connection_id": "1"}], "Must be a whole number."),
    ("bool id", [{"model": "gpt-4o", "connection_id": True}], "Must be a whole number."),
    ("negative id", [{"model": "gpt-4o", "connection_id": -1}], "must be a connection's id or null"),
    ("huge id", [{"model": "gpt-4o", "connection_id": 10**30}], "connection_id"),
    ("missing connection", [{"model": "gpt-4o", "connection_id": 2**31 - 1}], "no connection with id"),
    ("the task's own model", [{"model": "fake-model", "connection_id": None}], "already tried"),
    ("twice", [{"model": "gpt-4o", "connection_id": None}] * 2, "already tried"),
]


@pytest.mark.parametrize("label, value, message", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_fallbacks_are_refused_with_a_message_and_change_nothing(app, api, label, value, message):
    task = api.post("/tasks", json=BASE).get_json()
    before = snapshot(app)
    responses = [api.post("/tasks", json={**BASE, "fallbacks": value}),
                 api.patch(f"/tasks/{task['id']}", json={"fallbacks": value})]
    if label != "the task's own model":  # a connection's list knows no task's model
        responses.append(api.post("/connections", json={"name": "Hostile", "fallbacks": value}))
    for response in responses:
        assert response.status_code == 422, (label, response.get_json())
        assert message in response.get_json()["fields"]["fallbacks"], response.get_json()
    assert snapshot(app) == before


def test_connection_fallbacks_round_trip(api, other):
    fallbacks = [{"model": "gpt-4o-mini", "connection_id": None}]
    patched = api.patch(f"/connections/{other['id']}", json={"fallbacks": fallbacks})
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["fallbacks"] == fallbacks
    assert api.get(f"/connections/{other['id']}").get_json()["fallbacks"] == fallbacks


def test_the_task_form_takes_one_fallback_a_line(app, api, signed_in, other):
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "name": "Form fallbacks", "prompt": "p", "model": "fake-model",
            "temperature": "0.7", "schedule_type": "crontab", "cron": "0 9 * * *", "timezone": "UTC"}
    response = signed_in.post("/tasks/new", data={**form, "fallbacks": "gpt-4o-mini\n\nfake-model @ Backup route\n"})
    assert response.status_code == 302, response.get_data(as_text=True)
    task_id = int(response.headers["Location"].rstrip("/").split("/")[-1])
    assert api.get(f"/tasks/{task_id}").get_json()["fallbacks"] == [
        {"model": "gpt-4o-mini", "connection_id": None}, {"model": "fake-model", "connection_id": other["id"]}]
    detail = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "<code>gpt-4o-mini</code>, <code>fake-model @ Backup route</code>" in detail
    edit = signed_in.get(f"/tasks/{task_id}/edit").get_data(as_text=True)
    assert re.search(r'<textarea[^>]*name="fallbacks"[^>]*>\s*gpt-4o-mini\nfake-model @ Backup route</textarea>', edit)
    before = snapshot(app)
    refused = signed_in.post("/tasks/new", data={**form, "fallbacks": "gpt-4o @ No such connection"})
    assert refused.status_code == 422
    assert "no connection has the name" in refused.get_data(as_text=True)
    assert snapshot(app) == before


@pytest.mark.slow
def test_a_real_worker_falls_back_and_the_api_and_page_show_it(app, api, signed_in, fake_llm, other, live_roles):
    """Run by the worker process: the task's model is missing on its server, the fallback on another
    connection answers; the execution JSON and the run page say so, attempt by attempt."""
    fake_llm.reset()
    fake_llm.queue_responses([{**MODEL_NOT_FOUND, "model": "fake-model"}])
    created = api.post("/tasks", json={**BASE, "name": "Live fallback", "prompt": "Live fallback question",
                                       "fallbacks": [{"model": "gpt-4o-mini", "connection_id": other["id"]}]})
    task_id = created.get_json()["id"]
    assert api.post(f"/tasks/{task_id}/run").status_code == 202

    def finished():
        runs = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
        return runs if runs and runs[0]["finished_at"] else None

    (execution,) = wait_for(finished, 20, "the run by the worker")
    assert execution["status"] == "success", execution["error"]
    assert (execution["model"], execution["answered_model"], execution["answered_connection_id"]) == (
        "fake-model", "gpt-4o-mini", other["id"])
    assert [(a["model"], a["connection_id"], a.get("error_class")) for a in execution["attempts"]] == [
        ("fake-model", None, "NotFoundError"), ("gpt-4o-mini", other["id"], None)]
    assert [r["model"] for r in fake_llm.requests] == ["fake-model", "gpt-4o-mini"]
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert re.search(r'Answered by the fallback <code>gpt-4o-mini</code> · Backup route', page)
    assert page.count('<code class="attempt-model">fake-model</code>') == 1
    assert page.count('<code class="attempt-model">gpt-4o-mini</code>') == 1


def test_the_connection_form_takes_one_fallback_a_line(app, api, signed_in, other):
    page = signed_in.get("/connections/").get_data(as_text=True)
    response = signed_in.post("/connections/", data={
        "csrf_token": csrf_token(page), "name": "Primary route", "base_url": "http://127.0.0.1:9/v1",
        "fallbacks": "gpt-4o-mini\ngpt-4o @ Backup route"})
    assert response.status_code == 302, response.get_data(as_text=True)
    (saved,) = [c for c in api.get("/connections").get_json()["connections"] if c["name"] == "Primary route"]
    assert saved["fallbacks"] == [{"model": "gpt-4o-mini", "connection_id": None},
                                  {"model": "gpt-4o", "connection_id": other["id"]}]
    listed = signed_in.get("/connections/").get_data(as_text=True)
    assert "<code>gpt-4o @ Backup route</code>" in listed
    assert re.search(r'<textarea name="fallbacks"[^>]*>gpt-4o-mini\ngpt-4o @ Backup route</textarea>', listed)
    before = snapshot(app)
    refused = signed_in.post(f"/connections/{saved['id']}/edit", data={
        "csrf_token": csrf_token(listed), "name": "Primary route", "base_url": "http://127.0.0.1:9/v1",
        "fallbacks": "a\nb\nc\nd\ne\nf"})
    assert refused.status_code == 422
    assert "At most 5 fallbacks." in refused.get_data(as_text=True)
    assert snapshot(app) == before


def test_the_form_leaves_out_a_fallback_whose_connection_was_deleted(api, signed_in, other):
    task = api.post("/tasks", json={**BASE, "fallbacks": [{"model": "gpt-4o", "connection_id": other["id"]},
                                                          {"model": "gpt-4o-mini", "connection_id": None}]}).get_json()
    assert api.delete(f"/connections/{other['id']}").status_code == 204
    edit = signed_in.get(f"/tasks/{task['id']}/edit").get_data(as_text=True)
    assert re.search(r'<textarea[^>]*name="fallbacks"[^>]*>\s*gpt-4o-mini</textarea>', edit)
