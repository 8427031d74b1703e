"""The connections page's forms: every field editable, header values masked and kept unless replaced."""
from cryptography.fernet import Fernet

from promptbeat.extensions import db
from promptbeat.llm import connections
from promptbeat.models import Connection
from tests.conftest import csrf_token


def sent_headers(app, connection_id):
    with app.app_context():
        connection = db.session.get(Connection, connection_id)
        return dict(connections.endpoint_of(connection, app.config["PROMPTBEAT"]).headers)


def test_add_then_edit_every_field_with_headers_masked(app, signed_in, swap_settings):
    swap_settings(fernet_keys=(Fernet.generate_key().decode(),))
    page = signed_in.get("/connections/").get_data(as_text=True)
    assert 'class="card form-grid"' in page and '<textarea name="extra_headers"' in page
    saved = signed_in.post("/connections/", follow_redirects=True, data={
        "csrf_token": csrf_token(page), "name": "Local", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-first",
        "default_model": "m1", "extra_headers": "X-Team: reports\nX-Secret: s3cret-value"})
    html = saved.get_data(as_text=True)
    assert saved.status_code == 200 and "s3cret-value" not in html and "sk-first" not in html
    assert f"X-Secret: {connections.MASK}" in html
    with app.app_context():
        connection_id = db.session.execute(db.select(Connection.id)).scalar_one()
    assert sent_headers(app, connection_id) == {"X-Team": "reports", "X-Secret": "s3cret-value"}

    # Saved as shown: the masked values keep the stored ones; the other fields change.
    edit = {"csrf_token": csrf_token(html), "name": "Renamed", "base_url": "http://127.0.0.1:9/v2",
            "default_model": "m2", "api_key": "", "extra_headers": f"X-Team: {connections.MASK}\nX-Secret: {connections.MASK}"}
    assert signed_in.post(f"/connections/{connection_id}/edit", data=edit).status_code == 302
    with app.app_context():
        connection = db.session.get(Connection, connection_id)
        assert (connection.name, connection.base_url, connection.default_model) == ("Renamed", "http://127.0.0.1:9/v2", "m2")
        assert connection.has_api_key
    assert sent_headers(app, connection_id) == {"X-Team": "reports", "X-Secret": "s3cret-value"}

    # One value replaced, one header dropped, the key replaced.
    edit.update(extra_headers=f"X-Secret: new-value", api_key="sk-second")
    assert signed_in.post(f"/connections/{connection_id}/edit", data=edit).status_code == 302
    assert sent_headers(app, connection_id) == {"X-Secret": "new-value"}
    with app.app_context():
        connection = db.session.get(Connection, connection_id)
        assert connections.endpoint_of(connection, app.config["PROMPTBEAT"]).api_key == "sk-second"

    refused = signed_in.post(f"/connections/{connection_id}/edit", data={**edit, "extra_headers": "no colon here"})
    assert refused.status_code == 422
    assert "Write one header a line, as Name: value, each name once." in refused.get_data(as_text=True)
    twice = signed_in.post(f"/connections/{connection_id}/edit", data={**edit, "extra_headers": "X-A: 1\nX-A: 2"})
    assert twice.status_code == 422
    assert sent_headers(app, connection_id) == {"X-Secret": "new-value"}
