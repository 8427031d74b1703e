"""The first admin's sign-in file: made once with mode 0600, kept until the password changes."""
import stat

from promptbeat.accounts import sign_in_file
from promptbeat.accounts.sign_in_file import SignIn
from tests.accounts.helpers import ADMIN, ADMIN_PASSWORD, VIEWER, login, post_form, user_row
from tests.conftest import issue_api_token


def ensure(app, path):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["ensure-admin", "--credentials-file", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_file_is_private_holds_a_working_password_and_survives_a_second_start(app, tmp_path):
    path = tmp_path / "admin_credentials"
    output = ensure(app, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sign_in = sign_in_file.read(path)
    assert sign_in.email == "admin@localhost" and len(sign_in.password) >= 12
    # The password is in the file, not on the screen among the start-up lines.
    assert sign_in.password not in output and str(path) in output
    assert login(app.test_client(), sign_in.email, sign_in.password).status_code == 302

    assert ensure(app, path) == ""  # a later start: no new user, the same file
    assert sign_in_file.read(path) == sign_in and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_file_says_so_once_the_password_was_changed(app, tmp_path):
    path = tmp_path / "admin_credentials"
    ensure(app, path)
    result = app.test_cli_runner().invoke(args=["reset-password", "admin@localhost", "--password", "my own password"])
    assert result.exit_code == 0, result.output
    ensure(app, path)
    assert sign_in_file.read(path) == SignIn("admin@localhost", None)
    assert "password: changed" in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_password_changed_in_the_web_marks_the_file_at_once(app, signed_in, swap_settings, tmp_path):
    path = tmp_path / "admin_credentials"
    sign_in_file.write(path, SignIn(ADMIN, ADMIN_PASSWORD))
    swap_settings(admin_credentials_file=str(path))
    # Another user's new password leaves the file alone.
    issue_api_token(app, VIEWER, "viewer password 1", role="viewer")
    viewer_id = user_row(app, VIEWER)[0]
    assert post_form(signed_in, "/users/", f"/users/{viewer_id}/password", password="another one 1").status_code == 302
    assert sign_in_file.read(path) == SignIn(ADMIN, ADMIN_PASSWORD)
    changed = post_form(signed_in, "/account", "/account/password", current_password=ADMIN_PASSWORD,
                        new_password="a brand new password", repeat_password="a brand new password")
    assert changed.status_code == 302
    assert sign_in_file.read(path) == SignIn(ADMIN, None) and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_demo_tasks_are_added_once(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0 and "4 example task(s) added" in first.output, first.output
    second = runner.invoke(args=["seed-demo"])
    assert second.exit_code == 0 and "already there" in second.output
    from promptbeat.extensions import db
    from promptbeat.models import Task
    with app.app_context():
        tasks = {task.name: task for task in db.session.execute(db.select(Task)).scalars()}
    assert len(tasks) == 4
    assert {task.schedule_type for task in tasks.values()} == {"interval", "fixed_time", "crontab"}
    assert tasks["Demo: weekdays 09:00 in Shanghai"].timezone == "Asia/Shanghai"
