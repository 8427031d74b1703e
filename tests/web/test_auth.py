"""Sign-in: bearer tokens for the API, the login form and CSRF for pages, and the create-admin command."""
import subprocess
import sys

import pytest
from sqlalchemy import text

from promptbeat.extensions import db
from promptbeat.models import ApiToken, Task, User, hash_token
from tests.conftest import csrf_token, issue_api_token
from tests.services import ROOT, role_env

API_CALLS = [
    ("get", "/api/tasks"),
    ("post", "/api/tasks"),
    ("get", "/api/tasks/1"),
    ("patch", "/api/tasks/1"),
    ("delete", "/api/tasks/1"),
    ("post", "/api/tasks/1/run"),
    ("get", "/api/tasks/1/executions"),
]


def task_count(app):
    with app.app_context():
        return len(db.session.execute(db.select(Task.id)).all())


@pytest.mark.parametrize("method, path", API_CALLS)
def test_api_without_a_token_is_401(app, client, method, path):
    response = getattr(client, method)(path, json={"name": "n", "prompt": "p", "interval_seconds": 60})
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized",
                                   "message": "Send an API token: Authorization: Bearer <token>."}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="promptbeat"'
    assert task_count(app) == 0


@pytest.mark.parametrize("header", [
    "Bearer pb_not-a-real-token",
    "Bearer ",
    "Basic YWRtaW5AZXhhbXBsZS5jb206Y29ycmVjdA==",
])
def test_api_with_a_wrong_token_is_401(app, client, api_token, header):
    response = client.post("/api/tasks", headers={"Authorization": header},
                           json={"name": "n", "prompt": "p", "interval_seconds": 60})
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert task_count(app) == 0


def test_api_with_the_right_token_works_and_records_its_use(app, client, api_token):
    with app.app_context():
        assert db.session.execute(db.select(ApiToken.last_used_at)).scalar_one() is None
    response = client.get("/api/tasks", headers={"Authorization": f"Bearer {api_token}"})
    assert response.status_code == 200
    assert response.get_json() == {"tasks": []}
    with app.app_context():
        assert db.session.execute(db.select(ApiToken.last_used_at)).scalar_one() is not None


def test_a_session_cookie_does_not_open_the_api(signed_in):
    assert signed_in.get("/api/tasks").status_code == 401


@pytest.mark.parametrize("method, path", [
    ("get", "/"),
    ("get", "/tasks/new"),
    ("get", "/tasks/1"),
    ("get", "/tasks/1/edit"),
])
def test_pages_redirect_to_login_when_signed_out(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login?next=")


def login(client, email, password, query=""):
    page = client.get("/login" + query).get_data(as_text=True)
    return client.post("/login" + query, data={"email": email, "password": password,
                                               "csrf_token": csrf_token(page)})


@pytest.mark.parametrize("email, password", [
    ("admin@example.com", "wrong password"),
    ("nobody@example.com", "correct horse battery"),
])
def test_login_with_wrong_credentials_shows_an_error(client, api_token, email, password):
    response = login(client, email, password)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Wrong email or password." in page
    assert "Sign out" not in page
    assert client.get("/").status_code == 302


def test_login_goes_to_the_page_asked_for(client, api_token):
    response = login(client, "Admin@Example.com ", "correct horse battery", "?next=/tasks/new")
    assert response.status_code == 302
    assert response.headers["Location"] == "/tasks/new"
    page = client.get("/tasks/new").get_data(as_text=True)
    assert "Sign out (admin@example.com)" in page


# Each of these reads as another site to a browser: it drops tabs and newlines and reads "\\" as "/".
OFF_SITE = ["//evil.example/phish", "/%09/evil.example", "/%0a/evil.example", "/%0d/evil.example",
            "/\\evil.example", "\\/evil.example", "/%5Cevil.example", "https://evil.example/",
            "http:/evil.example", "%2F%2Fevil.example", "/%00/evil.example", "evil.example", "/%E2%80%8B/evil.example"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_login_never_redirects_off_site(client, api_token, target):
    response = login(client, "admin@example.com", "correct horse battery", "?next=" + target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target", OFF_SITE)
def test_language_change_never_redirects_off_site(signed_in, target):
    from urllib.parse import unquote

    page = signed_in.get("/account").get_data(as_text=True)
    response = signed_in.post("/account/language", data={"csrf_token": csrf_token(page), "language": "en",
                                                          "next": unquote(target)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"


def test_language_change_returns_to_the_page_it_was_made_on(signed_in):
    page = signed_in.get("/account").get_data(as_text=True)
    response = signed_in.post("/account/language", data={"csrf_token": csrf_token(page), "language": "zh_Hans",
                                                          "next": "/tasks/new?x=1"})
    assert response.headers["Location"] == "/tasks/new?x=1"


def test_logout(signed_in):
    page = signed_in.get("/").get_data(as_text=True)
    response = signed_in.post("/logout", data={"csrf_token": csrf_token(page)})
    assert response.headers["Location"] == "/login"
    assert signed_in.get("/").status_code == 302


def test_form_post_without_csrf_token_is_400(app, signed_in):
    response = signed_in.post("/tasks/new", data={
        "name": "n", "prompt": "p", "schedule_type": "interval", "interval_minutes": "30", "timezone": "UTC",
        "temperature": "0.7", "enabled": "y",
    })
    assert response.status_code == 400
    assert "CSRF token is missing" in response.get_data(as_text=True)
    assert task_count(app) == 0


def test_action_without_csrf_token_is_400(app, api, signed_in):
    task_id = api.post("/tasks", json={"name": "n", "prompt": "p", "interval_seconds": 60,
                                       "enabled": False}).get_json()["id"]
    assert signed_in.post(f"/tasks/{task_id}/delete").status_code == 400
    assert signed_in.post(f"/tasks/{task_id}/delete", data={"csrf_token": "forged"}).status_code == 400
    assert task_count(app) == 1


def test_login_without_csrf_token_is_400(client, api_token):
    response = client.post("/login", data={"email": "admin@example.com", "password": "correct horse battery"})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def flask_cli(role_environ, *args):
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "web", *args], cwd=ROOT, env=role_env(role_environ),
        capture_output=True, text=True, timeout=60,
    )


def test_create_admin_prints_a_working_token_stored_only_hashed(app, client, role_environ):
    result = flask_cli(role_environ, "create-admin", "Ops@Example.com", "--password", "s3cret-pass")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "Created admin ops@example.com. API token (shown once):"
    token = lines[-1]

    response = client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert login(client, "ops@example.com", "s3cret-pass").status_code == 302

    with app.app_context():
        rows = db.session.execute(text("SELECT * FROM api_tokens")).all()
        users = db.session.execute(text("SELECT * FROM users")).all()
        (stored,) = db.session.execute(db.select(ApiToken)).scalars().all()
        assert stored.token_hash == hash_token(token)
        assert stored.user.email == "ops@example.com"
        assert db.session.execute(db.select(User.password_hash)).scalar_one() != "s3cret-pass"
    for row in rows + users:
        for value in row:
            assert token not in str(value)
            assert "s3cret-pass" not in str(value)


def session_cookie(client):
    return client.get_cookie("session").value


def replay(app, cookie):
    """A second browser holding a copy of a session cookie."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other


def make_task(app):
    with app.app_context():
        task = Task(name="Feed", prompt="p", model="m", schedule_type="interval", interval_seconds=600,
                    timezone="UTC", enabled=True)
        db.session.add(task)
        db.session.commit()
        return task.id


def test_a_cookie_saved_before_sign_out_no_longer_works(app, signed_in):
    task_id = make_task(app)
    page = signed_in.get("/account").get_data(as_text=True)
    saved, token = session_cookie(signed_in), csrf_token(page)
    assert replay(app, saved).get("/account").status_code == 200
    assert signed_in.post("/logout", data={"csrf_token": token}).status_code == 302

    copy = replay(app, saved)
    assert copy.get("/account").status_code == 302
    response = copy.post(f"/tasks/{task_id}/disable", data={"csrf_token": token, "note": "after sign-out"})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task.enabled and task.pause_note is None


def test_sign_in_starts_a_new_session(app, client, api_token):
    page = client.get("/login").get_data(as_text=True)
    before, token_before = session_cookie(client), csrf_token(page)
    assert login(client, "admin@example.com", "correct horse battery").status_code == 302
    assert session_cookie(client) != before
    # Nothing from the session handed over before sign-in carries on: not even its CSRF token.
    assert client.post("/logout", data={"csrf_token": token_before}).status_code == 400
    assert replay(app, before).get("/account").status_code == 302


def test_a_new_password_ends_existing_sessions(app, signed_in):
    result = app.test_cli_runner().invoke(args=["reset-password", "admin@example.com", "--password", "a new password"])
    assert result.exit_code == 0, result.output
    assert signed_in.get("/account").status_code == 302
    assert login(signed_in, "admin@example.com", "correct horse battery").status_code == 200
    assert login(signed_in, "admin@example.com", "a new password").status_code == 302
    assert signed_in.get("/account").status_code == 200


def test_a_new_role_ends_existing_sessions_and_the_same_role_does_not(app, signed_in):
    runner = app.test_cli_runner()
    # Another admin, so this one is not the last active admin (who keeps the role).
    assert runner.invoke(args=["create-admin", "other@example.com", "--password", "another admin"]).exit_code == 0
    assert runner.invoke(args=["set-role", "admin@example.com", "admin"]).exit_code == 0
    assert signed_in.get("/account").status_code == 200
    result = runner.invoke(args=["set-role", "admin@example.com", "viewer"])
    assert result.exit_code == 0, result.output
    assert signed_in.get("/account").status_code == 302
    assert login(signed_in, "admin@example.com", "correct horse battery").status_code == 302
    assert signed_in.get("/tasks/new").status_code == 403


def test_set_password_through_the_model_ends_sessions(app, signed_in):
    assert signed_in.get("/account").status_code == 200
    with app.app_context():
        user = db.session.execute(db.select(User)).scalar_one()
        user.set_password("another password")
        db.session.commit()
    assert signed_in.get("/account").status_code == 302


def test_changing_the_language_keeps_the_session(signed_in):
    page = signed_in.get("/account").get_data(as_text=True)
    signed_in.post("/account/language", data={"csrf_token": csrf_token(page), "language": "zh_Hans"})
    assert signed_in.get("/account").status_code == 200


def test_set_role_and_reset_password_refuse_unknown_users_and_short_passwords(app):
    runner = app.test_cli_runner()
    assert "no user nobody@example.com" in runner.invoke(args=["set-role", "nobody@example.com", "viewer"]).output
    issue_api_token(app)
    result = runner.invoke(args=["reset-password", "admin@example.com", "--password", "short"])
    assert result.exit_code != 0 and "at least 8 characters" in result.output
