"""Connections' rate limits and tasks' jitter and first-run delay, through the API and the pages, hostile input too."""
from datetime import timedelta

import pytest

from promptbeat.extensions import db
from promptbeat.models import Connection, Task, Trigger, utcnow
from promptbeat.ratelimits.limits import WaitReason
from promptbeat.runs import store
from tests.conftest import csrf_token
from tests.web.test_forms import created_task_id, form_data

LIMITS = ("rpm_limit", "tpm_limit", "max_concurrency")
DELAYS = ("jitter_seconds", "first_run_delay_seconds")
# Wrong types, out of range (zero, negative, past the bounds or any integer column), NUL, CR/LF.
HOSTILE = ["5", 0, -1, 10**12, 2**63, 1.5, True, "a\x00b", "1\r\n2", [1], {"n": 1}]


def stored_connections(app):
    with app.app_context():
        return [(c.name, c.rpm_limit, c.tpm_limit, c.max_concurrency)
                for c in db.session.execute(db.select(Connection)).scalars()]


@pytest.mark.parametrize("field", LIMITS)
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_a_hostile_limit_is_refused_with_its_field_and_saves_nothing(app, api, field, value):
    created = api.post("/connections", json={"name": "hostile", "base_url": "http://127.0.0.1:9/v1", field: value})
    assert created.status_code in (400, 422), created.get_data(as_text=True)
    assert field in created.get_json()["fields"]
    assert stored_connections(app) == []
    saved = api.post("/connections", json={"name": "kept", "base_url": "http://127.0.0.1:9/v1", field: 7}).get_json()
    changed = api.patch(f"/connections/{saved['id']}", json={field: value})
    assert changed.status_code in (400, 422) and field in changed.get_json()["fields"]
    assert api.get(f"/connections/{saved['id']}").get_json() == saved


def test_limits_are_saved_returned_and_cleared_with_null(api):
    saved = api.post("/connections", json={"name": "paced", "base_url": "http://127.0.0.1:9/v1", "rpm_limit": 500,
                                           "tpm_limit": 200_000, "max_concurrency": 8})
    assert saved.status_code == 201
    body = saved.get_json()
    assert (body["rpm_limit"], body["tpm_limit"], body["max_concurrency"]) == (500, 200_000, 8)
    cleared = api.patch(f"/connections/{body['id']}", json={"rpm_limit": None}).get_json()
    assert (cleared["rpm_limit"], cleared["tpm_limit"], cleared["max_concurrency"]) == (None, 200_000, 8)
    fresh = api.post("/connections", json={"name": "open", "base_url": "http://127.0.0.1:9/v1"}).get_json()
    assert (fresh["rpm_limit"], fresh["tpm_limit"], fresh["max_concurrency"]) == (None, None, None)


def task_body(**fields):
    return {"name": "Delays", "prompt": "hi", "schedule_type": "crontab", "cron": "0 9 * * *", **fields}


@pytest.mark.parametrize("field", DELAYS)
@pytest.mark.parametrize("value", [value for value in HOSTILE if value != 0] + [3601], ids=repr)
def test_a_hostile_delay_is_refused_with_its_field_and_saves_nothing(app, api, field, value):
    created = api.post("/tasks", json=task_body(**{field: value}))
    assert created.status_code in (400, 422), created.get_data(as_text=True)
    assert field in created.get_json()["fields"]
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(Task.id))).scalar() == 0


def test_delays_default_to_zero_and_are_saved_and_changed(api):
    task = api.post("/tasks", json=task_body()).get_json()
    assert (task["jitter_seconds"], task["first_run_delay_seconds"]) == (0, 0)
    changed = api.patch(f"/tasks/{task['id']}", json={"jitter_seconds": 90, "first_run_delay_seconds": 3600})
    assert changed.status_code == 200
    assert (changed.get_json()["jitter_seconds"], changed.get_json()["first_run_delay_seconds"]) == (90, 3600)


def test_the_connections_page_saves_limits_and_shows_a_bad_one_next_to_its_field(app, signed_in):
    page = signed_in.get("/connections/").get_data(as_text=True)
    refused = signed_in.post("/connections/", data={"csrf_token": csrf_token(page), "name": "Paced",
                                                    "base_url": "http://127.0.0.1:9/v1", "rpm_limit": "-5",
                                                    "tpm_limit": "lots"})
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert html.count('class="field-error"') == 2 and "Must be a whole number" in html
    assert stored_connections(app) == []
    saved = signed_in.post("/connections/", data={"csrf_token": csrf_token(page), "name": "Paced",
                                                  "base_url": "http://127.0.0.1:9/v1", "rpm_limit": "120",
                                                  "max_concurrency": "4"}, follow_redirects=True)
    assert "120 requests/min" in saved.get_data(as_text=True)
    assert stored_connections(app) == [("Paced", 120, None, 4)]


def test_the_task_form_saves_delays_and_refuses_a_bad_one(app, signed_in):
    refused = signed_in.post("/tasks/new", data=form_data(signed_in, "/tasks/new", jitter_seconds="-1"))
    assert refused.status_code == 422 and "Must be between 0 and 3600" in refused.get_data(as_text=True)
    task_id = created_task_id(signed_in.post("/tasks/new", data=form_data(
        signed_in, "/tasks/new", jitter_seconds="30", first_run_delay_seconds="15")))
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert (task.jitter_seconds, task.first_run_delay_seconds) == (30, 15)


def test_a_waiting_run_shows_its_reason_and_moment_on_its_tasks_page_and_in_the_api(app, api, signed_in):
    task = api.post("/tasks", json=task_body()).get_json()
    with app.app_context():
        run_id = store.create(task["id"], Trigger.MANUAL, "fake-model")
        moment = utcnow().replace(microsecond=0) + timedelta(minutes=2)
        assert store.wait(run_id, WaitReason.PROVIDER, moment)
    (run,) = api.get(f"/tasks/{task['id']}/executions").get_json()["executions"]
    assert (run["status"], run["wait_reason"]) == ("waiting", "provider")
    assert run["not_before"].startswith(moment.strftime("%Y-%m-%dT%H:%M:%S"))
    page = signed_in.get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert 'data-wait-reason="provider"' in page and "the provider asked to slow down" in page
    # A waiting run may be cancelled like a queued one.
    assert f"Cancel run #{run_id}" in page
