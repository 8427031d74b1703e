"""Property-based: schemathesis over every operation of /api/openapi.json, alone and chained by its links.

Every answer must be documented (status, content type, body schema), no answer may be a 5xx, and
schema-invalid input must be refused with a 4xx. PostgreSQL only: it is the stricter store (NUL in
text, integer ranges) and the one promptbeat runs on.
"""
import dataclasses
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from promptbeat.extensions import db
from promptbeat.models import Channel, Connection, Execution, Task

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Examples per operation and mode, and stateful scenarios: under a minute in all on two cores when quiet,
# about two and a half minutes when other suites share them.
EXAMPLES = 40
SCENARIOS = 80
STEPS = 10
COMMON = {"deadline": None, "derandomize": True, "database": None, "phases": [Phase.explicit, Phase.generate],
          "suppress_health_check": list(HealthCheck)}


def report(kind, statuses, started):
    """The figures docs/performance.md quotes (shown with pytest -s)."""
    answered = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(f"\nfuzz {kind}: {len(statuses)} cases in {time.monotonic() - started:.0f} s, "
          f"{sum(1 for status in statuses if status >= 500)} 5xx; answers {answered}")


@pytest.fixture
def headers(api_token):
    return {"Authorization": f"Bearer {api_token}"}


@pytest.fixture
def schema(app, fake_llm):
    # A connection test calls the generated base URL; a refused or unknown host answers at once, and a
    # silent one must not hold a run for the default 15 s.
    original = app.config["PROMPTBEAT"]
    app.config["PROMPTBEAT"] = dataclasses.replace(original, llm_timeout_seconds=1.0)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    # The token is sent with every call; generated Authorization headers would only test the 401 path.
    schema.config.generation.update(with_security_parameters=False)
    yield schema
    app.config["PROMPTBEAT"] = original


def test_every_operation_alone(schema, headers, api, fake_llm):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 31
    started, statuses = time.monotonic(), []
    for number, operation in enumerate(operations):
        # Generated ids rarely exist; valid cases address a real task, connection, channel and run half the time.
        existing = {
            "connection_id": api.post("/connections", json={"name": f"local {number}", "base_url": fake_llm.url})
            .get_json()["id"],
            "channel_id": api.post("/channels", json={"name": f"hook {number}", "kind": "webhook",
                                                      "url": "http://127.0.0.1:9/hook"}).get_json()["id"],
        }
        existing["task_id"] = api.post("/tasks", json={"name": "t", "prompt": "p", "schedule_type": "crontab",
                                                       "cron": "0 9 * * *", "enabled": False,
                                                       "channel_ids": [existing["channel_id"]]}).get_json()["id"]
        # A queued run: cancelling it answers 202 once and 409 after, retrying it 409 until it is cancelled.
        existing["execution_id"] = api.post(f"/tasks/{existing['task_id']}/run").get_json()["execution"]["id"]
        modes = [(GenerationMode.POSITIVE, CHECKS)]
        if operation.definition.raw["parameters"] or "requestBody" in operation.definition.raw:  # else nothing to spoil
            modes.append((GenerationMode.NEGATIVE, [*CHECKS, negative_data_rejection]))
        for mode, checks in modes:
            @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
            @settings(max_examples=EXAMPLES, **COMMON)
            def check(case, real):
                if real and mode is GenerationMode.POSITIVE and case.path_parameters:
                    case.path_parameters = {name: existing[name] for name in case.path_parameters}
                response = case.call_and_validate(headers=headers, checks=checks)
                statuses.append(response.status_code)

            check()
    report("alone", statuses, started)


def test_linked_operations(app, schema, headers, fake_llm):
    valid = {
        "createTask": st.builds(dict, name=st.text(min_size=1, max_size=20).filter(str.strip), prompt=st.just("p"),
                                schedule_type=st.just("crontab"), cron=st.sampled_from(["0 9 * * *", "*/5 * * * *"]),
                                enabled=st.booleans()),
        "createConnection": st.builds(dict, name=st.uuids().map(lambda u: f"fuzz-{u.hex[:12]}"),
                                      base_url=st.just(fake_llm.url)),
        "createChannel": st.builds(dict, name=st.uuids().map(lambda u: f"fuzz-{u.hex[:12]}"),
                                   kind=st.just("webhook"), url=st.just("http://127.0.0.1:9/hook")),
    }

    @schema.hook
    def flatmap_body(context, body):
        # Mostly random bodies fail the domain rules, and a 422 leaves nothing to follow links from:
        # a creation is, as often as not, a valid one.
        strategy = valid.get(context.operation.definition.raw["operationId"])
        return st.one_of(st.just(body), strategy) if strategy is not None else st.just(body)

    workflow = schema.as_state_machine()
    statuses = []

    class Authenticated(workflow):
        def setup(self):
            # Each scenario starts from no tasks and no connections, so a replayed scenario meets the
            # same answers (a connection name taken by an earlier scenario would turn a 201 into a 422).
            with app.app_context():
                for model in (Execution, Task, Connection, Channel):
                    db.session.execute(db.delete(model))
                db.session.commit()

        def get_call_kwargs(self, case):
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=headers)

    started = time.monotonic()
    Authenticated.run(settings=settings(max_examples=SCENARIOS, stateful_step_count=STEPS, **COMMON))
    report(f"linked ({SCENARIOS} scenarios)", statuses, started)
