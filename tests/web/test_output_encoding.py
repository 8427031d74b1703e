"""Output encoding: every template, fed hostile text in every variable it reads, puts no markup of it on the page."""
import json
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from flask import flash, render_template
from flask_login import login_user
from jinja2 import meta, nodes
from werkzeug.datastructures import MultiDict

from promptbeat.extensions import db
from promptbeat.models import GLOBAL_SCOPE, ApiToken, Channel, Connection, Execution, Task, User, utcnow
from promptbeat.runs.budget import Usage
from promptbeat.runs.search import Changed, RunFilters, RunPage
from tests.conftest import csrf_token
from web.auth import LoginForm
from web.charts import line_chart
from web.dashboard import Filters, LastRun, TaskStats
from web.forms import TaskForm
from web.i18n import translate_message

# Markup, format strings (both styles), template syntax, NUL and a header-splitting line break.
HOSTILE = '<b data-hostile="1">x</b> %d %(x)s %s {{ 7*7 }} {% if %}\x00\r\nSet-Cookie: a=b'
UNESCAPED = re.compile(r"<b data-hostile")
ESCAPED = "&lt;b data-hostile="
# Names Flask, Flask-WTF, Flask-Login and Flask-Babel give every template.
PROVIDED = {"request", "session", "g", "config", "url_for", "get_flashed_messages", "current_user", "csrf_token",
            "_", "gettext", "ngettext", "pgettext", "npgettext"}


def hostile_task(**extra):
    now = utcnow()
    values = dict(id=7, name=HOSTILE, prompt=HOSTILE, system_prompt=HOSTILE, model=HOSTILE, schedule_type="crontab",
                  cron="0 9 * * *", timezone="UTC", enabled=False, pause_note=HOSTILE, overlap_policy="skip",
                  run_count=2, max_runs=9, catchup_seconds=60, auto_pause_after=3, consecutive_failures=1,
                  temperature=0.5, max_tokens=100, anchor_at=now, created_at=now, updated_at=now, completed_at=None,
                  budget_usd_day=1.5, budget_tokens_month=100_000, pause_on_budget=True,
                  connection=Connection(id=3, name=HOSTILE, base_url=HOSTILE, default_model=HOSTILE),
                  channels=[Channel(id=5, name=HOSTILE, kind="webhook", url=HOSTILE)])
    values.update(extra)
    return Task(**values)


def hostile_run(status=HOSTILE, **extra):
    now = utcnow()
    return Execution(id=11, task_id=7, status=status, trigger=HOSTILE, model=HOSTILE, error=HOSTILE, **extra,
                     error_class=HOSTILE, output=HOSTILE, created_at=now, started_at=now, finished_at=now,
                     duration_ms=1200, prompt_tokens=5, completion_tokens=6, total_tokens=11, cost_usd=0.25,
                     attempts=[{"at": HOSTILE, "error": HOSTILE, "error_class": HOSTILE, "wait_s": HOSTILE},
                               {"at": HOSTILE, "ms": HOSTILE}])


def pages(items):
    return SimpleNamespace(items=items, page=2, pages=3, total=60, has_prev=True, has_next=True, prev_num=1,
                           next_num=3)


def task_form():
    fields = [name for name in TaskForm.__dict__ if not name.startswith("_")]
    form = TaskForm(meta={"csrf": False}, formdata=MultiDict({name: HOSTILE for name in fields}))
    for field in form:
        field.errors = [HOSTILE]
    return form


def contexts():
    """Every template's variables, each holding hostile text wherever the page can show text."""
    now = utcnow()
    runs = pages([hostile_run()])
    stats = {7: TaskStats(last=LastRun(11, HOSTILE, now, now), finished=2, succeeded=1, durations=[1, 2],
                          tokens=[3, 4])}
    charts = {"duration": line_chart([1, 2], HOSTILE, HOSTILE), "tokens": line_chart([1, 2], HOSTILE, HOSTILE)}
    spend = {7: Usage(usd_day=0.25, tokens_month=1234), GLOBAL_SCOPE: Usage(usd_month=3.5)}
    budgets = SimpleNamespace(budget_usd_day=None, budget_usd_month=10.0, budget_tokens_day=None,
                              budget_tokens_month=None)
    table = dict(page=pages([hostile_task()]), stats=stats, filters=Filters(search=HOSTILE), version=HOSTILE,
                 spend=spend, settings=budgets, global_scope=GLOBAL_SCOPE)
    bad_preview = {"errors": {"timezone": HOSTILE, HOSTILE: HOSTILE}, "description": None, "runs": []}
    good_preview = {"errors": {}, "description": HOSTILE, "runs": [now, now], "immediate": True, "timezone": HOSTILE}
    changed_run = hostile_run(changed=True, diff=HOSTILE)
    task_page = dict(task=hostile_task(), runs=runs, version=HOSTILE, upcoming=[now + timedelta(hours=1)],
                     charts=charts, endpoint=HOSTILE, timeline=[changed_run], spend=spend[7])
    compare_page = dict(task=hostile_task(), left=hostile_run(), right=changed_run, choices=[changed_run], cut=True,
                        rows=[("equal", HOSTILE, HOSTILE), ("replace", HOSTILE, HOSTILE), ("insert", None, HOSTILE)])
    channel_values = {"name": HOSTILE, "kind": HOSTILE, "url": HOSTILE, "to": HOSTILE}
    channels_page = dict(
        channels=[Channel(id=5, name=HOSTILE, kind="webhook", url=HOSTILE, secret_encrypted=HOSTILE),
                  Channel(id=6, name=HOSTILE, kind="email", recipients=[HOSTILE, HOSTILE]),
                  Channel(id=8, name=HOSTILE, kind=HOSTILE, url=HOSTILE)],
        values=channel_values, errors={**channel_values, "secret": HOSTILE}, editing=None,
        revealed={"channel_id": 5, "secret": HOSTILE})
    deliveries = {11: [{"channel_id": 5, "channel": HOSTILE, "status": "failed", "attempts": 3, "detail": HOSTILE,
                        "code": 554, "at": HOSTILE},
                       {"channel_id": None, "channel": HOSTILE, "status": HOSTILE, "attempts": 1, "detail": None,
                        "code": None, "at": HOSTILE}]}
    connections_page = dict(
        connections=[Connection(id=3, name=HOSTILE, base_url=HOSTILE, default_model=HOSTILE,
                                api_key_encrypted=HOSTILE, extra_headers={HOSTILE: HOSTILE})],
        masked_headers=lambda connection: {HOSTILE: HOSTILE},
        values={"name": HOSTILE, "base_url": HOSTILE, "api_key": HOSTILE, "default_model": HOSTILE,
                "extra_headers": HOSTILE},
        errors={"name": HOSTILE, "base_url": HOSTILE, "api_key": HOSTILE, "default_model": HOSTILE,
                "extra_headers": HOSTILE})
    users_page = dict(users=[User(id=6, email=HOSTILE, role=HOSTILE, disabled=False),
                             User(id=7, email=HOSTILE, role="viewer", disabled=True)],
                      roles=["admin", "viewer", HOSTILE], values={"email": HOSTILE, "role": HOSTILE},
                      errors={"email": HOSTILE, "role": HOSTILE, "password": HOSTILE, "disabled": HOSTILE},
                      editing=None, min_password_length=8)
    record = SimpleNamespace(id=11, task_id=7, task_name=HOSTILE, status=HOSTILE, trigger=HOSTILE, changed=None,
                             duration_ms=5, total_tokens=9, cost_usd=0.1, started_at=now, created_at=now,
                             output=HOSTILE, error=None, error_class=None)
    failed = SimpleNamespace(**{**vars(record), "status": "failed", "output": None, "error": HOSTILE,
                                "error_class": HOSTILE, "changed": True})
    runs_page = dict(page=RunPage(rows=[record, failed], next_before=3), filters=RunFilters(q=HOSTILE),
                     raw={"q": HOSTILE, "task_id": HOSTILE, "status": HOSTILE}, problem=None, first_page=False,
                     next_cursor=HOSTILE, statuses=[HOSTILE], trigger_words={HOSTILE: HOSTILE}, changes=list(Changed),
                     export_limit=10)
    return {
        "runs.html": [runs_page, {**runs_page, "page": None, "problem": (HOSTILE, HOSTILE)}],
        "account.html": [dict(tokens=[ApiToken(id=1, name=HOSTILE, created_at=now, last_used_at=now)],
                              new_token=HOSTILE, min_password_length=8, zone_error=HOSTILE,
                              password_errors={"current_password": HOSTILE, "password": HOSTILE,
                                               "repeat_password": HOSTILE})],
        "api_docs.html": [dict(spec_url=HOSTILE, vendor="vendor/swagger-ui", version=HOSTILE)],
        "users.html": [users_page, {**users_page, "editing": 6}, {**users_page, "editing": 7}],
        "_zone_names.html": [{}],
        "base.html": [{}],
        "channels.html": [channels_page, {**channels_page, "editing": 5}, {**channels_page, "editing": 6}],
        "connections.html": [connections_page, {**connections_page, "editing": 3}],
        "error.html": [dict(message=HOSTILE)],
        "login.html": [dict(form=LoginForm(meta={"csrf": False},
                                           formdata=MultiDict({"email": HOSTILE, "password": HOSTILE})))],
        "tasks/_actions.html": [dict(task=hostile_task(enabled=True), task_urls="/tasks/"),
                                dict(task=hostile_task(), task_urls="/tasks/")],
        "tasks/_preview.html": [dict(preview=bad_preview), dict(preview=good_preview)],
        "tasks/_runs.html": [dict(task=hostile_task(), runs=runs, version=HOSTILE, endpoint=HOSTILE,
                                  deliveries=deliveries),
                             # With Cancel and Retry (for admins) and a retry's link to the run it retries.
                             dict(task=hostile_task(), version=HOSTILE, runs=pages(
                                 [hostile_run("queued", retry_of=9), hostile_run("failed", worker=HOSTILE),
                                  hostile_run("skipped")]), endpoint=HOSTILE)],
        "tasks/_table.html": [table],
        "tasks/detail.html": [task_page, {**task_page, "task": hostile_task(completed_at=now), "timeline": []}],
        "tasks/compare.html": [compare_page, {**compare_page, "left": None, "right": None, "rows": []}],
        "tasks/form.html": [dict(form=task_form(), task=hostile_task(), preview=bad_preview, models=[HOSTILE]),
                            dict(form=task_form(), task=None, preview=good_preview, models=[HOSTILE])],
        "tasks/list.html": [table],
    }


def template_variables(env, name):
    """The names a template reads from its context (a `set` inside an `if` counts as its own, not the context's)."""
    tree = env.parse(env.loader.get_source(env, name)[0])
    assigned = {target.name for node in tree.find_all((nodes.Assign, nodes.AssignBlock))
                for target in node.find_all(nodes.Name)}
    assigned |= {macro.name for macro in tree.find_all(nodes.Macro)}
    return meta.find_undeclared_variables(tree) - assigned


def signed_in_as(app, role):
    user = User(id=5, email=HOSTILE, role=role, language=None, timezone=HOSTILE, session_version=0)
    login_user(user)
    flash(HOSTILE, HOSTILE)


@pytest.mark.parametrize("role", ["admin", HOSTILE])
def test_every_template_escapes_hostile_text_in_every_variable(app, role):
    with app.test_request_context("/", query_string={"q": HOSTILE, "next": HOSTILE}):
        signed_in_as(app, role)
        cases = contexts()
        env = app.jinja_env
        templates = {name for name in env.list_templates() if name.endswith(".html")}
        assert templates == set(cases), "give every template a hostile context here"
        for name, variants in cases.items():
            used = template_variables(env, name) - set(env.globals) - PROVIDED
            for context in variants:
                assert used <= set(context), f"{name} reads {used - set(context)}: add them here"
                html = render_template(name, **context)
                assert not UNESCAPED.search(html), f"{name} put hostile markup on the page"
                if html.strip():  # a viewer sees no actions at all
                    assert ESCAPED in html, f"{name} showed none of the hostile text: is the context used?"
                flash(HOSTILE, HOSTILE)


def test_translate_message_translates_known_text_and_leaves_the_rest_as_plain_text(app):
    known = "Use HH:MM in 24-hour time, for example 09:30."
    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        assert translate_message(known) != known and "HH:MM" in translate_message(known)
        for text in (HOSTILE, "%d", "%(x)s", "100%"):
            translated = translate_message(text)
            assert translated == text and type(translated) is str  # not Markup: the page escapes it


@pytest.mark.parametrize("timezone", ["%d", "%(x)s", "<b>x</b>", "{{ 7*7 }}", "a\x00b", "a\r\nb"])
def test_preview_shows_a_hostile_time_zone_as_text(signed_in, timezone):
    response = signed_in.get("/tasks/preview", query_string={"schedule_type": "fixed_time", "time": "09:00",
                                                             "timezone": timezone})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Unknown time zone" in page and "<b>" not in page


def test_preview_of_markup_in_the_time_zone_is_escaped_and_known_errors_stay_translated(signed_in):
    page = signed_in.get("/tasks/preview?schedule_type=fixed_time&time=09:00&timezone=%3Cb%3Ex%3C/b%3E")
    text = page.get_data(as_text=True)
    assert "Unknown time zone" in text and "<b>x</b>" not in text
    chinese = signed_in.get("/tasks/preview?schedule_type=fixed_time&time=99:99",
                            headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "24 小时制" in chinese or "24小时制" in chinese, chinese


def test_form_and_flash_show_hostile_input_as_text(app, signed_in):
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    response = signed_in.post("/tasks/new", data={
        "csrf_token": csrf_token(page), "name": HOSTILE, "prompt": HOSTILE, "schedule_type": "fixed_time",
        "time": "09:00", "timezone": HOSTILE, "temperature": "0.7", "overlap_policy": "skip", "notify_on": "every",
    })
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Unknown time zone" in html and not UNESCAPED.search(html)
    with app.app_context():
        assert db.session.execute(db.select(Task.id)).first() is None


def test_htmx_is_configured_for_self_requests_only_without_scripts_or_eval(signed_in):
    page = signed_in.get("/").get_data(as_text=True)
    config = json.loads(re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", page).group(1))
    assert config["selfRequestsOnly"] is True
    assert config["allowScriptTags"] is False
    assert config["allowEval"] is False
    # htmx's indicator styles are an inline <style>, which the CSP's style-src 'self' refuses.
    assert config["includeIndicatorStyles"] is False


def test_a_hostile_flower_url_is_escaped_in_each_run_link(app, swap_settings):
    # The setting accepts only http(s) addresses, so the link cannot be a script URL; the rest is escaped.
    swap_settings(flower_url="https://flower.example.com/" + HOSTILE)
    with app.test_request_context("/"):
        signed_in_as(app, "admin")
        html = render_template("tasks/_runs.html", task=hostile_task(), runs=pages([hostile_run()]), version=HOSTILE)
    assert 'href="https://flower.example.com/&lt;b data-hostile=' in html
    assert not UNESCAPED.search(html)
