"""Hardening: sign-in everywhere, CSRF, cookies, headers, sign-in rate limit, roles, tokens, audit."""
import logging
import re
import time

import pytest

from promptbeat.extensions import db
from promptbeat.models import ApiToken, Task, User, utcnow
from tests.conftest import csrf_token, issue_api_token
from web.security import SignInLimiter


def make_viewer(app, email="viewer@example.com"):
    return issue_api_token(app, email, "viewer password 1", role="viewer")


def sign_in(client, email, password):
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(page)})


def make_task(app):
    with app.app_context():
        task = Task(name="Feed", prompt="p", model="m", schedule_type="interval", interval_seconds=600,
                    timezone="UTC", enabled=False, anchor_at=utcnow())
        db.session.add(task)
        db.session.commit()
        return task.id


@pytest.mark.parametrize("path", ["/", "/tasks/new", "/tasks/1", "/tasks/1/runs", "/tasks/preview", "/account"])
def test_every_page_needs_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_sign_in_page_and_openapi_are_public(client):
    assert client.get("/login").status_code == 200
    assert client.get("/api/openapi.json").get_json()["openapi"].startswith("3.")


def test_forms_refuse_requests_without_csrf_token(app, signed_in):
    task_id = make_task(app)
    assert signed_in.post(f"/tasks/{task_id}/run").status_code == 400
    assert signed_in.post("/account/tokens", data={"name": "x"}).status_code == 400
    assert signed_in.post("/logout").status_code == 400


def test_security_headers_and_cookie_flags(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "<script>" not in response.get_data(as_text=True)  # scripts only by src
    assert not re.search(r"\son[a-z]+=", response.get_data(as_text=True))  # no inline handlers


def test_secure_cookie_and_proxy_headers_under_https(role_environ):
    from promptbeat.settings import Settings
    from web import create_app

    app = create_app(Settings.from_environ({**role_environ, "PROMPTBEAT_HTTPS": "1", "PROMPTBEAT_PROXY_HOPS": "1"}))
    response = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["Set-Cookie"]
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_sign_in_is_rate_limited(app, client, api_token):
    settings = app.config["PROMPTBEAT"]
    for _ in range(settings.signin_attempts):
        assert sign_in(client, "admin@example.com", "wrong password").status_code == 200
    blocked = sign_in(client, "admin@example.com", "correct horse battery")
    assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.get_data(as_text=True)


def test_sign_in_limit_does_not_reset_when_the_clock_enters_a_new_period(app, monkeypatch):
    settings = app.config["PROMPTBEAT"]
    limiter = SignInLimiter(settings.redis_url, 3, 300, settings.redbeat_key_prefix)
    # Two failures just before a five-minute mark, one just after: still three within the window.
    monkeypatch.setattr(time, "time", lambda: 1_800_000_299.9)
    limiter.failed("198.51.100.7")
    limiter.failed("198.51.100.7")
    monkeypatch.setattr(time, "time", lambda: 1_800_000_300.1)
    limiter.failed("198.51.100.7")
    assert limiter.blocked("198.51.100.7")
    assert not limiter.blocked("198.51.100.8")


def test_viewer_can_look_but_not_change_in_pages(app, client):
    task_id = make_task(app)
    make_viewer(app)
    assert sign_in(client, "viewer@example.com", "viewer password 1").status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "Feed" in page and "Run now" not in page and "New task" not in page
    token = csrf_token(page)
    for path in ["/tasks/new", f"/tasks/{task_id}/edit"]:
        assert client.get(path).status_code == 403
    for path in [f"/tasks/{task_id}/run", f"/tasks/{task_id}/enable", f"/tasks/{task_id}/disable",
                 f"/tasks/{task_id}/delete", "/account/tokens", "/connections/"]:
        assert client.post(path, data={"csrf_token": token, "name": "x", "note": "n"}).status_code == 403
    # The schedule preview only reads: viewers may use it.
    preview = client.post("/tasks/preview", json={"schedule_type": "interval", "interval_minutes": 5},
                          headers={"X-CSRFToken": token})
    assert preview.status_code == 200 and preview.get_json()["description"] == "Every 5 minutes"
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task is not None and not task.enabled and not task.executions


def test_viewer_token_can_read_but_not_change_in_the_api(app, client):
    task_id = make_task(app)
    headers = {"Authorization": f"Bearer {make_viewer(app)}"}
    assert client.get("/api/tasks", headers=headers).status_code == 200
    assert client.get(f"/api/tasks/{task_id}/executions", headers=headers).status_code == 200
    calls = [("post", "/api/tasks", {"name": "x", "prompt": "y"}), ("patch", f"/api/tasks/{task_id}", {"name": "z"}),
             ("delete", f"/api/tasks/{task_id}", None), ("post", f"/api/tasks/{task_id}/enable", None),
             ("post", f"/api/tasks/{task_id}/run", None), ("post", f"/api/tasks/{task_id}/pause", {"note": "n"}),
             ("post", f"/api/tasks/{task_id}/resume", None), ("post", f"/api/tasks/{task_id}/disable", None),
             ("post", "/api/connections", {"name": "c", "base_url": "http://127.0.0.1:9/v1"})]
    for method, path, body in calls:
        response = getattr(client, method)(path, headers=headers, json=body)
        assert response.status_code == 403 and response.get_json()["error"] == "forbidden", path
    preview = client.post("/api/schedule/preview", headers=headers, json={"schedule_type": "crontab", "cron": "0 9 * * *"})
    assert preview.status_code == 200 and len(preview.get_json()["next_runs"]) == 5
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task.name == "Feed" and task.pause_note is None


def test_tokens_are_created_shown_once_hashed_and_revoked(app, signed_in, client):
    page = signed_in.get("/account").get_data(as_text=True)
    created = signed_in.post("/account/tokens", data={"csrf_token": csrf_token(page), "name": "reporting"})
    plaintext = re.search(r'<textarea id="new-token"[^>]*>(pb_[^<]+)</textarea>', created.get_data(as_text=True)).group(1)
    assert client.get("/api/tasks", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 200
    again = signed_in.get("/account").get_data(as_text=True)
    assert "reporting" in again and plaintext not in again
    with app.app_context():
        row = db.session.execute(db.select(ApiToken).filter_by(name="reporting")).scalar_one()
        assert plaintext not in row.token_hash and len(row.token_hash) == 64
        token_id = row.id
    signed_in.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_token(again)})
    assert client.get("/api/tasks", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 401


def test_every_change_writes_an_audit_line(app, signed_in, api, caplog):
    caplog.set_level(logging.INFO, logger="promptbeat.audit")
    task_id = api.post("/tasks", json={"name": "A", "prompt": "p", "schedule_type": "crontab", "cron": "0 9 * * *"}).get_json()["id"]
    api.patch(f"/tasks/{task_id}", json={"name": "B"})
    token = csrf_token(signed_in.get("/").get_data(as_text=True))
    signed_in.post(f"/tasks/{task_id}/disable", data={"csrf_token": token})
    signed_in.post(f"/tasks/{task_id}/delete", data={"csrf_token": token})
    lines = [r.getMessage() for r in caplog.records if r.name == "promptbeat.audit"]
    assert any("via=api action=task_created" in line and "admin@example.com" in line for line in lines)
    assert any("via=api action=task_updated" in line for line in lines)
    assert any("via=web action=task_disabled" in line for line in lines)
    assert any("via=web action=task_deleted" in line for line in lines)


def test_create_user_command_makes_viewers(app):
    result = app.test_cli_runner().invoke(args=["create-user", "v2@example.com", "--role", "viewer",
                                                "--password", "long enough pw"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.execute(db.select(User).filter_by(email="v2@example.com")).scalar_one().role == "viewer"


def test_health_and_metrics_need_no_sign_in_but_metrics_keeps_its_token(role_environ):
    from promptbeat.settings import Settings
    from web import create_app

    app = create_app(Settings.from_environ(role_environ))
    client = app.test_client()
    assert client.get("/healthz").status_code in (200, 503)  # answered, not redirected to sign-in
    assert client.get("/metrics").status_code == 200
    guarded = create_app(Settings.from_environ({**role_environ, "PROMPTBEAT_METRICS_TOKEN": "metrics-secret"}))
    assert guarded.test_client().get("/metrics").status_code == 401
