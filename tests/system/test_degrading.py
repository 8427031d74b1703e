"""Degrading cleanly: a lost database is a 503 to retry, sign-in waits for its limiter, odd queries are 4xx."""
import pytest
from sqlalchemy import create_engine, text

from promptbeat.extensions import db
from promptbeat.settings import Settings
from tests.conftest import csrf_token
from web import create_app

# Nothing listens here: a database or Redis that is down.
STOPPED = "127.0.0.1:1"


def terminate_app_connections(postgres_url):
    """Kill every other backend of the test database, as a PostgreSQL restart or an idle timeout would."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            killed = connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    finally:
        engine.dispose()
    return killed


def test_a_killed_database_connection_is_a_503_to_retry_then_pages_work_again(app, signed_in, postgres_url):
    with app.app_context():
        db.engine.dispose()  # one pooled connection from here on, the one the next request leaves behind
    assert signed_in.get("/account").status_code == 200
    assert terminate_app_connections(postgres_url) >= 1

    response = signed_in.get("/account")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    page = response.get_data(as_text=True)
    assert "The database is unavailable at the moment" in page and "Traceback" not in page
    assert signed_in.get("/account").status_code == 200  # the pool reconnected


def test_a_killed_connection_under_the_api_is_a_json_503(app, api, postgres_url):
    with app.app_context():
        db.engine.dispose()
    assert api.get("/tasks").status_code == 200
    terminate_app_connections(postgres_url)
    response = api.get("/tasks")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.get_json() == {"error": "unavailable", "message": "The database is unavailable; try again shortly."}
    assert api.get("/tasks").status_code == 200


@pytest.fixture
def stopped_database_app(app, role_environ):
    """The same site with its database server down (same secret key, so the session's cookies still apply)."""
    url = app.config["PROMPTBEAT"].database_url
    scheme, _, rest = url.partition("://")
    credentials, _, path = rest.partition("@")
    down = create_app(Settings.from_environ({**role_environ, "DATABASE_URL": f"{scheme}://{credentials}@{STOPPED}/"
                                                                            f"{path.partition('/')[2]}"}))
    yield down
    with down.app_context():
        db.engine.dispose()


def test_a_database_server_that_is_down_gives_503_pages_and_json(app, signed_in, api_token, stopped_database_app):
    cookie = signed_in.get_cookie("session").value
    browser = stopped_database_app.test_client()
    browser.set_cookie("session", cookie)
    page = browser.get("/", headers={"Accept-Language": "zh-CN"})
    assert page.status_code == 503 and page.headers["Retry-After"] == "5"
    assert "数据库" in page.get_data(as_text=True)  # in the browser's language, without the user's setting
    program = stopped_database_app.test_client().get("/api/tasks", headers={"Authorization": f"Bearer {api_token}"})
    assert program.status_code == 503 and program.get_json()["error"] == "unavailable"


def test_sign_in_fails_closed_with_a_clear_message_when_redis_is_down(app, role_environ, api_token):
    down = create_app(Settings.from_environ({**role_environ, "REDIS_URL": f"redis://{STOPPED}/0"}))
    client = down.test_client()
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"email": "admin@example.com", "password": "correct horse battery",
                                           "csrf_token": csrf_token(page)})
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "Sign-in is unavailable because its rate limit cannot be checked" in response.get_data(as_text=True)
    assert client.get("/account").status_code == 302
    with down.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("method, path, allowed", [
    ("delete", "/login", {"GET", "HEAD", "OPTIONS", "POST"}),
    ("get", "/logout", {"OPTIONS", "POST"}),
    ("put", "/api/tasks", {"GET", "HEAD", "OPTIONS", "POST"}),
])
def test_405_answers_say_which_methods_are_allowed(client, method, path, allowed):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed
    if path.startswith("/api/"):
        assert response.get_json()["error"] == "method_not_allowed"


def test_a_nul_in_the_search_is_a_400_with_a_message(signed_in):
    response = signed_in.get("/?q=%00")
    assert response.status_code == 400
    assert "The search cannot contain NUL characters." in response.get_data(as_text=True)
    fragment = signed_in.get("/?q=a%00b", headers={"HX-Request": "true"})
    assert fragment.status_code == 400


@pytest.mark.parametrize("page", ["9" * 20, "-" + "9" * 20, "1e99", "0", ""])
def test_any_page_number_gives_a_page(app, signed_in, api, page):
    task_id = api.post("/tasks", json={"name": "Paged", "prompt": "p", "interval_seconds": 600,
                                       "enabled": False}).get_json()["id"]
    for path in ["/", f"/tasks/{task_id}", f"/tasks/{task_id}/runs"]:
        response = signed_in.get(path, query_string={"page": page})
        assert response.status_code == 200, (path, response.status_code)
    listing = signed_in.get("/", query_string={"page": page}).get_data(as_text=True)
    # A page past the end is empty; the number is clamped, never passed on to the database as it came.
    assert (f'data-task-id="{task_id}"' in listing) == (page != "9" * 20)
