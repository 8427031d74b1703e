"""Validation: the API and the form reject the same input with the same message, and save nothing."""
import re
from html import unescape

from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from tests.conftest import csrf_token

VALID = {"name": "Daily digest", "prompt": "Summarise the news", "schedule_type": "interval", "interval_seconds": 600}
LONG_PROMPT = "x" * 20_001

# (API input, form input, API field, form field, message)
INVALID = {
    "empty name": ({"name": ""}, {"name": ""}, "name", "name", "This field is required."),
    "blank name": ({"name": "   "}, {"name": "   "}, "name", "name", "This field is required."),
    "empty prompt": ({"prompt": ""}, {"prompt": ""}, "prompt", "prompt", "This field is required."),
    "interval below minimum": (
        {"interval_seconds": 5}, {"interval_minutes": "0"}, "interval_seconds", "interval_minutes", None,
    ),
    "bad cron": (
        {"schedule_type": "crontab", "cron": "every monday"},
        {"schedule_type": "crontab", "cron": "every monday"},
        "cron", "cron",
        "Use a 5-field cron expression: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5'.",
    ),
    "cron minute out of range": (
        {"schedule_type": "crontab", "cron": "61 * * * *"}, {"schedule_type": "crontab", "cron": "61 * * * *"},
        "cron", "cron", None,
    ),
    "six-field cron": (
        {"schedule_type": "crontab", "cron": "0 0 9 * * *"}, {"schedule_type": "crontab", "cron": "0 0 9 * * *"},
        "cron", "cron", None,
    ),
    "hour 25": (
        {"schedule_type": "fixed_time", "time": "25:00"}, {"schedule_type": "fixed_time", "time": "25:00"},
        "time", "time", "Use HH:MM in 24-hour time, for example 09:30.",
    ),
    "9am": (
        {"schedule_type": "fixed_time", "time": "9am"}, {"schedule_type": "fixed_time", "time": "9am"},
        "time", "time", "Use HH:MM in 24-hour time, for example 09:30.",
    ),
    "unknown time zone": (
        {"timezone": "Mars/Olympus_Mons"}, {"timezone": "Mars/Olympus_Mons"}, "timezone", "timezone",
        "Unknown time zone; use an IANA name such as Europe/Berlin.",
    ),
    "temperature above 2": (
        {"temperature": 3}, {"temperature": "3"}, "temperature", "temperature", "Must be between 0 and 2.",
    ),
    "max tokens 0": (
        {"max_tokens": 0}, {"max_tokens": "0"}, "max_tokens", "max_tokens", "Must be between 1 and 1000000.",
    ),
    "line break in the name": (
        {"name": "Daily\r\nForged log line"}, {"name": "Daily\r\nForged log line"}, "name", "name",
        "Must be one line, without control characters.",
    ),
    "tab in the model": (
        {"model": "fake\tmodel"}, {"model": "fake\tmodel"}, "model", "model",
        "Must be one line, without control characters.",
    ),
    "terminal escape in the prompt": (
        {"prompt": "Summarise \x1b[2J"}, {"prompt": "Summarise \x1b[2J"}, "prompt", "prompt",
        "Must not contain control characters other than line breaks and tabs.",
    ),
    "NaN interval": (
        {"interval_seconds": "NaN"}, {"interval_minutes": "NaN"}, "interval_seconds", "interval_minutes",
        "Must be a whole number.",
    ),
    "infinite interval": (
        {"interval_seconds": "inf"}, {"interval_minutes": "inf"}, "interval_seconds", "interval_minutes",
        "Must be a whole number.",
    ),
    "prompt over the limit": (
        {"prompt": LONG_PROMPT}, {"prompt": LONG_PROMPT}, "prompt", "prompt",
        "Must be at most 20000 characters (got 20001).",
    ),
}
FORM_INTERVAL_MESSAGE = "Must be between 1 and 527040."
API_INTERVAL_MESSAGE = "Must be between 10 and 31622400."
CRON_MESSAGE = INVALID["bad cron"][4]


def expected_message(case, channel):
    message = INVALID[case][4]
    if message is None:
        if case == "interval below minimum":
            return API_INTERVAL_MESSAGE if channel == "api" else FORM_INTERVAL_MESSAGE
        return CRON_MESSAGE
    return message


def assert_nothing_saved(app, redis_client):
    with app.app_context():
        assert db.session.execute(db.select(Task)).scalars().all() == []
        assert db.session.execute(db.select(Execution)).scalars().all() == []
    assert redis_client.keys("promptbeat:task:*") == []
    assert redis_client.llen("promptbeat") == 0


def field_errors(page, field):
    """The error messages the form shows under one field."""
    match = re.search(rf'<label class="field[^"]*" data-field="{field}">(.*?)</label>', page, re.S)
    assert match, f"no {field} field on the page"
    return [unescape(m) for m in re.findall(r'<small class="field-error">(.*?)</small>', match.group(1), re.S)]


def form_data(client, path, **values):
    page = client.get(path).get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), "name": "Daily digest", "prompt": "Summarise the news",
            "system_prompt": "", "model": "fake-model", "temperature": "0.7", "max_tokens": "",
            "schedule_type": "interval", "interval_minutes": "30", "time": "", "cron": "", "timezone": "UTC",
            "enabled": "y"}
    data.update(values)
    return data


def test_api_rejects_invalid_input(app, api, redis_client, subtests):
    for case, (api_input, _, field, _, _) in INVALID.items():
        with subtests.test(case):
            response = api.post("/tasks", json={**VALID, **api_input})
            assert response.status_code == 422
            body = response.get_json()
            assert body["error"] == "validation_failed"
            assert body["fields"] == {field: expected_message(case, "api")}
            assert_nothing_saved(app, redis_client)


def test_form_rejects_invalid_input(app, signed_in, redis_client, subtests):
    for case, (_, form_input, _, field, _) in INVALID.items():
        with subtests.test(case):
            data = form_data(signed_in, "/tasks/new", **form_input)
            response = signed_in.post("/tasks/new", data=data)
            assert response.status_code == 422
            page = response.get_data(as_text=True)
            assert field_errors(page, field) == [expected_message(case, "form")]
            # The page comes back with what the user typed, ready to correct.
            assert f'value="{data["model"]}"' in page
            if data["name"].strip():
                assert f'value="{data["name"]}"' in page
            assert_nothing_saved(app, redis_client)


def test_api_interval_in_minutes_below_one_minute(api):
    response = api.post("/tasks", json={"name": "n", "prompt": "p", "interval_minutes": 0})
    assert response.status_code == 422
    assert response.get_json()["fields"] == {"interval_minutes": FORM_INTERVAL_MESSAGE}


def test_api_interval_task_without_an_interval(api):
    response = api.post("/tasks", json={"name": "n", "prompt": "p", "schedule_type": "interval"})
    assert response.status_code == 422
    assert response.get_json()["fields"] == {
        "interval_minutes": "Give the interval: interval_minutes (or interval_seconds).",
    }


def test_api_reports_every_invalid_field_at_once(api):
    response = api.post("/tasks", json={"name": "", "prompt": "p", "temperature": 3, "schedule_type": "weekly"})
    assert response.status_code == 422
    assert response.get_json()["fields"] == {
        "name": "This field is required.",
        "temperature": "Must be between 0 and 2.",
        "schedule_type": "Must be one of: interval, fixed_time, crontab, once.",
    }


WRONG_TYPES = [
    ({"colour": "red"}, "colour", "Unknown field."),
    ({"temperature": "hot"}, "temperature", "Must be a number."),
    ({"temperature": True}, "temperature", "Must be a number."),
    ({"max_tokens": 10.5}, "max_tokens", "Must be a whole number."),
    ({"name": 123}, "name", "Must be text."),
    ({"enabled": "maybe"}, "enabled", "Must be true or false."),
    ({"notify_on": "every"}, "notify_on", "Must be a list."),
    ({"notify_on": ["every", "sometimes"]}, "notify_on", "Must be one of: every, change, failure, recovery, auto_pause, budget."),
    ({"channel_ids": ["1"]}, "channel_ids", "Must be a whole number."),
    ({"channel_ids": list(range(1, 100))}, "channel_ids", "The list is too long."),
    # A list or an object is no choice, and an empty one does not mean "not set".
    *[({field: value}, field, message)
      for field, message in (("schedule_type", "Must be one of: interval, fixed_time, crontab, once."),
                             ("overlap_policy", "Must be one of: skip, allow."))
      for value in (["skip"], [], {"json": 1}, {}, 1, True)],
]


def test_api_rejects_unknown_fields_and_wrong_types(app, api, redis_client, subtests):
    for value, field, message in WRONG_TYPES:
        with subtests.test(field=field, value=value[field]):
            response = api.post("/tasks", json={**VALID, **value})
            assert response.status_code == 422
            assert response.get_json()["fields"] == {field: message}
            assert_nothing_saved(app, redis_client)


def test_multi_line_text_keeps_its_line_breaks_and_tabs(api):
    text = "Summarise:\r\n\t- the news\n\t- the weather"
    response = api.post("/tasks", json={**VALID, "prompt": text, "system_prompt": text, "enabled": False})
    assert response.status_code == 201, response.get_json()
    task = api.get(f"/tasks/{response.get_json()['id']}").get_json()
    assert (task["prompt"], task["system_prompt"]) == (text, text)


def test_api_malformed_json_is_400(app, api, redis_client, subtests):
    for body, content_type in [
        ('{"name": "n", "prompt": ', "application/json"),
        ("name=n&prompt=p", "application/x-www-form-urlencoded"),
        ("", "application/json"),
    ]:
        with subtests.test(body=body, content_type=content_type):
            response = api.post("/tasks", data=body, content_type=content_type)
            assert response.status_code == 400
            assert response.get_json() == {
                "error": "malformed_json",
                "message": "The request body must be a JSON object (Content-Type: application/json).",
            }
            assert_nothing_saved(app, redis_client)


def test_api_non_object_json_is_400(app, api, redis_client, subtests):
    for body in [[VALID], "a task", 42]:
        with subtests.test(body=body):
            response = api.post("/tasks", json=body)
            assert response.status_code == 400
            assert response.get_json() == {
                "error": "malformed_json",
                "message": "The request body must be a JSON object, not a list or a value.",
            }
            assert_nothing_saved(app, redis_client)


def test_api_patch_with_a_non_object_is_400(api):
    task_id = api.post("/tasks", json={**VALID, "enabled": False}).get_json()["id"]
    response = api.patch(f"/tasks/{task_id}", json=["name", "x"])
    assert response.status_code == 400
    assert api.get(f"/tasks/{task_id}").get_json()["name"] == VALID["name"]


def test_api_unknown_task_is_404(api, subtests):
    for method, path in [
        ("get", "/tasks/999999"),
        ("patch", "/tasks/999999"),
        ("delete", "/tasks/999999"),
        ("post", "/tasks/999999/enable"),
        ("post", "/tasks/999999/disable"),
        ("post", "/tasks/999999/run"),
        ("get", "/tasks/999999/executions"),
    ]:
        with subtests.test(method=method, path=path):
            kwargs = {"json": {"name": "x"}} if method == "patch" else {}
            response = getattr(api, method)(path, **kwargs)
            assert response.status_code == 404
            assert response.get_json() == {"error": "not_found", "message": "No task with id 999999."}


def test_pages_for_an_unknown_task_are_404(signed_in):
    for path in ["/tasks/999999", "/tasks/999999/edit"]:
        response = signed_in.get(path)
        assert response.status_code == 404, path
        assert "Not found." in response.get_data(as_text=True)


def saved_state(app, redis_client, task_id):
    """The task's row and its RedBeat entry (hash and schedule score), to compare before and after."""
    with app.app_context():
        task = db.session.get(Task, task_id)
        row = {column.name: getattr(task, column.key) for column in Task.__table__.columns}
        executions = db.session.execute(db.select(Execution.id).filter_by(task_id=task_id)).scalars().all()
        db.session.remove()
    key = f"promptbeat:task:{task_id}"
    entry = redis_client.hgetall(key)
    assert entry["definition"] and entry["meta"]
    return row, entry, redis_client.zscore("promptbeat::schedule", key), executions


def test_rejected_patch_changes_nothing_in_the_database_or_redis(app, api, redis_client):
    created = api.post("/tasks", json={
        "name": "Weekday briefing", "prompt": "Brief me", "schedule_type": "crontab", "cron": "0 9 * * 1-5",
        "timezone": "Europe/Berlin",
    }).get_json()
    before = saved_state(app, redis_client, created["id"])

    response = api.patch(f"/tasks/{created['id']}", json={"name": "Renamed", "cron": "0 9 * *"})
    assert response.status_code == 422
    assert response.get_json()["fields"] == {"cron": CRON_MESSAGE}

    assert saved_state(app, redis_client, created["id"]) == before
    assert api.get(f"/tasks/{created['id']}").get_json() == created


def test_rejected_patch_of_an_interval_task_neither_restarts_nor_runs_it(app, api, redis_client):
    created = api.post("/tasks", json=VALID).get_json()
    before = saved_state(app, redis_client, created["id"])
    assert len(before[3]) == 1  # the run at creation

    response = api.patch(f"/tasks/{created['id']}", json={"name": "Renamed", "interval_seconds": 5})
    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == {"interval_seconds"}
    assert saved_state(app, redis_client, created["id"]) == before


def test_rejected_form_edit_changes_nothing_in_the_database_or_redis(app, api, signed_in, redis_client):
    created = api.post("/tasks", json={
        "name": "Morning note", "prompt": "Write a note", "schedule_type": "fixed_time", "time": "09:00",
        "timezone": "Asia/Shanghai",
    }).get_json()
    before = saved_state(app, redis_client, created["id"])
    edit = f"/tasks/{created['id']}/edit"

    data = form_data(signed_in, edit, name="Renamed", prompt="Something else", schedule_type="fixed_time",
                     time="25:00", timezone="Asia/Shanghai")
    response = signed_in.post(edit, data=data)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert field_errors(page, "time") == ["Use HH:MM in 24-hour time, for example 09:30."]
    assert 'value="25:00"' in page  # what the user typed, to correct

    assert saved_state(app, redis_client, created["id"]) == before
    detail = signed_in.get(f"/tasks/{created['id']}").get_data(as_text=True)
    assert "Morning note" in detail and "Renamed" not in detail
