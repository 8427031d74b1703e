"""Authorization over the whole route table: viewers change nothing, anonymous callers reach nothing private.

The routes come from app.url_map, so a route added later is exercised without anyone listing it.
"""
import pytest

from promptbeat.extensions import db
from promptbeat.models import ApiToken, Channel, Connection, Execution, Task, Trigger, User, utcnow
from promptbeat.runs.states import RunStatus
from tests.conftest import csrf_token, issue_api_token

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
VIEWER, VIEWER_PASSWORD = "viewer@example.com", "viewer password 1"

# State-changing routes a signed-in viewer may use; every other one must answer 403 and change nothing.
VIEWER_ALLOWED = {
    "POST /login": "the sign-in form, public to everyone",
    "POST /logout": "ends the viewer's own session",
    "POST /account/language": "the viewer's own display language, a personal preference",
    "POST /account/password": "the viewer's own password, behind the current one",
    "POST /language": "the sign-in page's language menu, public to everyone",
    "POST /account/timezone": "the viewer's own time zone, a personal preference",
    "POST /tasks/preview": "describes a schedule the caller sends; reads nothing stored and writes nothing",
    "POST /api/schedule/preview": "the same read-only preview for API clients",
}

# Endpoints anyone may reach without signing in.
PUBLIC = {
    "auth.login": "the sign-in page itself",
    "static": "stylesheets and scripts",
    "ops.healthz": "for orchestrators' health checks",
    "ops.metrics": "for Prometheus; guarded by its own optional token (PROMPTBEAT_METRICS_TOKEN)",
    "api.openapi": "the API's contract, public like any API reference",
    "api.index": "the API's version and where its reference is",
    "auth.language": "the sign-in page's language menu",
    "ops.favicon": "the icon browsers ask for on every page",
}

# Bodies an admin's request would be accepted with, so a missing role check would really change something.
TASK_FORM = {"name": "Changed by a viewer", "prompt": "p", "model": "fake-model", "temperature": "0.7",
             "schedule_type": "interval", "interval_minutes": "30", "timezone": "UTC", "enabled": "y",
             "overlap_policy": "skip"}
PAGE_FORMS = {
    "POST /tasks/new": TASK_FORM,
    "POST /tasks/<int:task_id>/edit": TASK_FORM,
    "POST /tasks/<int:task_id>/disable": {"note": "paused by a viewer"},
    "POST /tasks/<int:task_id>/run": {"allow_overlap": "1"},
    "POST /tasks/<int:task_id>/runs/<int:execution_id>/cancel": {},
    "POST /tasks/<int:task_id>/runs/<int:execution_id>/retry": {},
    "POST /account/tokens": {"name": "viewer's token"},
    "POST /connections/": {"name": "Viewer's connection", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-v"},
    "POST /users/": {"email": "made-by-viewer@example.com", "role": "admin", "password": "a long password"},
    "POST /users/<int:user_id>/role": {"role": "admin"},
    "POST /users/<int:user_id>/password": {"password": "a new long password"},
}
API_BODIES = {
    "POST /api/tasks": {"name": "Viewer task", "prompt": "p", "schedule_type": "interval", "interval_minutes": 30},
    "PATCH /api/tasks/<int:task_id>": {"name": "Renamed by a viewer"},
    "POST /api/tasks/<int:task_id>/pause": {"note": "paused by a viewer"},
    "POST /api/tasks/<int:task_id>/run": {"allow_overlap": True},
    "POST /api/connections": {"name": "Viewer's connection", "base_url": "http://127.0.0.1:9/v1"},
    # No body: the run (objects' execution_id, queued) is what a missing role check would change.
    "POST /api/executions/<int:execution_id>/cancel": None,
    "POST /api/executions/<int:execution_id>/retry": None,
    "PATCH /api/connections/<int:connection_id>": {"name": "Renamed by a viewer"},
}


def state_changing_routes(app):
    """Every (method, rule) of the route table that may change something, as "METHOD /rule" with its Rule."""
    return sorted(((f"{method} {rule.rule}", method, rule) for rule in app.url_map.iter_rules()
                   for method in rule.methods & STATE_CHANGING), key=lambda item: item[0])


def url_for_rule(rule, objects):
    """The rule's path with each URL argument filled by an existing object's id."""
    unknown = rule.arguments - set(objects)
    assert not unknown, (f"{rule.rule}: the test does not know which object {sorted(unknown)} names; "
                         "add one to the `objects` fixture")
    return rule.build({name: objects[name] for name in rule.arguments}, append_unknown=False)[1]


@pytest.fixture
def viewer_token(app):
    """A viewer and that viewer's API token (plaintext)."""
    return issue_api_token(app, VIEWER, VIEWER_PASSWORD, role="viewer")


@pytest.fixture
def objects(app, viewer_token):
    """Existing objects for the routes' URL arguments, by argument name: a disabled task, a connection, a token,
    and a queued run of the task (one Cancel would change; Retry's refusal of a viewer on a run it would
    retry is tested in tests/web/test_run_controls.py)."""
    with app.app_context():
        task = Task(name="Feed", prompt="p", model="fake-model", schedule_type="crontab", cron="0 9 * * *",
                    timezone="UTC", enabled=False, anchor_at=utcnow())
        connection = Connection(name="Local", base_url="http://127.0.0.1:9/v1")
        channel = Channel(name="Hook", kind="slack", url="http://127.0.0.1:9/hook")
        task.channels = [channel]
        db.session.add_all([task, connection])
        db.session.commit()
        viewer = db.session.execute(db.select(User).filter_by(email=VIEWER)).scalar_one()
        # The viewer's own token: revoking it is the one revocation a missing role check would allow.
        token_id = db.session.execute(db.select(ApiToken.id).filter_by(user_id=viewer.id)).scalar_one()
        run = Execution(task_id=task.id, status=RunStatus.QUEUED, trigger=Trigger.MANUAL, model="fake-model")
        db.session.add(run)
        db.session.commit()
        # The viewer: promoting, re-enabling or re-keying themselves is what a missing role check would allow.
        return {"task_id": task.id, "connection_id": connection.id, "token_id": token_id, "execution_id": run.id,
                "user_id": viewer.id, "channel_id": channel.id}


def snapshot(app):
    """Every row of every table, except when a token was last used (reading the API records that)."""
    with app.app_context():
        tables = {}
        for table in db.metadata.sorted_tables:
            columns = [c for c in table.columns if not (table.name == "api_tokens" and c.name == "last_used_at")]
            rows = db.session.execute(db.select(*columns).order_by(*table.primary_key.columns)).all()
            tables[table.name] = [tuple(row) for row in rows]
        db.session.remove()
        return tables


def sign_in_as_viewer(client):
    """Sign in through the form; returns the CSRF token the viewer's pages carry."""
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"email": VIEWER, "password": VIEWER_PASSWORD,
                                           "csrf_token": csrf_token(page)})
    assert response.status_code == 302, response.get_data(as_text=True)
    return csrf_token(client.get("/account").get_data(as_text=True))


def test_the_allow_lists_name_routes_that_exist(app):
    routes = {name for name, _, _ in state_changing_routes(app)}
    assert set(VIEWER_ALLOWED) <= routes, f"stale entries: {sorted(set(VIEWER_ALLOWED) - routes)}"
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert set(PUBLIC) <= endpoints, f"stale entries: {sorted(set(PUBLIC) - endpoints)}"
    bodies = set(PAGE_FORMS) | set(API_BODIES)
    assert bodies <= routes, f"bodies for routes that do not exist: {sorted(bodies - routes)}"


def test_a_viewer_changes_nothing_through_any_state_changing_route(app, client, viewer_token, objects):
    token = sign_in_as_viewer(client)
    bearer = {"Authorization": f"Bearer {viewer_token}"}
    checked, failures = [], []
    for name, method, rule in state_changing_routes(app):
        if name in VIEWER_ALLOWED:
            continue
        path = url_for_rule(rule, objects)
        before = snapshot(app)
        if rule.endpoint.startswith("api."):
            response = client.open(path, method=method, headers=bearer, json=API_BODIES.get(name))
            refused = response.status_code == 403 and (response.get_json(silent=True) or {}).get("error") == "forbidden"
        else:
            response = client.open(path, method=method, data={"csrf_token": token, **PAGE_FORMS.get(name, {})})
            refused = response.status_code == 403
        changed = [table for table, rows in snapshot(app).items() if rows != before[table]]
        if not refused or changed:
            failures.append(f"{name}: {response.status_code}, tables changed: {changed or 'none'}")
        checked.append(name)
    assert not failures, "a viewer got past the role check:\n" + "\n".join(failures)
    # The routes the planted-bug reports named are among those checked (the route table still has them).
    assert {"PATCH /api/connections/<int:connection_id>", "DELETE /api/connections/<int:connection_id>",
            "POST /account/tokens/<int:token_id>/revoke", "POST /connections/<int:connection_id>/delete"} <= set(checked)


def test_the_viewer_allow_list_really_is_open_to_viewers(client, viewer_token):
    """Each allowed route answers a viewer without a 403, so the list stays no longer than it must be."""
    token = sign_in_as_viewer(client)
    bearer = {"Authorization": f"Bearer {viewer_token}"}
    preview = {"schedule_type": "interval", "interval_minutes": 5}
    assert client.post("/api/schedule/preview", headers=bearer, json=preview).status_code == 200
    assert client.post("/tasks/preview", json=preview, headers={"X-CSRFToken": token}).status_code == 200
    assert client.post("/account/language", data={"csrf_token": token, "language": "en"}).status_code == 302
    assert client.post("/language", data={"csrf_token": token, "language": "en"}).status_code == 302
    wrong = {"csrf_token": token, "current_password": "not it", "new_password": "x" * 12, "repeat_password": "x" * 12}
    assert client.post("/account/password", data=wrong).status_code == 422
    assert client.post("/account/timezone", data={"csrf_token": token, "timezone": "Asia/Shanghai"}).status_code == 302
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302


def test_anonymous_callers_reach_no_private_route(app, client, objects):
    # A CSRF token is there for anyone who opens the sign-in page; with it, only the sign-in check stands.
    token = csrf_token(client.get("/login").get_data(as_text=True))
    failures = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in PUBLIC:
            continue
        path = url_for_rule(rule, objects)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            before = snapshot(app)
            if rule.endpoint.startswith("api."):
                response = client.open(path, method=method, json=API_BODIES.get(f"{method} {rule.rule}"))
                refused = response.status_code == 401
            else:
                data = {"csrf_token": token, **PAGE_FORMS.get(f"{method} {rule.rule}", {})}
                response = client.open(path, method=method, data=data if method in STATE_CHANGING else None)
                refused = response.status_code == 302 and response.headers["Location"].startswith("/login")
            if not refused or snapshot(app) != before:
                failures.append(f"{method} {rule.rule}: {response.status_code} {response.headers.get('Location', '')}")
    assert not failures, "reached without signing in:\n" + "\n".join(failures)


def test_a_session_cookie_opens_no_api_route(app, signed_in, objects):
    # The API is exempt from CSRF checks because it reads only bearer tokens; a cookie that opened it
    # would let any site a signed-in admin visits send it requests.
    failures = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint in PUBLIC:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            before = snapshot(app)
            response = signed_in.open(url_for_rule(rule, objects), method=method,
                                      json=API_BODIES.get(f"{method} {rule.rule}"))
            if response.status_code != 401 or snapshot(app) != before:
                failures.append(f"{method} {rule.rule}: {response.status_code}")
    assert not failures, "answered to a session cookie alone:\n" + "\n".join(failures)
