"""Structured output through the worker's run path against the fake model server over HTTP."""
import json

from promptbeat.extensions import db
from promptbeat.fakellm import JSON_MODE_ONLY_MODEL
from promptbeat.models import Task
from promptbeat.outputs import asking
from tests.outputs.fakes import script_answers, sent
from tests.runs.test_execution import add_task, run

PRICE = {"type": "object", "properties": {"price": {"type": "number"}, "tags": {"type": "array",
         "items": {"type": "string"}}}, "required": ["price"]}


def test_a_conforming_answer_is_parsed_and_stored_beside_the_text(app, api, fake_llm):
    task_id = add_task(app, output_schema=PRICE)
    script_answers(fake_llm, '{"price": 12.5, "tags": ["a"]}')

    execution = run(app, task_id)

    assert execution.status == "success"
    assert execution.output == '{"price": 12.5, "tags": ["a"]}'
    assert execution.parsed_output == {"price": 12.5, "tags": ["a"]}
    (request,) = sent(fake_llm)
    assert request["response_format"] == {"type": "json_schema",
                                          "json_schema": {"name": "output", "schema": PRICE, "strict": False}}
    (shown,) = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
    assert shown["parsed_output"] == {"price": 12.5, "tags": ["a"]}


def test_a_plain_task_sends_no_response_format(app, fake_llm):
    task_id = add_task(app)
    script_answers(fake_llm, "just text")
    assert run(app, task_id).parsed_output is None
    assert sent(fake_llm)[0]["response_format"] is None


def test_an_answer_off_the_schema_fails_the_run_with_the_path_and_what_was_expected(app, fake_llm):
    task_id = add_task(app, output_schema=PRICE, auto_pause_after=2)
    script_answers(fake_llm, '{"price": 1, "tags": ["ok", 7]}', "no JSON here")

    first = run(app, task_id, trigger="scheduled")
    assert (first.status, first.error_class) == ("failed", "OutputValidationError")
    assert first.error == "The answer does not match the schema at $.tags[1]: 7 is not of type 'string'."
    assert first.output == '{"price": 1, "tags": ["ok", 7]}' and first.parsed_output is None

    second = run(app, task_id, trigger="scheduled")
    assert second.error.startswith("The answer is not valid JSON: Expecting value")
    with app.app_context():
        task = db.session.get(Task, task_id)
        # Counted like any failure: two in a row pause the task.
        assert (task.consecutive_failures, task.enabled) == (2, False)
        assert "Last error: The answer is not valid JSON" in task.pause_note


def test_a_server_without_json_schema_is_asked_again_in_json_mode_with_instructions(app, fake_llm):
    asking.forget_refusals()
    task_id = add_task(app, model=JSON_MODE_ONLY_MODEL, output_schema=PRICE, system_prompt="Be brief.")
    script_answers(fake_llm, '{"price": 3}', '{"price": 4}')

    execution = run(app, task_id)

    assert (execution.status, execution.parsed_output) == ("success", {"price": 3})
    refused, asked = sent(fake_llm)
    assert refused["response_format"]["type"] == "json_schema"
    assert asked["response_format"] == {"type": "json_object"}
    system = asked["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\nAnswer with one JSON value")
    assert json.dumps(PRICE) in system["content"]
    # Remembered: the next run goes straight to JSON mode.
    assert run(app, task_id).parsed_output == {"price": 4}
    assert [r["response_format"]["type"] for r in sent(fake_llm)] == ["json_schema", "json_object", "json_object"]
