"""The connections page: list, add, edit, test and delete OpenAI-compatible endpoints. Secrets are write-only."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required

from promptbeat.llm import connections
from promptbeat.extensions import db
from promptbeat.models import Connection
from web.security import admin_required, audit

bp = Blueprint("connections", __name__, url_prefix="/connections")


@bp.before_request
@login_required
def require_login():
    """Every page here needs a signed-in user."""


def _connection_or_404(connection_id):
    return db.session.get(Connection, connection_id) or abort(404)


def _page(errors=None, values=None, status=200, editing=None):
    """The page; errors and values belong to the form of the connection being edited, else to the new one."""
    rows = db.session.execute(db.select(Connection).order_by(Connection.name)).scalars().all()
    return render_template("connections.html", connections=rows, errors=errors or {}, values=values or {},
                           editing=editing, masked_headers=connections.masked_headers), status


def _form_headers(data):
    """Read the headers textarea ("Name: value" a line; a masked value keeps the stored one) into data.

    Left empty on an edit, the stored headers stay; the remove box clears them.
    """
    text = request.form.get("extra_headers", "")
    if request.form.get("remove_headers"):
        data["extra_headers"] = {}
        return
    if not text.strip():
        return
    headers = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or name.strip() in headers:
            raise connections.ConnectionInputError({"extra_headers": "Write one header a line, as Name: value, "
                                                                     "each name once."})
        headers[name.strip()] = value.strip()
    data["extra_headers"] = headers


def _failed(exc, data, editing=None):
    db.session.rollback()
    # Messages listed in web.i18n read in the page's language; any other stays in English.
    errors = {field: _(message) for field, message in exc.errors.items()}
    # Secrets are never echoed back into the form, even after a failed save.
    values = {k: v for k, v in data.items() if k not in ("api_key", "extra_headers")}
    # Header values are secrets too: only the names come back, with their values masked.
    values["extra_headers"] = "\n".join(f"{name}: {connections.MASK}" for name in data.get("extra_headers") or {})
    return _page(errors, values, 422, editing)


@bp.get("/")
def index():
    return _page()


@bp.post("/")
@admin_required
def create():
    data = {name: request.form.get(name, "") for name in ("name", "base_url", "api_key", "default_model", "fallbacks",
                                                          *connections.LIMIT_FIELDS)}
    try:
        _form_headers(data)
        connection = connections.save_connection(data)
    except connections.ConnectionInputError as exc:
        return _failed(exc, data)
    audit("connection_created", connection_id=connection.id, name=connection.name)
    flash(_("Connection “%(name)s” saved.", name=connection.name), "success")
    return redirect(url_for("connections.index"))


@bp.post("/<int:connection_id>/edit")
@admin_required
def update(connection_id):
    """Change a connection; an empty key field keeps the stored key, unless the URL moves to another server."""
    connection = _connection_or_404(connection_id)
    data = {name: request.form.get(name, "") for name in ("name", "base_url", "default_model",
                                                          *connections.LIMIT_FIELDS)}
    if "fallbacks" in request.form:
        data["fallbacks"] = request.form["fallbacks"]
    if request.form.get("remove_key"):
        data["api_key"] = ""
    elif request.form.get("api_key", "").strip():
        data["api_key"] = request.form["api_key"]
    try:
        _form_headers(data)
        connections.save_connection(data, connection)
    except connections.ConnectionInputError as exc:
        return _failed(exc, data, editing=connection_id)
    audit("connection_updated", connection_id=connection_id, fields=sorted(data))
    flash(_("Connection “%(name)s” saved.", name=connection.name), "success")
    return redirect(url_for("connections.index"))


@bp.post("/<int:connection_id>/test")
@admin_required
def test(connection_id):
    connection = _connection_or_404(connection_id)
    result = connections.test_connection(connection)
    # Audited: the test sends the stored key to the connection's URL.
    audit("connection_tested", connection_id=connection_id, base_url=connection.base_url, ok=result["ok"])
    if not result["ok"]:
        # The endpoint's own words cannot be translated; known ones (a key that cannot be decrypted) can.
        flash(_("Connection test failed: %(error)s", error=_(result["message"])), "error")
        return redirect(url_for("connections.index"))
    # Worded here from the result's data: its message is the API's, in English.
    where = connection.base_url or _("the default endpoint")
    if result["missing_model"]:
        flash(_("Reached %(url)s: %(count)d model(s) available. The default model “%(model)s” is not among them.",
                url=where, count=result["model_count"], model=result["missing_model"]), "success")
    else:
        flash(_("Reached %(url)s: %(count)d model(s) available.", url=where, count=result["model_count"]), "success")
    return redirect(url_for("connections.index"))


@bp.post("/<int:connection_id>/delete")
@admin_required
def delete(connection_id):
    connection = _connection_or_404(connection_id)
    name = connection.name
    db.session.delete(connection)
    db.session.commit()
    audit("connection_deleted", connection_id=connection_id, name=name)
    flash(_("Connection “%(name)s” deleted; its tasks now use the default endpoint.", name=name), "success")
    return redirect(url_for("connections.index"))
