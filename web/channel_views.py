"""The channels page: list, add, edit and delete where runs are delivered. Secrets are write-only."""
import re

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required

from promptbeat.extensions import db
from promptbeat.models import Channel
from promptbeat.notify import channels
from web.security import admin_required, audit

bp = Blueprint("channels", __name__, url_prefix="/channels")
# Recipients as typed in the form: one per line, or separated by commas or spaces.
SEPARATORS = re.compile(r"[,\s]+")


@bp.before_request
@login_required
def require_login():
    """Every page here needs a signed-in user."""


def _channel_or_404(channel_id):
    return db.session.get(Channel, channel_id) or abort(404)


def _page(errors=None, values=None, status=200, editing=None, revealed=None):
    """The page; errors and values belong to the form of the channel being edited, else to the new one."""
    rows = db.session.execute(db.select(Channel).order_by(Channel.name)).scalars().all()
    return render_template("channels.html", channels=rows, errors=errors or {}, values=values or {},
                           editing=editing, revealed=revealed), status


def _failed(exc, data, editing=None):
    db.session.rollback()
    # Messages listed in web.i18n read in the page's language; any other stays in English.
    errors = {field: _(message) for field, message in exc.errors.items()}
    shown = {k: v for k, v in data.items() if k != "secret"}
    if isinstance(shown.get("to"), list):
        shown["to"] = "\n".join(shown["to"])
    return _page(errors, shown, 422, editing)


def _recipients(text):
    return [address for address in SEPARATORS.split(text or "") if address]


def _form_data(kind):
    data = {"name": request.form.get("name", "")}
    if kind == "email":
        data["to"] = _recipients(request.form.get("to"))
    else:
        data["url"] = request.form.get("url", "")
    return data


@bp.get("/")
def index():
    return _page()


@bp.post("/")
@admin_required
def create():
    kind = request.form.get("kind", "")
    data = {**_form_data(kind), "kind": kind}
    if kind == "webhook" and request.form.get("secret", "").strip():
        data["secret"] = request.form["secret"].strip()
    try:
        channel, revealed = channels.save_channel(data)
    except channels.ChannelInputError as exc:
        return _failed(exc, data)
    audit("channel_created", channel_id=channel.id, name=channel.name, kind=channel.kind)
    flash(_("Channel “%(name)s” saved.", name=channel.name), "success")
    if revealed:
        # Shown in this answer only: never stored in the session or shown again.
        return _page(revealed={"channel_id": channel.id, "secret": revealed})
    return redirect(url_for("channels.index"))


@bp.post("/<int:channel_id>/edit")
@admin_required
def update(channel_id):
    """Change a channel's name, URL or recipients; "new secret" makes a new signing secret, shown once."""
    channel = _channel_or_404(channel_id)
    data = _form_data(channel.kind)
    if channel.kind == "webhook" and request.form.get("new_secret"):
        data["secret"] = ""
    try:
        channel, revealed = channels.save_channel(data, channel)
    except channels.ChannelInputError as exc:
        return _failed(exc, data, editing=channel_id)
    audit("channel_updated", channel_id=channel_id, fields=sorted(data))
    flash(_("Channel “%(name)s” saved.", name=channel.name), "success")
    if revealed:
        return _page(revealed={"channel_id": channel.id, "secret": revealed})
    return redirect(url_for("channels.index"))


@bp.post("/<int:channel_id>/delete")
@admin_required
def delete(channel_id):
    channel = _channel_or_404(channel_id)
    name = channel.name
    db.session.delete(channel)
    db.session.commit()
    audit("channel_deleted", channel_id=channel_id, name=name)
    flash(_("Channel “%(name)s” deleted; its past deliveries stay on their runs.", name=name), "success")
    return redirect(url_for("channels.index"))
