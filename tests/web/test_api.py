"""The JSON API's shapes and effects: tasks, their RedBeat entries, and queued runs (no worker here)."""
import base64
import json
import time

import pytest

from promptbeat.scheduling.entries import TaskEntry
from promptbeat.scheduling.schedules import TaskSchedule

TASK_FIELDS = {
    "name", "prompt", "system_prompt", "model", "temperature", "max_tokens", "schedule_type",
    "interval_minutes", "interval_seconds", "time", "cron", "timezone", "enabled",
}
EXECUTION_FIELDS = {
    "id", "status", "trigger", "started_at", "finished_at", "duration_ms", "output", "error",
    "prompt_tokens", "completion_tokens",
}
INTERVAL = {"name": "Feed check", "prompt": "Summarise the feed", "interval_seconds": 600}
CRONTAB = {"name": "Weekday briefing", "prompt": "Brief me", "schedule_type": "crontab", "cron": "0 9 * * 1-5",
           "timezone": "Europe/Berlin"}
FIXED_TIME = {"name": "Morning note", "prompt": "Write a note", "schedule_type": "fixed_time", "time": "09:00",
              "timezone": "Asia/Shanghai"}


def entry_key(task_id):
    return f"promptbeat:task:{task_id}"


def queued_messages(redis_client):
    """The Celery messages waiting in the promptbeat queue: (task name, args, kwargs), oldest first."""
    messages = []
    for raw in reversed(redis_client.lrange("promptbeat", 0, -1)):
        message = json.loads(raw)
        assert message["properties"]["body_encoding"] == "base64"
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args, kwargs))
    return messages


def stored_entry(app, task_id):
    return TaskEntry.from_key(entry_key(task_id), app=app.extensions["celery"])


def create(api, payload):
    response = api.post("/tasks", json=payload)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_returns_201_with_the_task(api):
    payload = {
        "name": "Weekday briefing", "prompt": "Brief me on {topic}", "system_prompt": "Be terse.",
        "model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 300, "schedule_type": "crontab",
        "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "enabled": True,
    }
    response = api.post("/tasks", json=payload)
    assert response.status_code == 201
    task = response.get_json()
    assert isinstance(task["id"], int)
    assert response.headers["Location"] == f"/api/tasks/{task['id']}"
    assert TASK_FIELDS <= set(task)
    assert {k: task[k] for k in TASK_FIELDS} == {
        **payload, "interval_minutes": None, "interval_seconds": None, "time": None,
    }
    assert task["schedule_description"] == "At 09:00, Monday through Friday (Europe/Berlin)"
    assert task["next_run_at"].endswith("Z")
    assert task["last_run"] is None


def test_create_fills_in_defaults(api):
    task = create(api, {"name": "  Feed check  ", "prompt": "Summarise", "interval_seconds": 90})
    assert {k: task[k] for k in TASK_FIELDS} == {
        "name": "Feed check", "prompt": "Summarise", "system_prompt": None, "model": "fake-model",
        "temperature": 0.7, "max_tokens": None, "schedule_type": "interval", "interval_minutes": 1.5,
        "interval_seconds": 90, "time": None, "cron": None, "timezone": "UTC", "enabled": True,
    }
    assert task["schedule_description"] == "Every 90 seconds"


def test_create_accepts_the_interval_in_minutes(api):
    task = create(api, {"name": "n", "prompt": "p", "interval_minutes": 30, "enabled": False})
    assert (task["interval_seconds"], task["interval_minutes"]) == (1800, 30)


def test_creating_an_enabled_interval_task_queues_an_immediate_run(app, api, redis_client):
    task = create(api, INTERVAL)

    (execution,) = api.get(f"/tasks/{task['id']}/executions").get_json()["executions"]
    assert (execution["status"], execution["trigger"]) == ("queued", "immediate")
    assert execution["started_at"] is None and execution["output"] is None
    assert task["last_run"]["id"] == execution["id"]

    assert queued_messages(redis_client) == [
        ("promptbeat.execute_task", [task["id"]], {"trigger": "immediate", "execution_id": execution["id"],
                                                     "allow_overlap": False}),
    ]
    # Beat's first fire comes one interval after this run.
    assert redis_client.zscore("promptbeat::schedule", entry_key(task["id"])) == pytest.approx(time.time() + 600, abs=3)
    assert stored_entry(app, task["id"]).schedule.run_every.total_seconds() == 600


@pytest.mark.parametrize("payload", [FIXED_TIME, CRONTAB], ids=["fixed_time", "crontab"])
def test_creating_a_clock_task_registers_it_without_running_it(app, api, redis_client, payload):
    task = create(api, payload)
    assert api.get(f"/tasks/{task['id']}/executions").get_json() == {"executions": []}
    assert queued_messages(redis_client) == []
    schedule = stored_entry(app, task["id"]).schedule
    assert isinstance(schedule, TaskSchedule)
    assert schedule.tz_name == payload["timezone"]


def test_creating_a_disabled_task_neither_registers_nor_runs_it(api, redis_client):
    task = create(api, {**INTERVAL, "enabled": False})
    assert task["enabled"] is False
    assert task["next_run_at"] is None
    assert api.get(f"/tasks/{task['id']}/executions").get_json() == {"executions": []}
    assert queued_messages(redis_client) == []
    assert not redis_client.exists(entry_key(task["id"]))


def test_list_and_get(api):
    assert api.get("/tasks").get_json() == {"tasks": []}
    first = create(api, CRONTAB)
    second = create(api, {**INTERVAL, "enabled": False})

    listed = api.get("/tasks").get_json()["tasks"]
    assert [t["id"] for t in listed] == [first["id"], second["id"]]
    assert listed == [first, second]

    response = api.get(f"/tasks/{second['id']}")
    assert response.status_code == 200
    assert response.get_json() == second


def test_patch_changes_only_the_given_fields(app, api, redis_client):
    task = create(api, CRONTAB)
    response = api.patch(f"/tasks/{task['id']}", json={"prompt": "Brief me, briefly", "temperature": 0})
    assert response.status_code == 200
    updated = response.get_json()
    assert (updated["prompt"], updated["temperature"]) == ("Brief me, briefly", 0)
    unchanged = TASK_FIELDS - {"prompt", "temperature"}
    assert {k: updated[k] for k in unchanged} == {k: task[k] for k in unchanged}
    assert api.get(f"/tasks/{task['id']}").get_json() == updated
    assert queued_messages(redis_client) == []


def test_patch_of_the_schedule_rewrites_the_beat_entry(app, api):
    task = create(api, CRONTAB)
    response = api.patch(f"/tasks/{task['id']}", json={"cron": "30 7 * * *", "timezone": "Asia/Tokyo"})
    assert response.status_code == 200
    assert response.get_json()["schedule_description"] == "At 07:30 (Asia/Tokyo)"
    assert stored_entry(app, task["id"]).schedule == TaskSchedule("cron", expr="30 7 * * *", tz="Asia/Tokyo")


def test_patch_switching_to_a_fixed_time_clears_the_interval(app, api):
    task = create(api, {**INTERVAL, "enabled": False})
    response = api.patch(f"/tasks/{task['id']}", json={"schedule_type": "fixed_time", "time": "18:45",
                                                       "enabled": True})
    assert response.status_code == 200
    updated = response.get_json()
    assert (updated["schedule_type"], updated["time"]) == ("fixed_time", "18:45")
    assert (updated["interval_seconds"], updated["interval_minutes"]) == (None, None)
    assert stored_entry(app, task["id"]).schedule == TaskSchedule("cron", expr="45 18 * * *", tz="UTC")


def test_delete_removes_the_task_and_its_beat_entry(api, redis_client):
    task = create(api, CRONTAB)
    assert redis_client.exists(entry_key(task["id"]))

    response = api.delete(f"/tasks/{task['id']}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert api.get(f"/tasks/{task['id']}").status_code == 404
    assert api.get("/tasks").get_json() == {"tasks": []}
    assert not redis_client.exists(entry_key(task["id"]))
    assert redis_client.zscore("promptbeat::schedule", entry_key(task["id"])) is None


def test_disable_and_enable_a_clock_task(api, redis_client):
    task = create(api, FIXED_TIME)

    response = api.post(f"/tasks/{task['id']}/disable")
    assert response.status_code == 200
    assert response.get_json()["enabled"] is False
    assert not redis_client.exists(entry_key(task["id"]))

    response = api.post(f"/tasks/{task['id']}/enable")
    assert response.status_code == 200
    assert response.get_json()["enabled"] is True
    assert redis_client.zscore("promptbeat::schedule", entry_key(task["id"])) is not None
    assert api.get(f"/tasks/{task['id']}/executions").get_json() == {"executions": []}
    assert queued_messages(redis_client) == []


def test_enabling_an_interval_task_queues_an_immediate_run(api, redis_client):
    task = create(api, {**INTERVAL, "enabled": False})
    response = api.post(f"/tasks/{task['id']}/enable")
    assert response.status_code == 200
    assert response.get_json()["enabled"] is True

    (execution,) = api.get(f"/tasks/{task['id']}/executions").get_json()["executions"]
    assert (execution["status"], execution["trigger"]) == ("queued", "immediate")
    assert [m[2]["execution_id"] for m in queued_messages(redis_client)] == [execution["id"]]
    assert redis_client.zscore("promptbeat::schedule", entry_key(task["id"])) == pytest.approx(time.time() + 600, abs=3)


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
@pytest.mark.parametrize("allow_overlap", [True, False], ids=["override", "policy"])
def test_run_queues_a_manual_run(api, redis_client, enabled, allow_overlap):
    task = create(api, {**CRONTAB, "enabled": enabled})
    response = api.post(f"/tasks/{task['id']}/run", json={"allow_overlap": allow_overlap})
    assert response.status_code == 202
    execution = response.get_json()["execution"]
    assert (execution["status"], execution["trigger"], execution["task_id"]) == ("queued", "manual", task["id"])
    assert execution["model"] == "fake-model"
    assert queued_messages(redis_client) == [
        ("promptbeat.execute_task", [task["id"]],
         {"trigger": "manual", "execution_id": execution["id"], "allow_overlap": allow_overlap}),
    ]


def test_executions_newest_first(api):
    task = create(api, CRONTAB)
    run_ids = [api.post(f"/tasks/{task['id']}/run").get_json()["execution"]["id"] for _ in range(3)]

    executions = api.get(f"/tasks/{task['id']}/executions").get_json()["executions"]
    assert [e["id"] for e in executions] == run_ids[::-1]
    for execution in executions:
        assert EXECUTION_FIELDS <= set(execution)
        assert (execution["status"], execution["trigger"]) == ("queued", "manual")

    limited = api.get(f"/tasks/{task['id']}/executions?limit=2").get_json()["executions"]
    assert [e["id"] for e in limited] == run_ids[:0:-1]


@pytest.mark.parametrize("limit", ["0", "501", "ten", "9" * 20, "-1", "1.5"])
def test_executions_limit_out_of_range_is_400(api, limit):
    task = create(api, CRONTAB)
    response = api.get(f"/tasks/{task['id']}/executions?limit={limit}")
    assert response.status_code == 400
    assert response.get_json() == {"error": "bad_parameter", "message": "limit must be a whole number from 1 to 500."}


@pytest.mark.parametrize("path", ["/usage", "/tasks/{id}/usage"])
@pytest.mark.parametrize("days", ["0", "367", "9" * 20, "week"])
def test_usage_days_out_of_range_is_400(api, path, days):
    task = create(api, CRONTAB)
    response = api.get(path.format(id=task["id"]) + f"?days={days}")
    assert response.status_code == 400
    assert response.get_json() == {"error": "bad_parameter", "message": "days must be a whole number from 1 to 366."}


def test_unknown_query_parameters_are_400(api):
    response = api.get("/usage?day=3")
    assert response.status_code == 400
    assert response.get_json() == {"error": "bad_parameter", "message": "Unknown query parameter: day."}


WRONG_TYPES = [
    ("schedule_type", [], "Must be one of: interval, fixed_time, crontab, once."),
    ("overlap_policy", ["skip"], "Must be one of: skip, allow."),
    ("overlap_policy", {"a": 1}, "Must be one of: skip, allow."),
    ("notify_on", ["never"], "Must be one of: every, change, failure, recovery, auto_pause, budget."),
    ("channel_ids", [0], "Must be a list of at most 20 channel ids."),
    ("channel_ids", [987654], "No channel with id 987654."),
    ("interval_seconds", "600", "Must be a whole number."),
    ("max_runs", 2.5, "Must be a whole number."),
    ("enabled", "true", "Must be true or false."),
    ("temperature", [0.2], "Must be a number."),
    ("cron", 5, "Must be text."),
    ("timezone", {"name": "UTC"}, "Must be text."),
    ("prompt", "a\x00b", "Must not contain NUL characters."),
    ("connection_id", "1", "Must be a whole number."),
]


@pytest.mark.parametrize(("field", "value", "message"), WRONG_TYPES, ids=[f"{f}={v!r}" for f, v, _ in WRONG_TYPES])
def test_wrong_json_types_are_422_and_save_nothing(api, redis_client, field, value, message):
    response = api.post("/tasks", json={**INTERVAL, field: value})
    assert response.status_code == 422
    assert response.get_json() == {"error": "validation_failed", "message": "Some fields are invalid.",
                                   "fields": {field: message}}
    assert api.get("/tasks").get_json() == {"tasks": []}
    assert redis_client.keys("promptbeat:task:*") == []


def test_wrong_types_in_an_update_change_nothing(api):
    task = create(api, CRONTAB)
    response = api.patch(f"/tasks/{task['id']}", json={"name": "Renamed", "overlap_policy": ["allow"]})
    assert response.status_code == 422
    assert response.get_json()["fields"] == {"overlap_policy": "Must be one of: skip, allow."}
    assert api.get(f"/tasks/{task['id']}").get_json() == task


def test_wrong_types_in_the_small_bodies_are_422(api):
    task = create(api, CRONTAB)
    assert api.post(f"/tasks/{task['id']}/pause", json={"note": 5}).get_json()["fields"] == {"note": "Must be text."}
    run = api.post(f"/tasks/{task['id']}/run", json={"allow_overlap": "yes"})
    assert (run.status_code, run.get_json()["fields"]) == (422, {"allow_overlap": "Must be true or false."})
    preview = api.post("/schedule/preview", json={"schedule_type": "crontab", "cron": ["0 9 * * *"]})
    assert (preview.status_code, preview.get_json()["fields"]) == (422, {"cron": "Must be text."})
    connection = api.post("/connections", json={"name": "c", "base_url": "http://127.0.0.1:9/v1",
                                                "extra_headers": {"X-Team": ["a"]}})
    assert (connection.status_code, connection.get_json()["fields"]) == (422, {"extra_headers": "Must be text."})
    assert api.get("/connections").get_json() == {"connections": []}
    assert api.get(f"/tasks/{task['id']}").get_json()["status"] == "active"


@pytest.mark.parametrize("path", ["/tasks/{}", "/tasks/{}/executions", "/connections/{}"])
def test_ids_beyond_the_column_range_are_404(api, path):
    # An id past the integer column's range is answered like any unknown id.
    response = api.get(path.format(10**20))
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_nul_in_connection_fields_is_422_and_changes_nothing(api):
    created = api.post("/connections", json={"name": "local", "base_url": "http://127.0.0.1:9/v1"}).get_json()
    for field in ("name", "base_url", "api_key", "default_model"):
        response = api.patch(f"/connections/{created['id']}", json={field: "a\x00b"})
        assert (response.status_code, response.get_json()["fields"]) == (422, {field: "Must not contain NUL characters."})
    headers = api.patch(f"/connections/{created['id']}", json={"extra_headers": {"X-Team": "a\x00"}})
    assert headers.get_json()["fields"] == {"extra_headers": "Must not contain NUL characters."}
    assert api.get(f"/connections/{created['id']}").get_json() == created


@pytest.mark.parametrize("depth", [21, 100_000])
def test_deeply_nested_json_is_400(api, depth):
    body = '{"name": ' + "[" * depth + "]" * depth + "}"
    response = api.post("/tasks", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {"error": "malformed_json",
                                   "message": "The request body is nested more than 20 levels deep."}
    assert api.get("/tasks").get_json() == {"tasks": []}


def test_nesting_up_to_the_limit_is_read(api):
    body = '{"name": ' + "[" * 19 + "]" * 19 + "}"
    response = api.post("/tasks", data=body, content_type="application/json")
    assert (response.status_code, response.get_json()["fields"]["name"]) == (422, "Must be text.")


def test_a_body_over_one_mebibyte_is_413(api):
    response = api.post("/tasks", json={**INTERVAL, "prompt": "x" * (1024 * 1024)})
    assert response.status_code == 413
    assert response.get_json() == {"error": "request_entity_too_large",
                                   "message": "The request body is larger than 1048576 bytes."}
    assert api.get("/tasks").get_json() == {"tasks": []}


def test_last_run_is_the_newest_execution(api):
    task = create(api, CRONTAB)
    api.post(f"/tasks/{task['id']}/run")
    newest = api.post(f"/tasks/{task['id']}/run").get_json()["execution"]
    shown = api.get(f"/tasks/{task['id']}").get_json()["last_run"]
    assert shown["id"] == newest["id"]
    assert "output" not in shown
