"""Prompt templates are bounded: a step and time budget and a size cap, at save and at run time."""
import re
import secrets
import time
from datetime import datetime, timezone
from html import unescape

import pytest
from celery import Celery

from promptbeat.runs import prompts
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from promptbeat.settings import Settings
from tests import services
from tests.conftest import csrf_token
from tests.services import wait_for

STEPS = 100_000
LIMITS = prompts.Limits(max_steps=STEPS, max_seconds=60, max_chars=20_000)
DEFAULTS = prompts.Limits.from_settings(Settings(secret_key="x"))
TOO_LONG = f"The prompt template took too long to render (step budget of {STEPS} exceeded)."
MOMENT = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)
RUNAWAY = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
# Each of these would take minutes of CPU or gigabytes of memory unbounded.
ATTACKS = {
    "nested loops over range": RUNAWAY,
    "nested loops over a string": "{% for a in last_output %}{% for b in last_output %}{% for c in last_output %}"
                                  "{% endfor %}{% endfor %}{% endfor %}",
    "string repetition": '{{ "x" * 10**9 }}',
    "list repetition": "{{ [0] * 10**9 }}",
    "nested list repetition, printed": "{{ [[[0] * 1000] * 1000] * 1000 }}",
    "power tower": "{{ 10 ** (10 ** 10) }}",
    "big power": "{{ 99999999999999999999 ** 99999999999 }}",
    "round to far digits": "{{ 5|round(-1000000000) }}",
    "big integer products": "{% set ns = namespace(x=2 ** (64 * 40000)) %}{{ (ns.x * ns.x) % 7 }}",
    "big integer division": "{% set ns = namespace(x=2 ** (64 * 40000)) %}{{ ns.x // (2 ** (64 * 20000) + 1) }}",
    "center filter": '{{ "x"|center(1000000000) }}',
    "center method": '{{ "x".center(1000000000) }}',
    "zfill method": '{{ "1".zfill(1000000000) }}',
    "to_bytes": '{{ (1).to_bytes(1000000000, "big") }}',
    "expandtabs": '{{ ("\t" * 1000).expandtabs(1000000) }}',
    "replace method": '{{ ("x" * 20000).replace("x", "y" * 20000) }}',
    "replace filter with an empty needle": '{{ ("x" * 20000)|replace("", "y" * 20000) }}',
    "join filter": '{{ range(100000)|join("y" * 20000) }}',
    "join method": '{{ ("y" * 20000).join(range(100000)|list) }}',
    "indent": '{{ ("a\n" * 10000)|indent(100000) }}',
    "wordwrap": '{{ ("a " * 10000)|wordwrap(1, wrapstring="z" * 10000) }}',
    "percent width": '{{ "%0999999999d" % 1 }}',
    "percent star width": '{{ "%*d" % (999999999, 1) }}',
    "format filter": '{{ "%.999999999f"|format(1) }}',
    "str.format width": '{{ "{:>999999999}".format(1) }}',
    "str.format nested width": '{{ "{:>{}}".format(1, 999999999) }}',
    "batch fill": '{{ [1]|batch(1000000000, "x")|list }}',
    "slice": "{{ [1]|slice(1000000000)|list }}",
    "lazy filter chains": "{{ range(100000)|select|select|select|select|select|select|list|length }}",
    "exponential macro recursion": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
                                   "{{ f(40) }}",
    "doubling through macro arguments": '{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s|length }}{% endmacro %}'
                                        '{{ f("x", 40) }}',
    "doubling a namespace": '{% set ns = namespace(s="x") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}'
                            "{% endfor %}{{ ns.s|length }}",
    "doubling by +": '{% set ns = namespace(s="x") %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}'
                     "{% endfor %}{{ ns.s|length }}",
    "doubling a variable": '{% set x = "x" %}' + "{% set x = x ~ x %}" * 40 + "{{ x|length }}",
    "lipsum paragraphs": "{% for w in lipsum(1000000) %}{% endfor %}",
    "lipsum words": "{% for c in lipsum(100, max=100000) %}{% endfor %}",
    "loops into a set block": "{% set s %}{% for i in range(100000) %}{% for j in range(100000) %}"
                              + "x" * 40 + "{% endfor %}{% endfor %}{% endset %}{{ s|length }}",
    # Within the steps of its loop, but 40 MB of literal text never sent.
    "literal text into an unused set block": "{% set s %}{% for i in range(40000) %}" + "x" * 1000 + "{% endfor %}"
                                             "{% endset %}done",
    "nested references printed through a dict view": "{% set a = ['x' * 100] * 10 %}"
        "{% set b = [a, a, a, a, a, a, a, a, a, a] %}{% set c = [b, b, b, b, b, b, b, b, b, b] %}"
        "{% set d = [c, c, c, c, c, c, c, c, c, c] %}{{ {'k': d}.values() }}",
    "to_bytes by keyword": '{{ (1).to_bytes(length=1000000000, byteorder="big") }}',
    "expandtabs by keyword": '{{ ("\t" * 1000).expandtabs(tabsize=1000000) }}',
    "replace filter with numbers": "{{ ('1' * 20000)|replace(1, 10 ** 4000) }}",
    "quadratic sum of lists": "{{ ([[1] * 1000] * 1000)|sum(start=[]) }}",
}


def render(text, limits=LIMITS, last_output="previous answer\n" * 600):
    return prompts.render(text, limits, task_name="Morning brief", timezone="Europe/Paris", run_count=3,
                          last_output=last_output, moment=MOMENT)


@pytest.mark.parametrize("template", ATTACKS.values(), ids=ATTACKS.keys())
def test_every_attack_fails_fast_with_a_clear_message(template):
    begun = time.monotonic()
    with pytest.raises(prompts.PromptLimitError) as raised:
        render(template)
    # The step budget stops each of them, long before the minutes or gigabytes they ask for.
    assert str(raised.value) == TOO_LONG
    assert time.monotonic() - begun < 5


def test_the_time_budget_stops_what_the_step_budget_allows():
    slow = prompts.Limits(max_steps=10**12, max_seconds=0.2, max_chars=20_000)
    begun = time.monotonic()
    with pytest.raises(prompts.PromptLimitError, match=re.escape(
            "The prompt template took too long to render (time budget of 0.2 s exceeded).")):
        render(RUNAWAY, slow)
    assert time.monotonic() - begun < 2


def test_the_size_limit_applies_to_the_rendered_prompt():
    with pytest.raises(prompts.PromptLimitError) as raised:
        render('{% for i in range(300) %}{{ "x" * 100 }}{% endfor %}')
    assert re.fullmatch(r"The rendered prompt is at least \d+ characters; the limit is 20000 "
                        r"\(PROMPTBEAT_MAX_PROMPT_CHARS\)\.", str(raised.value))
    with pytest.raises(prompts.PromptLimitError, match=re.escape(
            "The rendered prompt is 20001 characters; the limit is 20000 (PROMPTBEAT_MAX_PROMPT_CHARS).")):
        render("x" * 20_001)


def test_normal_templates_render_well_within_the_default_budget():
    template = (
        "Brief for {{ task.name }} on {{ today }} ({{ now }}), run {{ run_count }}.\n"
        "{% for line in last_output.splitlines()[:50] %}{{ loop.index }}/{{ loop.length }} {{ line|upper }}\n"
        "{% endfor %}"
        "{% for i in range(1000) %}{% if i % 250 == 0 %}[{{ i }}]{% endif %}{% endfor %}\n"
        "{{ last_output|replace('\\n', ' ')|truncate(40) }} {{ ['a', 'b']|join(', ') }} "
        "{{ '%05.1f'|format(3.14159) }} "
        "{{ '{:>6}'.format('x') }} {{ task.name|center(20) }}{% set ns = namespace(total=0) %}"
        "{% for i in range(500) %}{% set ns.total = ns.total + i %}{% endfor %} {{ ns.total }}"
    )
    output = render(template, DEFAULTS, last_output="previous answer\n" * 500)
    lines = output.splitlines()
    assert lines[0] == "Brief for Morning brief on 2026-03-02 (2026-03-02T09:30:00+01:00), run 3."
    assert lines[1] == "1/50 PREVIOUS ANSWER" and lines[50] == "50/50 PREVIOUS ANSWER"
    assert lines[51] == "[0][250][500][750]"
    assert lines[52] == "previous answer previous answer... a, b 003.1      x    Morning brief     124750"


def test_a_template_nested_past_the_parser_is_refused_with_a_message():
    with pytest.raises(prompts.PromptTemplateError, match="nested too deeply"):
        prompts.check("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", LIMITS)


def test_a_plain_prompt_is_sent_as_written():
    text = "No variables here, only {braces} and 100% of the text."
    assert render(text) == text


@pytest.fixture
def runaway_fields():
    return {"prompt": RUNAWAY, "system_prompt": '{{ "x" * 10**9 }}'}


def test_the_api_refuses_a_template_past_the_budget_and_saves_nothing(app, api, runaway_fields):
    response = api.post("/tasks", json={"name": "Runaway", **runaway_fields, "schedule_type": "crontab",
                                        "cron": "0 9 * * *"})
    assert response.status_code == 422
    fields = response.get_json()["fields"]
    assert fields["prompt"].startswith("The prompt template took too long to render (step budget of")
    assert fields["system_prompt"].startswith("The prompt template took too long to render")
    too_long = api.post("/tasks", json={"name": "Long", "prompt": '{{ "x" * 30000 }}', "schedule_type": "crontab",
                                        "cron": "0 9 * * *"})
    assert too_long.status_code == 422
    assert too_long.get_json()["fields"]["prompt"] == (
        "The rendered prompt is at least 30000 characters; the limit is 20000 (PROMPTBEAT_MAX_PROMPT_CHARS).")
    with app.app_context():
        assert db.session.execute(db.select(Task)).scalars().all() == []
    fine = api.post("/tasks", json={"name": "Fine", "prompt": "{% for i in range(100) %}{{ i }}{% endfor %} {{ now }}",
                                    "schedule_type": "crontab", "cron": "0 9 * * *"})
    assert fine.status_code == 201, fine.get_json()


def test_an_update_to_a_runaway_template_is_refused(api):
    task = api.post("/tasks", json={"name": "Fine", "prompt": "Hello", "schedule_type": "crontab",
                                    "cron": "0 9 * * *"}).get_json()
    response = api.patch(f"/tasks/{task['id']}", json={"prompt": RUNAWAY})
    assert response.status_code == 422
    assert "took too long to render" in response.get_json()["fields"]["prompt"]
    assert api.get(f"/tasks/{task['id']}").get_json()["prompt"] == "Hello"


def test_the_form_shows_the_budget_error_on_the_prompt_field(app, signed_in):
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    response = signed_in.post("/tasks/new", data={
        "csrf_token": csrf_token(page), "name": "Runaway", "prompt": RUNAWAY, "model": "fake-model",
        "temperature": "0.7", "schedule_type": "crontab", "cron": "0 9 * * *", "timezone": "UTC"})
    assert response.status_code == 422
    label = re.search(r'<label class="field[^"]*" data-field="prompt">(.*?)</label>',
                      response.get_data(as_text=True), re.S)
    errors = [unescape(m) for m in re.findall(r'<small class="field-error">(.*?)</small>', label.group(1), re.S)]
    assert len(errors) == 1 and errors[0].startswith("The prompt template took too long to render (step budget of")
    with app.app_context():
        assert db.session.execute(db.select(Task)).scalars().all() == []


@pytest.fixture
def one_process_worker(role_environ, app, tmp_path):
    """A worker with a single process, on a private Redis so no other worker takes its messages."""
    redis = services.PrivateRedis(tmp_path)
    # A budget in seconds only, so that a runaway render lasts long enough to be seen running.
    env = services.role_env({**role_environ, "REDIS_URL": redis.url, "PROMPTBEAT_TEMPLATE_MAX_STEPS": str(10**12),
                             "PROMPTBEAT_TEMPLATE_MAX_SECONDS": "3"})
    sender = Celery("sender", broker=redis.url)
    sender.conf.task_default_queue = "promptbeat"
    worker = services.start_worker(env, tmp_path / "worker.log", concurrency=1)

    def send(task_id, execution_id):
        sender.send_task("promptbeat.execute_task", args=[task_id],
                         kwargs={"trigger": "manual", "execution_id": execution_id})

    yield send
    worker.stop()
    sender.close()
    redis.stop()


def stored_run(app, prompt):
    """A task saved straight to the database, past validation (as before templates were bounded)."""
    with app.app_context():
        task = Task(name="Stored", prompt=prompt, model="fake-model", schedule_type="interval", interval_seconds=600)
        execution = Execution(task=task, trigger="manual", status="queued")
        db.session.add_all([task, execution])
        db.session.commit()
        return task.id, execution.id


def run_row(app, execution_id):
    with app.app_context():
        row = db.session.get(Execution, execution_id)
        db.session.expunge_all()
        db.session.remove()
        return row


@pytest.mark.slow
def test_a_runaway_template_fails_its_run_and_frees_the_worker(app, fake_llm, one_process_worker):
    send = one_process_worker
    marker = "Other task " + secrets.token_hex(4)
    runaway = stored_run(app, RUNAWAY)
    other = stored_run(app, marker)
    send(*runaway)
    send(*other)
    # The run is claimed (running, on its worker) before its template is rendered.
    wait_for(lambda: run_row(app, runaway[1]).status == "running", 20, "the runaway run to be claimed")
    rendering = run_row(app, runaway[1])
    assert rendering.started_at is not None and rendering.worker and rendering.prompt is None
    assert run_row(app, other[1]).status == "queued"  # the single worker process is busy rendering
    begun = time.monotonic()
    wait_for(lambda: run_row(app, other[1]).status == "success", 30, "the other task's run to succeed")
    assert time.monotonic() - begun < 15
    failed = run_row(app, runaway[1])
    assert failed.status == "failed" and failed.error_class == "TemplateError"
    assert failed.error == "The prompt template took too long to render (time budget of 3 s exceeded)."
    assert not [r for r in fake_llm.requests if "range" in r["messages"][-1]["content"]]
