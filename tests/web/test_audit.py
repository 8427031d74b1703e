"""Every audited action writes its line: who, through which door (web or api), and what.

The actions are read from the audit("...") calls in web/*.py, so an action added there without a
scenario here fails test_every_audited_action_in_the_code_has_a_scenario.
"""
import ast
import logging
import re
from pathlib import Path

import pytest

from promptbeat.extensions import db
from promptbeat.models import ApiToken, Channel, Connection, Execution, Task, Trigger, User, utcnow
from tests.conftest import csrf_token, issue_api_token

WEB_SOURCES = Path(__file__).resolve().parents[2] / "web"
ADMIN, PASSWORD = "admin@example.com", "correct horse battery"
SCENARIOS = {}


def audited_actions_in_source():
    """{(via, action)} for every audit() call in web/: the API module audits as "api", the commands as "cli",
    the pages as "web"."""
    found = set()
    for path in WEB_SOURCES.glob("*.py"):
        via = {"api": "api", "cli": "cli"}.get(path.stem, "web")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "audit" and node.args:
                # The action may be chosen by an expression (pause or disable): every literal in it counts.
                names = [n.value for n in ast.walk(node.args[0]) if isinstance(n, ast.Constant)
                         and isinstance(n.value, str) and re.fullmatch(r"[a-z_]+", n.value)]
                assert names, f"{path.name}:{node.lineno}: audit() with an action that is not a literal"
                found.update((via, name) for name in names)
    return found


def scenario(via, action):
    """Register how to perform an audited action; the function returns (user, details) the line must show."""
    def register(perform):
        SCENARIOS[(via, action)] = perform
        return perform
    return register


class Actor:
    """An admin with a browser session (signed in on first use) and an API token."""

    def __init__(self, app, client, token):
        self.app, self.client, self.bearer = app, client, {"Authorization": f"Bearer {token}"}
        self.signed_in = False

    def sign_in(self, password=PASSWORD):
        page = self.client.get("/login").get_data(as_text=True)
        return self.client.post("/login", data={"email": ADMIN, "password": password,
                                                "csrf_token": csrf_token(page)})

    def form(self, path, **data):
        if not self.signed_in:
            assert self.sign_in().status_code == 302
            self.signed_in = True
        token = csrf_token(self.client.get("/account").get_data(as_text=True))
        response = self.client.post(path, data={"csrf_token": token, **data})
        assert response.status_code in (200, 302), response.get_data(as_text=True)
        return response

    def api(self, method, path, **kwargs):
        response = self.client.open("/api" + path, method=method, headers=self.bearer, **kwargs)
        assert response.status_code < 300, response.get_data(as_text=True)
        return response

    def task(self, enabled=False):
        with self.app.app_context():
            task = Task(name="Audited", prompt="p", model="fake-model", schedule_type="crontab", cron="0 9 * * *",
                        timezone="UTC", enabled=enabled, anchor_at=utcnow())
            db.session.add(task)
            db.session.commit()
            return task.id

    def run(self, status, task_id=None):
        """A run of a (new) task in the given status; returns (task id, run id)."""
        task_id = task_id or self.task()
        with self.app.app_context():
            run = Execution(task_id=task_id, status=status, trigger=Trigger.SCHEDULED, model="fake-model")
            db.session.add(run)
            db.session.commit()
            return task_id, run.id

    def channel(self, task_id=None):
        """A Slack channel, picked by the task when one is given; returns its id."""
        with self.app.app_context():
            channel = Channel(name="Audited channel", kind="slack", url="http://127.0.0.1:9/hook")
            db.session.add(channel)
            task = db.session.get(Task, task_id) if task_id else None
            if task is not None:
                task.channels.append(channel)
            db.session.commit()
            return channel.id

    def connection(self):
        with self.app.app_context():
            connection = Connection(name="Audited endpoint", base_url="http://127.0.0.1:9/v1")
            db.session.add(connection)
            db.session.commit()
            return connection.id


TASK_FORM = {"name": "Form task", "prompt": "p", "model": "fake-model", "temperature": "0.7",
             "schedule_type": "crontab", "cron": "0 9 * * *", "timezone": "UTC", "overlap_policy": "skip"}


@scenario("web", "sign_in")
def _(actor):
    assert actor.sign_in().status_code == 302
    return ADMIN, {}


@scenario("web", "sign_in_failed")
def _(actor):
    assert actor.sign_in("wrong password").status_code == 200
    return "-", {"email": ADMIN}


@scenario("web", "sign_out")
def _(actor):
    actor.form("/logout")
    return ADMIN, {}


@scenario("web", "language_changed")
def _(actor):
    actor.form("/account/language", language="zh_Hans")
    return ADMIN, {"language": "zh_Hans"}


@scenario("web", "timezone_changed")
def _(actor):
    actor.form("/account/timezone", timezone="Asia/Shanghai")
    return ADMIN, {"timezone": "Asia/Shanghai", "detected": False}


@scenario("web", "api_token_created")
def _(actor):
    actor.form("/account/tokens", name="reporting")
    with actor.app.app_context():
        token_id = db.session.execute(db.select(ApiToken.id).filter_by(name="reporting")).scalar_one()
    return ADMIN, {"token_id": token_id, "name": "reporting"}


@scenario("web", "api_token_revoked")
def _(actor):
    with actor.app.app_context():
        token_id = db.session.execute(db.select(ApiToken.id)).scalar_one()
    actor.form(f"/account/tokens/{token_id}/revoke")
    return ADMIN, {"token_id": token_id, "name": "default"}


@scenario("web", "connection_created")
def _(actor):
    actor.form("/connections/", name="Made on the page", base_url="http://127.0.0.1:9/v1")
    with actor.app.app_context():
        connection_id = db.session.execute(db.select(Connection.id)).scalar_one()
    return ADMIN, {"connection_id": connection_id, "name": "Made on the page"}


@scenario("web", "connection_updated")
def _(actor):
    connection_id = actor.connection()
    with actor.app.app_context():
        base_url = db.session.get(Connection, connection_id).base_url
    actor.form(f"/connections/{connection_id}/edit", name="Renamed endpoint", base_url=base_url, default_model="")
    return ADMIN, {"connection_id": connection_id, "fields": ["base_url", "default_model", "max_concurrency", "name",
                                                              "rpm_limit", "tpm_limit"]}


@scenario("web", "connection_deleted")
def _(actor):
    connection_id = actor.connection()
    actor.form(f"/connections/{connection_id}/delete")
    return ADMIN, {"connection_id": connection_id, "name": "Audited endpoint"}


@scenario("web", "task_created")
def _(actor):
    location = actor.form("/tasks/new", **TASK_FORM).headers["Location"]
    return ADMIN, {"task_id": int(location.rstrip("/").rsplit("/", 1)[1]), "name": "Form task"}


@scenario("web", "task_updated")
def _(actor):
    task_id = actor.task()
    actor.form(f"/tasks/{task_id}/edit", **{**TASK_FORM, "name": "Renamed"})
    return ADMIN, {"task_id": task_id, "name": "Renamed"}


@scenario("web", "task_enabled")
def _(actor):
    task_id = actor.task()
    actor.form(f"/tasks/{task_id}/enable")
    return ADMIN, {"task_id": task_id}


@scenario("web", "task_disabled")
def _(actor):
    task_id = actor.task(enabled=True)
    actor.form(f"/tasks/{task_id}/disable", note="maintenance")
    return ADMIN, {"task_id": task_id, "note": True}


@scenario("web", "task_run_now")
def _(actor):
    task_id = actor.task()
    actor.form(f"/tasks/{task_id}/run", allow_overlap="1")
    with actor.app.app_context():
        execution_id = db.session.get(Task, task_id).executions[0].id
    return ADMIN, {"task_id": task_id, "execution_id": execution_id, "allow_overlap": True}


@scenario("web", "run_cancelled")
def _(actor):
    task_id, run_id = actor.run("running")
    actor.form(f"/tasks/{task_id}/runs/{run_id}/cancel")
    return ADMIN, {"task_id": task_id, "execution_id": run_id}


@scenario("web", "run_retried")
def _(actor):
    task_id, run_id = actor.run("cancelled")
    actor.form(f"/tasks/{task_id}/runs/{run_id}/retry")
    with actor.app.app_context():
        retry_id = db.session.execute(db.select(Execution.id).filter_by(retry_of=run_id)).scalar_one()
    return ADMIN, {"task_id": task_id, "execution_id": run_id, "retry_id": retry_id}


@scenario("web", "task_deleted")
def _(actor):
    task_id = actor.task()
    actor.form(f"/tasks/{task_id}/delete")
    return ADMIN, {"task_id": task_id, "name": "Audited"}


@scenario("api", "task_created")
def _(actor):
    task = actor.api("POST", "/tasks", json={"name": "API task", "prompt": "p", "schedule_type": "crontab",
                                             "cron": "0 9 * * *"}).get_json()
    return ADMIN, {"task_id": task["id"], "name": "API task"}


@scenario("api", "task_tested")
def _(actor):
    answer = actor.api("POST", "/tasks/test", json={"name": "Tried", "prompt": "p", "model": "fake-model",
                                                    "schedule_type": "crontab", "cron": "0 9 * * *"}).get_json()
    assert answer["error"] is None
    return ADMIN, {"connection_id": None, "model": "fake-model", "ok": True}


@scenario("web", "task_tested")
def _(actor):
    assert actor.form("/tasks/test", **TASK_FORM).get_json()["error"] is None
    return ADMIN, {"connection_id": None, "ok": True}


@scenario("api", "task_updated")
def _(actor):
    task_id = actor.task()
    actor.api("PATCH", f"/tasks/{task_id}", json={"prompt": "q", "name": "Renamed"})
    return ADMIN, {"task_id": task_id, "fields": ["name", "prompt"]}


@scenario("api", "task_deleted")
def _(actor):
    task_id = actor.task()
    actor.api("DELETE", f"/tasks/{task_id}")
    return ADMIN, {"task_id": task_id}


@scenario("api", "task_enabled")
def _(actor):
    task_id = actor.task()
    actor.api("POST", f"/tasks/{task_id}/enable")
    return ADMIN, {"task_id": task_id}


@scenario("api", "task_disabled")
def _(actor):
    task_id = actor.task(enabled=True)
    actor.api("POST", f"/tasks/{task_id}/disable")
    return ADMIN, {"task_id": task_id}


@scenario("api", "task_paused")
def _(actor):
    task_id = actor.task(enabled=True)
    actor.api("POST", f"/tasks/{task_id}/pause", json={"note": "maintenance"})
    return ADMIN, {"task_id": task_id}


@scenario("api", "task_resumed")
def _(actor):
    task_id = actor.task()
    actor.api("POST", f"/tasks/{task_id}/resume")
    return ADMIN, {"task_id": task_id}


@scenario("api", "task_run_now")
def _(actor):
    task_id = actor.task()
    execution = actor.api("POST", f"/tasks/{task_id}/run", json={"allow_overlap": True}).get_json()["execution"]
    return ADMIN, {"task_id": task_id, "execution_id": execution["id"], "allow_overlap": True}


@scenario("api", "run_cancelled")
def _(actor):
    task_id, run_id = actor.run("queued")
    actor.api("POST", f"/executions/{run_id}/cancel")
    return ADMIN, {"task_id": task_id, "execution_id": run_id}


@scenario("api", "run_retried")
def _(actor):
    task_id, run_id = actor.run("failed")
    retry = actor.api("POST", f"/executions/{run_id}/retry").get_json()
    return ADMIN, {"task_id": task_id, "execution_id": run_id, "retry_id": retry["id"]}


@scenario("web", "channel_created")
def _(actor):
    actor.form("/channels/", name="Made on the page", kind="slack", url="http://127.0.0.1:9/hook")
    with actor.app.app_context():
        channel_id = db.session.execute(db.select(Channel.id)).scalar_one()
    return ADMIN, {"channel_id": channel_id, "name": "Made on the page", "kind": "slack"}


@scenario("web", "channel_updated")
def _(actor):
    channel_id = actor.channel()
    actor.form(f"/channels/{channel_id}/edit", name="Renamed channel", url="http://127.0.0.1:9/other")
    return ADMIN, {"channel_id": channel_id, "fields": ["name", "url"]}


@scenario("web", "channel_deleted")
def _(actor):
    channel_id = actor.channel()
    actor.form(f"/channels/{channel_id}/delete")
    return ADMIN, {"channel_id": channel_id, "name": "Audited channel"}


@scenario("web", "run_resent")
def _(actor):
    task_id, run_id = actor.run("success")
    channel_id = actor.channel(task_id)
    actor.form(f"/tasks/{task_id}/runs/{run_id}/resend")
    return ADMIN, {"task_id": task_id, "execution_id": run_id, "channel_ids": [channel_id]}


@scenario("api", "run_resent")
def _(actor):
    task_id, run_id = actor.run("failed")
    channel_id = actor.channel(task_id)
    actor.api("POST", f"/executions/{run_id}/resend")
    return ADMIN, {"task_id": task_id, "execution_id": run_id, "channel_ids": [channel_id]}


@scenario("api", "channel_created")
def _(actor):
    channel = actor.api("POST", "/channels", json={"name": "From the API", "kind": "email",
                                                   "to": ["ops@example.com"]}).get_json()
    return ADMIN, {"channel_id": channel["id"], "name": "From the API", "kind": "email"}


@scenario("api", "channel_updated")
def _(actor):
    channel_id = actor.channel()
    actor.api("PATCH", f"/channels/{channel_id}", json={"name": "Renamed"})
    return ADMIN, {"channel_id": channel_id, "fields": ["name"]}


@scenario("api", "channel_deleted")
def _(actor):
    channel_id = actor.channel()
    actor.api("DELETE", f"/channels/{channel_id}")
    return ADMIN, {"channel_id": channel_id}


@scenario("api", "connection_created")
def _(actor):
    connection = actor.api("POST", "/connections", json={"name": "From the API",
                                                         "base_url": "http://127.0.0.1:9/v1"}).get_json()
    return ADMIN, {"connection_id": connection["id"], "name": "From the API"}


@scenario("api", "connection_updated")
def _(actor):
    connection_id = actor.connection()
    actor.api("PATCH", f"/connections/{connection_id}", json={"name": "Renamed", "default_model": "fake-model"})
    return ADMIN, {"connection_id": connection_id, "fields": ["default_model", "name"]}


@scenario("api", "connection_deleted")
def _(actor):
    connection_id = actor.connection()
    actor.api("DELETE", f"/connections/{connection_id}")
    return ADMIN, {"connection_id": connection_id}


@scenario("api", "connection_tested")
def _(actor):
    connection_id = actor.connection()
    actor.api("POST", f"/connections/{connection_id}/test")
    return ADMIN, {"connection_id": connection_id, "base_url": "http://127.0.0.1:9/v1", "ok": False}


@scenario("web", "connection_tested")
def _(actor):
    connection_id = actor.connection()
    actor.form(f"/connections/{connection_id}/test")
    return ADMIN, {"connection_id": connection_id, "base_url": "http://127.0.0.1:9/v1", "ok": False}


VIEWER, VIEWER_PASSWORD = "viewer@example.com", "viewer password 1"


def viewer_id(actor, disabled=False):
    """A viewer (disabled if asked); returns their id."""
    issue_api_token(actor.app, VIEWER, VIEWER_PASSWORD, role="viewer")
    with actor.app.app_context():
        user = db.session.execute(db.select(User).filter_by(email=VIEWER)).scalar_one()
        user.disabled = disabled
        db.session.commit()
        return user.id


@scenario("web", "password_changed")
def _(actor):
    actor.form("/account/password", current_password=PASSWORD, new_password="a new password",
               repeat_password="a new password")
    return ADMIN, {}


@scenario("web", "password_change_refused")
def _(actor):
    actor.sign_in()
    actor.signed_in = True
    token = csrf_token(actor.client.get("/account").get_data(as_text=True))
    actor.client.post("/account/password", data={"csrf_token": token, "current_password": "wrong",
                                                 "new_password": "a new password", "repeat_password": "a new password"})
    return ADMIN, {"field": "current_password"}


@scenario("web", "user_created")
def _(actor):
    actor.form("/users/", email=VIEWER, role="viewer", password=VIEWER_PASSWORD)
    return ADMIN, {"email": VIEWER, "role": "viewer"}


@scenario("web", "user_role_set")
def _(actor):
    user_id = viewer_id(actor)
    actor.form(f"/users/{user_id}/role", role="admin")
    return ADMIN, {"user_id": user_id, "email": VIEWER, "role": "admin"}


@scenario("web", "user_disabled")
def _(actor):
    user_id = viewer_id(actor)
    actor.form(f"/users/{user_id}/disable")
    return ADMIN, {"user_id": user_id, "email": VIEWER}


@scenario("web", "user_enabled")
def _(actor):
    user_id = viewer_id(actor, disabled=True)
    actor.form(f"/users/{user_id}/enable")
    return ADMIN, {"user_id": user_id, "email": VIEWER}


@scenario("web", "password_reset")
def _(actor):
    user_id = viewer_id(actor)
    actor.form(f"/users/{user_id}/password", password="a new password")
    return ADMIN, {"user_id": user_id, "email": VIEWER}


@scenario("web", "sign_in_refused_disabled")
def _(actor):
    viewer_id(actor, disabled=True)
    page = actor.client.get("/login").get_data(as_text=True)
    response = actor.client.post("/login", data={"email": VIEWER, "password": VIEWER_PASSWORD,
                                                  "csrf_token": csrf_token(page)})
    assert response.status_code == 403
    return "-", {"email": VIEWER}


@scenario("cli", "user_role_set")
def _(actor):
    user_id = viewer_id(actor)
    result = actor.app.test_cli_runner().invoke(args=["set-role", VIEWER, "admin"])
    assert result.exit_code == 0, result.output
    return "-", {"user_id": user_id, "email": VIEWER, "role": "admin"}


@scenario("cli", "password_reset")
def _(actor):
    user_id = viewer_id(actor)
    result = actor.app.test_cli_runner().invoke(args=["reset-password", VIEWER, "--password", "a new password"])
    assert result.exit_code == 0, result.output
    return "-", {"user_id": user_id, "email": VIEWER}


def test_every_audited_action_in_the_code_has_a_scenario():
    in_code = audited_actions_in_source()
    assert in_code - set(SCENARIOS) == set(), "audited in web/ but not tested here"
    assert set(SCENARIOS) - in_code == set(), "tested here but no longer audited in web/"


@pytest.mark.parametrize("via, action", sorted(SCENARIOS), ids=lambda value: value)
def test_an_audited_action_writes_its_line(app, client, api_token, caplog, via, action):
    actor = Actor(app, client, api_token)
    caplog.set_level(logging.INFO, logger="promptbeat.audit")
    caplog.clear()
    user, details = SCENARIOS[(via, action)](actor)
    lines = [r.getMessage() for r in caplog.records if r.name == "promptbeat.audit"]
    mine = [line for line in lines if re.search(rf"\baction={action}(\s|$)", line)]
    assert len(mine) == 1, f"expected one {action} line among {lines}"
    assert mine[0].startswith(f"user={user} via={via} action={action}"), mine[0]
    for key, value in details.items():
        assert f" {key}={value!r}" in mine[0], f"{key}={value!r} missing from {mine[0]!r}"
