"""The API's output_schema and ignore_patterns fields, hostile input for them, and the test run."""
import pytest

from promptbeat.extensions import db
from promptbeat.models import Connection, Execution, Task
from tests.conftest import issue_api_token
from tests.outputs.fakes import script_answers, sent

SCHEMA = {"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}
BASE = {"name": "Prices", "prompt": "Price of tea?", "model": "fake-model", "schedule_type": "crontab",
        "cron": "0 0 1 1 *", "enabled": False}


def counts(app):
    with app.app_context():
        return (db.session.query(Task).count(), db.session.query(Execution).count())


def test_create_takes_and_returns_schema_and_patterns(api):
    response = api.post("/tasks", json={**BASE, "output_schema": SCHEMA, "ignore_patterns": ["^At \\d+"]})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["output_schema"], body["ignore_patterns"]) == (SCHEMA, ["^At \\d+"])
    cleared = api.patch(f"/tasks/{body['id']}", json={"output_schema": None, "ignore_patterns": []}).get_json()
    assert (cleared["output_schema"], cleared["ignore_patterns"]) == (None, None)


def deep(levels):
    value = {"type": "object"}
    for _ in range(levels):
        value = {"type": "object", "properties": {"a": value}}
    return value


@pytest.mark.parametrize("field,value,message", [
    ("output_schema", "text", "Must be an object."),
    ("output_schema", [1], "Must be an object."),
    ("output_schema", {"type": "nope"}, "Not a valid JSON Schema at $.type"),
    ("output_schema", {"type": "string", "pattern": "(a)\\1"}, "is not a regular expression RE2 accepts"),
    ("output_schema", {"$ref": "https://example.com/schema.json"}, "must point inside the schema"),
    ("output_schema", {"$ref": "#/$defs/missing"}, "points to nothing in the schema"),
    ("output_schema", {"description": "a\x00b"}, "must not contain NUL"),
    ("output_schema", {"description": "x" * 40_000}, "longer than 32000 characters"),
    ("output_schema", deep(8), "nested more than 12 levels deep"),
    ("output_schema", {"$schema": "http://json-schema.org/draft-04/schema#"}, "Only JSON Schema draft 2020-12"),
    ("ignore_patterns", "^x", "Must be a list"),
    ("ignore_patterns", [1], "Must be text."),
    ("ignore_patterns", ["a\x00"], "Must not contain NUL"),
    ("ignore_patterns", ["a\r\nb"], "must be one line"),
    ("ignore_patterns", ["(?<=a)b"], "is not a regular expression RE2 accepts"),
    ("ignore_patterns", ["x" * 201], "at most 200 characters"),
    ("ignore_patterns", ["a"] * 21, "At most 20 patterns."),
    ("ignore_patterns", ["<script>alert(1)</script>("], "is not a regular expression RE2 accepts"),
])
def test_hostile_values_get_a_field_message_and_change_nothing(app, api, field, value, message):
    before = counts(app)
    response = api.post("/tasks", json={**BASE, field: value})
    assert response.status_code == 422, response.get_json()
    assert message in response.get_json()["fields"][field]
    assert counts(app) == before


def test_the_test_run_answers_without_saving_anything(app, api, fake_llm):
    script_answers(fake_llm, '{"price": 2}')
    before = counts(app)
    response = api.post("/tasks/test", json={**BASE, "prompt": "Tea on {{ weekday }}?", "output_schema": SCHEMA})
    assert response.status_code == 200
    body = response.get_json()
    assert body["output"] == '{"price": 2}' and body["parsed_output"] == {"price": 2} and body["error"] is None
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    (request,) = sent(fake_llm)
    assert request["messages"][-1]["content"].startswith("Tea on ") and "{{" not in request["messages"][-1]["content"]
    assert request["response_format"]["type"] == "json_schema"
    assert counts(app) == before


def test_the_test_run_shows_a_schema_failure_with_the_answer(api, fake_llm):
    script_answers(fake_llm, '{"price": "cheap"}')
    body = api.post("/tasks/test", json={**BASE, "output_schema": SCHEMA}).get_json()
    assert body["output"] == '{"price": "cheap"}' and body["parsed_output"] is None
    assert body["error"] == "The answer does not match the schema at $.price: 'cheap' is not of type 'number'."


def test_the_test_run_through_an_unreachable_connection_says_so(app, api):
    with app.app_context():
        connection = Connection(name="Down", base_url="http://127.0.0.1:9/v1")
        db.session.add(connection)
        db.session.commit()
        connection_id = connection.id
    response = api.post("/tasks/test", json={**BASE, "connection_id": connection_id})
    assert response.status_code == 200
    body = response.get_json()
    assert body["output"] is None and body["error"].startswith("APIConnectionError: could not reach the model server")


def test_the_test_run_refuses_invalid_input_and_viewers(app, client, api):
    response = api.post("/tasks/test", json={**BASE, "output_schema": {"type": 5}, "prompt": "{{ oops"})
    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == {"output_schema", "prompt"}
    viewer = issue_api_token(app, email="viewer@example.com", role="viewer")
    response = client.post("/api/tasks/test", json=BASE, headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 403


def test_the_test_run_is_in_the_openapi_document(client):
    document = client.get("/api/openapi.json").get_json()
    operation = document["paths"]["/api/tasks/test"]["post"]
    assert operation["operationId"] == "testTask"
    assert set(operation["responses"]) >= {"200", "401", "403", "422"}
