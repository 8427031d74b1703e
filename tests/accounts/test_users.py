"""Accounts people manage: change and reset passwords, roles, disabling, and the last active admin."""
import subprocess
import sys

import pytest

from tests.accounts.helpers import (ADMIN, ADMIN_PASSWORD, VIEWER, VIEWER_PASSWORD, login, post_form, user_row,
                                    users_table)
from tests.conftest import issue_api_token
from tests.services import ROOT, role_env


@pytest.fixture
def viewer(app):
    """A viewer and that viewer's API token."""
    return issue_api_token(app, VIEWER, VIEWER_PASSWORD, role="viewer")


def test_change_password_needs_the_current_one_and_ends_other_sessions(app, signed_in):
    elsewhere = app.test_client()
    assert login(elsewhere, ADMIN, ADMIN_PASSWORD).status_code == 302
    before = user_row(app, ADMIN)

    wrong = post_form(signed_in, "/account", "/account/password", current_password="not it",
                      new_password="a brand new password", repeat_password="a brand new password")
    assert wrong.status_code == 422 and "The current password is not right." in wrong.get_data(as_text=True)
    differ = post_form(signed_in, "/account", "/account/password", current_password=ADMIN_PASSWORD,
                       new_password="a brand new password", repeat_password="another new password")
    assert differ.status_code == 422 and "The two new passwords differ." in differ.get_data(as_text=True)
    short = post_form(signed_in, "/account", "/account/password", current_password=ADMIN_PASSWORD,
                      new_password="short", repeat_password="short")
    assert short.status_code == 422
    assert "The password must be at least 8 characters." in short.get_data(as_text=True)
    assert user_row(app, ADMIN) == before

    changed = post_form(signed_in, "/account", "/account/password", current_password=ADMIN_PASSWORD,
                        new_password="a brand new password", repeat_password="a brand new password")
    assert changed.status_code == 302
    assert "Password changed" in signed_in.get("/account").get_data(as_text=True)  # this browser stays in
    assert elsewhere.get("/account").status_code == 302  # the other one is signed out
    assert login(app.test_client(), ADMIN, ADMIN_PASSWORD).status_code == 200
    assert login(app.test_client(), ADMIN, "a brand new password").status_code == 302


def test_the_minimum_length_is_said_in_chinese_too(app, signed_in):
    assert post_form(signed_in, "/account", "/account/language", language="zh_Hans").status_code == 302
    response = post_form(signed_in, "/account", "/account/password", current_password=ADMIN_PASSWORD,
                         new_password="1234567", repeat_password="1234567")
    assert response.status_code == 422 and "密码至少需要 8 个字符。" in response.get_data(as_text=True)


def test_an_admin_resets_a_viewers_password_and_the_viewer_signs_in_with_it(app, signed_in, viewer):
    viewer_browser = app.test_client()
    assert login(viewer_browser, VIEWER, VIEWER_PASSWORD).status_code == 302
    viewer_id = user_row(app, VIEWER)[0]
    short = post_form(signed_in, "/users/", f"/users/{viewer_id}/password", password="short")
    assert short.status_code == 422 and "at least 8 characters" in short.get_data(as_text=True)
    response = post_form(signed_in, "/users/", f"/users/{viewer_id}/password", password="the viewer's new one")
    assert response.status_code == 302
    assert viewer_browser.get("/account").status_code == 302
    assert login(app.test_client(), VIEWER, VIEWER_PASSWORD).status_code == 200
    assert login(app.test_client(), VIEWER, "the viewer's new one").status_code == 302


def test_an_admin_creates_a_user_and_sets_a_role(app, signed_in):
    created = post_form(signed_in, "/users/", "/users/", email=" New@Example.com ", role="viewer",
                        password="a first password")
    assert created.status_code == 302
    new_id, role, disabled, *_ = user_row(app, "new@example.com")
    assert (role, disabled) == ("viewer", False)
    again = post_form(signed_in, "/users/", "/users/", email="new@example.com", role="viewer",
                      password="a first password")
    assert again.status_code == 422 and "A user with this email address exists." in again.get_data(as_text=True)
    assert post_form(signed_in, "/users/", f"/users/{new_id}/role", role="admin").status_code == 302
    assert user_row(app, "new@example.com")[1] == "admin"
    assert login(app.test_client(), "new@example.com", "a first password").status_code == 302


def test_a_disabled_user_cannot_sign_in_nor_use_a_session_or_an_api_token(app, signed_in, viewer):
    viewer_browser = app.test_client()
    assert login(viewer_browser, VIEWER, VIEWER_PASSWORD).status_code == 302
    bearer = {"Authorization": f"Bearer {viewer}"}
    assert viewer_browser.get("/api/tasks", headers=bearer).status_code == 200
    viewer_id = user_row(app, VIEWER)[0]

    assert post_form(signed_in, "/users/", f"/users/{viewer_id}/disable").status_code == 302
    assert user_row(app, VIEWER)[2] is True
    assert viewer_browser.get("/account").status_code == 302
    refused = viewer_browser.get("/api/tasks", headers=bearer)
    assert refused.status_code == 401 and refused.get_json()["message"] == "The API token's user is disabled."
    wrong = login(app.test_client(), VIEWER, "not the password")
    assert wrong.status_code == 200 and "Wrong email or password." in wrong.get_data(as_text=True)
    right = login(app.test_client(), VIEWER, VIEWER_PASSWORD)
    assert right.status_code == 403 and "This account is disabled." in right.get_data(as_text=True)

    assert post_form(signed_in, "/users/", f"/users/{viewer_id}/enable").status_code == 302
    assert login(app.test_client(), VIEWER, VIEWER_PASSWORD).status_code == 302
    assert app.test_client().get("/api/tasks", headers=bearer).status_code == 200


def test_the_last_active_admin_is_neither_disabled_nor_demoted(app, signed_in, viewer):
    admin_id = user_row(app, ADMIN)[0]
    before = users_table(app)
    disable = post_form(signed_in, "/users/", f"/users/{admin_id}/disable")
    assert disable.status_code == 422 and "The last active admin cannot be disabled." in disable.get_data(as_text=True)
    demote = post_form(signed_in, "/users/", f"/users/{admin_id}/role", role="viewer")
    assert demote.status_code == 422
    assert "The last active admin cannot become a viewer." in demote.get_data(as_text=True)
    result = app.test_cli_runner().invoke(args=["set-role", ADMIN, "viewer"])
    assert result.exit_code != 0 and "last active admin" in result.output
    assert users_table(app) == before

    # A disabled admin does not count: with the only other admin disabled, this one is still the last.
    issue_api_token(app, "second@example.com", "second admin password", role="admin")
    second_id = user_row(app, "second@example.com")[0]
    assert post_form(signed_in, "/users/", f"/users/{second_id}/disable").status_code == 302
    assert post_form(signed_in, "/users/", f"/users/{admin_id}/role", role="viewer").status_code == 422
    assert post_form(signed_in, "/users/", f"/users/{second_id}/enable").status_code == 302
    # With another active admin, this one may step down.
    assert post_form(signed_in, "/users/", f"/users/{admin_id}/role", role="viewer").status_code == 302
    assert user_row(app, ADMIN)[1] == "viewer"


def test_a_viewer_cannot_open_the_users_page(app, client, viewer):
    assert login(client, VIEWER, VIEWER_PASSWORD).status_code == 302
    assert client.get("/users/").status_code == 403
    assert 'href="/users/"' not in client.get("/account").get_data(as_text=True)


def flask_cli(role_environ, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "flask", "--app", "web", *args], cwd=ROOT,
                          env=role_env(role_environ), input=stdin, capture_output=True, text=True, timeout=60)


def test_reset_password_command_prompts_twice_and_ends_sessions(app, role_environ, signed_in):
    result = flask_cli(role_environ, "reset-password", "Admin@Example.com", stdin="new password 1\nnew password 1\n")
    assert result.returncode == 0, result.stderr
    assert "Repeat for confirmation" in result.stdout + result.stderr
    assert "via=cli action=password_reset" in result.stderr
    assert "Password of admin@example.com changed" in result.stdout
    assert signed_in.get("/account").status_code == 302
    assert login(app.test_client(), ADMIN, "new password 1").status_code == 302

    mismatch = flask_cli(role_environ, "reset-password", ADMIN, stdin="one password\nanother one\n" * 3)
    assert mismatch.returncode != 0
    short = flask_cli(role_environ, "reset-password", ADMIN, "--password", "short")
    assert short.returncode != 0 and "The password must be at least 8 characters." in short.stderr
    unknown = flask_cli(role_environ, "reset-password", "nobody@example.com", "--password", "long enough")
    assert unknown.returncode != 0 and "no user nobody@example.com" in unknown.stderr
    assert login(app.test_client(), ADMIN, "new password 1").status_code == 302


def test_account_changes_are_audited(app, signed_in, viewer, caplog):
    caplog.set_level("INFO", logger="promptbeat.audit")
    viewer_id = user_row(app, VIEWER)[0]
    post_form(signed_in, "/users/", f"/users/{viewer_id}/password", password="the viewer's new one")
    post_form(signed_in, "/users/", f"/users/{viewer_id}/disable")
    post_form(signed_in, "/users/", f"/users/{viewer_id}/role", role="admin")
    post_form(signed_in, "/account", "/account/password", current_password=ADMIN_PASSWORD,
              new_password="a brand new password", repeat_password="a brand new password")
    lines = [record.getMessage() for record in caplog.records if record.name == "promptbeat.audit"]
    for action in ("password_reset", "user_disabled", "user_role_set", "password_changed"):
        assert any(f"user={ADMIN} via=web action={action}" in line for line in lines), (action, lines)
    # A password never reaches the log.
    assert not any("new one" in line or "brand new" in line for line in lines)
