"""The API keeps its OpenAPI contract: real answers validate against the document it serves."""
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.test import EnvironBuilder

from promptbeat.extensions import db
from promptbeat.models import ChannelKind, Execution, NotifyOn, OverlapPolicy, ScheduleType, Trigger
from promptbeat.runs.states import RunStatus
from tests.outputs.fakes import script_answers
from tests.runs.test_execution import run

CRONTAB = {"name": "Weekday briefing", "prompt": "Brief me", "schedule_type": "crontab", "cron": "0 9 * * 1-5",
           "timezone": "Europe/Berlin", "enabled": False}


@pytest.fixture
def contract(client):
    document = client.get("/api/openapi.json").get_json()
    # openapi-core reads JSON bodies itself; a CSV body (GET /api/runs?format=csv) is text.
    return OpenAPI.from_dict(document, config=Config(extra_media_type_deserializers={"text/csv": bytes.decode}))


@pytest.fixture
def checked(api, contract):
    """Call the API and validate the request and the answer against the document; returns the answer."""

    class Checked:
        def __getattr__(self, method):
            def call(path, **kwargs):
                response = getattr(api, method)(path, **kwargs)
                # The served request's body stream is spent; the same request, built again, is read instead.
                request = EnvironBuilder(path="/api" + path, method=method.upper(), **kwargs).get_request()
                contract.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response))
                return response
            return call

    return Checked()


def schemas(client):
    return client.get("/api/openapi.json").get_json()["components"]["schemas"]


def enum_of(schema):
    return set(schema["enum"])


def test_document_lists_every_api_route(app):
    document = app.test_client().get("/api/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    routes = {(rule.rule.replace("<int:", "{").replace(">", "}"), method)
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")
              and rule.rule not in ("/api/openapi.json", "/api/docs")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == documented
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids)) == 31


def test_document_enums_are_the_code_enums(client):
    components = schemas(client)
    status = components["ExecutionBrief"]["properties"]["status"]
    assert enum_of(components[status["$ref"].rsplit("/", 1)[1]]) == set(RunStatus) >= {"lost"}
    for owner, field, enum in [("Task", "schedule_type", ScheduleType), ("Task", "overlap_policy", OverlapPolicy),
                               ("ExecutionBrief", "trigger", Trigger)]:
        ref = components[owner]["properties"][field]["$ref"]
        assert enum_of(components[ref.rsplit("/", 1)[1]]) == set(enum), field
    kind = components["Channel"]["properties"]["kind"]["$ref"]
    assert enum_of(components[kind.rsplit("/", 1)[1]]) == set(ChannelKind)
    rules = components["Task"]["properties"]["notify_on"]["items"]["$ref"]
    assert enum_of(components[rules.rsplit("/", 1)[1]]) == set(NotifyOn)


def test_a_task_that_has_not_run_validates(checked):
    created = checked.post("/tasks", json=CRONTAB)
    assert created.status_code == 201
    task = created.get_json()
    assert task["last_run"] is None
    assert checked.get(f"/tasks/{task['id']}").get_json()["last_run"] is None
    assert [t["id"] for t in checked.get("/tasks").get_json()["tasks"]] == [task["id"]]
    assert checked.get(f"/tasks/{task['id']}/executions").get_json() == {"executions": []}


def test_a_task_with_runs_of_every_status_validates(app, checked):
    task = checked.post("/tasks", json=CRONTAB).get_json()
    assert checked.post(f"/tasks/{task['id']}/run", json={"allow_overlap": True}).status_code == 202
    with app.app_context():
        for status in RunStatus:
            db.session.add(Execution(task_id=task["id"], status=status, trigger=Trigger.MANUAL, catch_up=False))
        db.session.commit()
    runs = checked.get(f"/tasks/{task['id']}/executions").get_json()["executions"]
    assert {run["status"] for run in runs} == set(RunStatus)
    assert checked.get(f"/tasks/{task['id']}").get_json()["last_run"]["id"] == runs[0]["id"]
    assert checked.get(f"/tasks/{task['id']}/usage?days=7").get_json()["total"]["runs"] == len(runs)
    listed = checked.get(f"/runs?task_id={task['id']}&limit=3").get_json()
    assert len(listed["runs"]) == 3 and listed["next_cursor"]
    everything = checked.get(f"/runs?cursor={listed['next_cursor']}&limit=500").get_json()["runs"]
    assert {run["status"] for run in listed["runs"] + everything} == set(RunStatus)
    assert checked.get("/runs?format=csv&status=success").mimetype == "text/csv"
    assert checked.get("/usage").status_code == 200


def test_other_answers_validate(checked):
    task = checked.post("/tasks", json=CRONTAB).get_json()
    assert checked.patch(f"/tasks/{task['id']}", json={"cron": "0 10 * * *"}).get_json()["cron"] == "0 10 * * *"
    assert checked.post(f"/tasks/{task['id']}/pause", json={"note": "holiday"}).get_json()["pause_note"] == "holiday"
    assert checked.post(f"/tasks/{task['id']}/resume").get_json()["status"] == "active"
    assert checked.post(f"/tasks/{task['id']}/disable").get_json()["status"] == "paused"
    assert checked.post(f"/tasks/{task['id']}/enable").get_json()["enabled"] is True
    preview = checked.post("/schedule/preview", json={"schedule_type": "crontab", "cron": "0 9 * * *"})
    assert len(preview.get_json()["next_runs"]) == 5
    connection = checked.post("/connections", json={"name": "local", "base_url": "http://127.0.0.1:9/v1",
                                                    "extra_headers": {"X-Team": "a"}})
    assert connection.status_code == 201
    connection_id = connection.get_json()["id"]
    assert checked.get(f"/connections/{connection_id}").get_json()["has_api_key"] is False
    assert checked.patch(f"/connections/{connection_id}", json={"api_key": "sk-x"}).get_json()["has_api_key"]
    assert checked.post(f"/connections/{connection_id}/test").get_json()["ok"] is False
    assert len(checked.get("/connections").get_json()["connections"]) == 1
    assert checked.delete(f"/connections/{connection_id}").status_code == 204
    run_id = checked.post(f"/tasks/{task['id']}/run").get_json()["execution"]["id"]
    assert checked.post(f"/executions/{run_id}/cancel").get_json()["status"] == "cancelled"
    assert checked.post(f"/executions/{run_id}/retry").get_json()["retry_of"] == run_id
    assert checked.post(f"/executions/{run_id}/cancel").status_code == 409
    assert checked.delete(f"/tasks/{task['id']}").status_code == 204


def test_error_answers_validate(checked):
    assert checked.get("/tasks/999").status_code == 404
    assert checked.post("/tasks", json={"name": "n", "prompt": "p", "schedule_type": []}).status_code == 422
    assert checked.get("/usage?days=99999999999999999999").status_code == 400
    assert checked.get("/tasks/1/executions?limit=0").status_code in (400, 404)
    assert checked.post("/executions/999/cancel").status_code == 404


def test_structured_runs_and_test_runs_validate(app, checked, fake_llm):
    schema = {"type": "object", "properties": {"price": {"type": "number"}}}
    task = checked.post("/tasks", json={**CRONTAB, "output_schema": schema, "ignore_patterns": ["^x"]}).get_json()
    script_answers(fake_llm, '{"price": 1}', '{"price": 2}', '{"price": 3}', "no JSON")
    run(app, task["id"]), run(app, task["id"])
    runs = checked.get(f"/tasks/{task['id']}/executions").get_json()["executions"]
    assert [(r["changed"], r["parsed_output"]) for r in runs] == [(True, {"price": 2}), (None, {"price": 1})]
    assert runs[0]["diff"] == "~ $.price: 1 → 2"
    assert checked.post("/tasks/test", json={**CRONTAB, "output_schema": schema}).get_json()["error"] is None
    assert checked.post("/tasks/test", json={**CRONTAB, "output_schema": schema}).get_json()["error"]
