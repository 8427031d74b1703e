"""Shared steps of the account tests: sign in through the form, read rows, post a page's form."""
from promptbeat.extensions import db
from promptbeat.models import User
from tests.conftest import csrf_token

VIEWER, VIEWER_PASSWORD = "viewer@example.com", "viewer password 1"
ADMIN, ADMIN_PASSWORD = "admin@example.com", "correct horse battery"


def login(client, email, password):
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(page)})


def post_form(client, page, path, **fields):
    """Post fields to path with the CSRF token of page (a path whose form carries one)."""
    token = csrf_token(client.get(page).get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **fields})


def user_row(app, email):
    """(id, role, disabled, password_hash, session_version) of the user, read afresh."""
    with app.app_context():
        user = db.session.execute(db.select(User).filter_by(email=email)).scalar_one()
        row = (user.id, user.role, user.disabled, user.password_hash, user.session_version)
        db.session.remove()
        return row


def users_table(app):
    with app.app_context():
        rows = db.session.execute(db.select(User.email, User.role, User.disabled, User.password_hash)
                                  .order_by(User.id)).all()
        db.session.remove()
        return [tuple(row) for row in rows]
