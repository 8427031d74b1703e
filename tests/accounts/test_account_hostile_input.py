"""Hostile values in every field of the account and users forms: a 4xx with a message, nothing changed, no 500."""
import pytest

from promptbeat.extensions import db
from promptbeat.models import ApiToken, User
from tests.accounts.helpers import ADMIN_PASSWORD, VIEWER, VIEWER_PASSWORD, user_row
from tests.conftest import csrf_token, issue_api_token

MARKUP = "<script>alert(1)</script><b>bold</b>"
HOSTILE = {
    "nul": "before\x00after long",
    "crlf": "line one\r\nline two",
    "1mb": "x" * 2**20,
    "markup": MARKUP,
    "rtl": "Report \u202egnp.exe\u202c 🚀",
    "empty": "",
}
# For a password, markup is any text: accepted (and never shown). Every other value is refused.
PASSWORD_ACCEPTS = {"markup"}


def everything(app):
    """The users and their tokens as stored."""
    with app.app_context(), db.engine.connect() as connection:
        users = connection.exec_driver_sql("SELECT * FROM users ORDER BY id").all()
        tokens = connection.exec_driver_sql("SELECT id, user_id, name, token_hash FROM api_tokens ORDER BY id").all()
        return users, tokens


def forms(viewer_id):
    """(page, path, base fields, fields to spoil) of every form this feature added."""
    new_password = {"current_password": ADMIN_PASSWORD, "new_password": "a fine password",
                    "repeat_password": "a fine password"}
    return [
        ("/users/", "/users/", {"email": "new@example.com", "role": "viewer", "password": "a fine password"},
         ["email", "role", "password"]),
        ("/users/", f"/users/{viewer_id}/role", {"role": "admin"}, ["role"]),
        ("/users/", f"/users/{viewer_id}/password", {"password": "a fine password"}, ["password"]),
        ("/account", "/account/password", new_password, ["current_password", "new_password", "repeat_password"]),
    ]


@pytest.fixture
def viewer_id(app):
    issue_api_token(app, VIEWER, VIEWER_PASSWORD, role="viewer")
    return user_row(app, VIEWER)[0]


def test_every_account_field_refuses_hostile_values_and_changes_nothing(app, signed_in, viewer_id, subtests):
    for page, path, base, fields in forms(viewer_id):
        token = csrf_token(signed_in.get(page).get_data(as_text=True))
        for field in fields:
            for label, value in HOSTILE.items():
                if label in PASSWORD_ACCEPTS and "password" in field and field != "current_password":
                    continue
                with subtests.test(f"{path} {field}={label}"):
                    before = everything(app)
                    data = {**base, "csrf_token": token, field: value}
                    if field == "new_password":
                        data["repeat_password"] = value
                    response = signed_in.post(path, data=data)
                    assert 400 <= response.status_code < 500, (response.status_code, response.get_data()[:300])
                    page_text = response.get_data(as_text=True)
                    assert MARKUP not in page_text
                    if response.status_code == 422:
                        assert 'class="field-error"' in page_text, "no message at the field"
                    assert everything(app) == before


def test_wrong_shapes_are_refused(app, signed_in, viewer_id, subtests):
    for page, path, base, fields in forms(viewer_id):
        token = csrf_token(signed_in.get(page).get_data(as_text=True))
        for field in fields:
            with subtests.test(f"{path} without {field}"):
                before = everything(app)
                data = {key: value for key, value in {**base, "csrf_token": token}.items() if key != field}
                assert signed_in.post(path, data=data).status_code == 422
                assert everything(app) == before
            with subtests.test(f"{path} {field} twice"):
                # A repeated field is read as its first value, like a browser's single input.
                data = {**base, "csrf_token": token, field: ["\x00", base[field]]}
                assert signed_in.post(path, data=data).status_code in (302, 422)
    for path in ("/users/2147483648/disable", "/users/99999999999999999999/role", "/users/-1/password"):
        with subtests.test(path):
            token = csrf_token(signed_in.get("/users/").get_data(as_text=True))
            assert signed_in.post(path, data={"csrf_token": token, "role": "admin", "password": "x" * 10}).status_code == 404


def test_a_markup_password_is_taken_as_text_and_never_shown(app, signed_in, viewer_id):
    token = csrf_token(signed_in.get("/users/").get_data(as_text=True))
    response = signed_in.post(f"/users/{viewer_id}/password", data={"csrf_token": token, "password": MARKUP},
                              follow_redirects=True)
    assert response.status_code == 200 and MARKUP not in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, viewer_id).check_password(MARKUP)


def test_a_markup_email_is_refused_and_shown_escaped(app, signed_in):
    token = csrf_token(signed_in.get("/users/").get_data(as_text=True))
    response = signed_in.post("/users/", data={"csrf_token": token, "email": f"{MARKUP}@example.com",
                                               "role": "viewer", "password": "a fine password"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert MARKUP not in page and "&lt;script&gt;" in page


def test_the_sign_in_language_menu_takes_only_known_languages(app, client, subtests):
    token = csrf_token(client.get("/login").get_data(as_text=True))
    for label, value in {**HOSTILE, "unknown": "fr"}.items():
        if label == "empty":
            continue
        with subtests.test(label):
            assert client.post("/language", data={"csrf_token": token, "language": value}).status_code == 400
    for next_page in ("//evil.example/", "/\\evil.example", "/\t/evil.example", "https://evil.example/"):
        with subtests.test(next_page):
            response = client.post("/language", data={"csrf_token": token, "language": "zh_Hans", "next": next_page})
            assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "登录" in client.get("/login").get_data(as_text=True)
    with app.app_context():
        assert db.session.execute(db.select(ApiToken)).first() is None
