"""The form's schema and pattern fields, its Test run, the change timeline and the side-by-side view."""
import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from tests.outputs.fakes import script_answers
from tests.runs.test_execution import add_task, run
from tests.web.test_forms import created_task_id, form_data, text

MARKUP = "<script>alert(1)</script>"


def test_the_form_saves_a_schema_and_patterns_and_shows_them_again(app, signed_in):
    data = form_data(signed_in, "/tasks/new", enabled="", output_schema='{"type": "object"}',
                     ignore_patterns="^Updated\r\n\r\n^At \\d+")
    task_id = created_task_id(signed_in.post("/tasks/new", data=data))
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert (task.output_schema, task.ignore_patterns) == ({"type": "object"}, ["^Updated", "^At \\d+"])
    page = text(signed_in.get(f"/tasks/{task_id}/edit"))
    assert '"type": "object"' in page and "^Updated\n^At \\d+" in page


@pytest.mark.parametrize("field,value,message", [
    ("output_schema", "{not json", "Not valid JSON"),
    ("output_schema", '"just text"', "Must be a JSON Schema object"),
    ("output_schema", '{"type": "' + MARKUP + '"}', "Not a valid JSON Schema"),
    ("output_schema", "[" * 5000 + "]" * 5000, "Not valid JSON"),
    ("ignore_patterns", "(a)\\1", "is not a regular expression RE2 accepts"),
    ("ignore_patterns", "ok\x00", "must be one line, without control characters"),
    ("ignore_patterns", MARKUP + "(", "is not a regular expression RE2 accepts"),
])
def test_hostile_form_values_are_refused_on_their_field(app, signed_in, field, value, message):
    response = signed_in.post("/tasks/new", data=form_data(signed_in, "/tasks/new", **{field: value}))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert MARKUP not in page  # echoed escaped, if at all
    assert message in text(response)
    with app.app_context():
        assert db.session.query(Task).count() == 0


def test_the_form_test_run_answers_as_json_without_saving(app, signed_in, fake_llm):
    script_answers(fake_llm, '{"price": 1}')
    data = form_data(signed_in, "/tasks/new", output_schema='{"type": "object", "required": ["price"]}')
    response = signed_in.post("/tasks/test", data=data)
    assert response.status_code == 200
    assert response.get_json()["parsed_output"] == {"price": 1}
    refused = signed_in.post("/tasks/test", data=form_data(signed_in, "/tasks/new", output_schema="{"))
    assert refused.status_code == 422 and "output_schema" in refused.get_json()["fields"]
    with app.app_context():
        assert (db.session.query(Task).count(), db.session.query(Execution).count()) == (0, 0)


def test_changes_show_on_a_timeline_and_side_by_side_escaped(app, signed_in, fake_llm):
    task_id = add_task(app)
    script_answers(fake_llm, "Price: 10\nsame", f"Price: {MARKUP}\nsame")
    first, second = run(app, task_id), run(app, task_id)
    assert second.changed is True

    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert f"/tasks/{task_id}/compare?b={second.id}" in page

    response = signed_in.get(f"/tasks/{task_id}/compare?b={second.id}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert MARKUP not in page
    assert "Price: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<tr class="replace"><td><pre>Price: 10</pre></td>' in page
    assert signed_in.get(f"/tasks/{task_id}/compare?a={first.id}&b=0").status_code == 404
    assert signed_in.get(f"/tasks/{task_id}/compare?a=99999999999&b={second.id}").status_code == 404


def test_the_side_by_side_view_of_two_long_answers_is_cut(app, signed_in, fake_llm):
    task_id = add_task(app)
    script_answers(fake_llm, "\n".join(f"a {n}" for n in range(6000)), "\n".join(f"b {n}" for n in range(6000)))
    run(app, task_id), run(app, task_id)
    page = signed_in.get(f"/tasks/{task_id}/compare").get_data(as_text=True)
    assert page.count('<tr class="replace">') == 5000
    assert "Only the first 5000 lines are shown." in page
