"""The account page: language, time zone, password, and API tokens created (shown once) and revoked."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user

from promptbeat.accounts import users
from promptbeat.accounts.users import AccountError
from promptbeat.extensions import db
from promptbeat.models import ApiToken
from promptbeat.scheduling.schedules import known_zone
from promptbeat.validation import CONTROL_IN_LINE
from web.i18n import LANGUAGES
from web.security import admin_required, audit, safe_next
from web.times import MAX_ZONE_LENGTH

bp = Blueprint("account", __name__, url_prefix="/account")
MAX_TOKEN_NAME = 100


def _page(new_token=None, status=200, password_errors=None, zone_error=None):
    tokens = db.session.execute(
        db.select(ApiToken).filter_by(user_id=current_user.id).order_by(ApiToken.id.desc())
    ).scalars().all()
    return render_template("account.html", tokens=tokens, new_token=new_token, password_errors=password_errors or {},
                           min_password_length=users.MIN_PASSWORD_LENGTH, zone_error=zone_error), status


@bp.get("")
def index():
    return _page()


@bp.post("/language")
def language():
    """A personal preference, so viewers may set it too; empty follows the browser."""
    choice = request.form.get("language", "")
    if choice and choice not in LANGUAGES:
        abort(400)
    current_user.language = choice or None
    db.session.commit()
    audit("language_changed", language=choice or "browser")
    return redirect(safe_next(request.form.get("next")) or url_for("account.index"))


@bp.post("/password")
def change_password():
    """Anyone may change their own password, viewers too; the current one proves it is them."""
    new, repeated = request.form.get("new_password", ""), request.form.get("repeat_password", "")
    try:
        if new != repeated:
            raise AccountError("repeat_password", "The two new passwords differ.")
        users.change_password(current_user, request.form.get("current_password", ""), new)
    except AccountError as exc:
        db.session.rollback()
        audit("password_change_refused", field=exc.field)
        return _page(status=422, password_errors={exc.field: _(exc.message, **exc.params)})
    audit("password_changed")
    # Every other session ended with the new password; this browser stays signed in under it.
    login_user(current_user._get_current_object())
    flash(_("Password changed. You were signed out everywhere else."), "success")
    return redirect(url_for("account.index"))


@bp.post("/timezone")
def timezone():
    """The zone pages show times in; a personal preference, so viewers may set it too.

    app.js sends the browser's zone once (detected=1) while the user has none; an unknown detected
    zone then reads as UTC, so the browser does not send it again on every page.
    """
    choice = request.form.get("timezone", "").strip()
    detected = request.form.get("detected") == "1"
    if detected and current_user.timezone is not None:
        return "", 204  # chosen already: a detected zone never overrides it
    if len(choice) > MAX_ZONE_LENGTH or not known_zone(choice):
        if not detected:
            return _page(status=422, zone_error=_("Unknown time zone; use an IANA name such as Europe/Berlin."))
        choice = "UTC"
    current_user.timezone = choice
    db.session.commit()
    audit("timezone_changed", timezone=choice, detected=detected)
    if detected:
        return "", 204
    flash(_("Times are now shown in %(zone)s.", zone=choice), "success")
    return redirect(url_for("account.index"))


@bp.post("/tokens")
@admin_required
def create_token():
    name = request.form.get("name", "").strip()
    # A browser sends no control character from this one-line input; PostgreSQL cannot store NUL.
    if not name or len(name) > MAX_TOKEN_NAME or CONTROL_IN_LINE.search(name):
        flash(_("Give the token a name of at most %(count)d characters.", count=MAX_TOKEN_NAME), "error")
        return _page(status=422)
    token, plaintext = ApiToken.issue(current_user, name=name)
    db.session.add(token)
    db.session.commit()
    audit("api_token_created", token_id=token.id, name=name)
    # Shown in this response only: neither the session nor the database keeps the plaintext.
    return _page(new_token=plaintext)


@bp.post("/tokens/<int:token_id>/revoke")
@admin_required
def revoke_token(token_id):
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != current_user.id:
        abort(404)
    name = token.name
    db.session.delete(token)
    db.session.commit()
    audit("api_token_revoked", token_id=token_id, name=name)
    flash(_("Token “%(name)s” revoked.", name=name), "success")
    return redirect(url_for("account.index"))
