"""The users page, for admins: create users, set their role, disable or enable them, reset a password."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from promptbeat.accounts import users
from promptbeat.accounts.users import AccountError
from promptbeat.extensions import db
from promptbeat.models import Role, User
from web.api_models import MAX_ID
from web.security import admin_required, audit

bp = Blueprint("users", __name__, url_prefix="/users")


@bp.before_request
@admin_required
def require_admin():
    """Viewers may not see who else has access, nor change it."""


def _user_or_404(user_id):
    # Ids beyond the column's range cannot exist; asking the database would be an overflow error.
    return (db.session.get(User, user_id) if user_id <= MAX_ID else None) or abort(404)


def _page(errors=None, values=None, status=200, editing=None):
    """The page; errors and values belong to the user being changed (editing), else to the new-user form."""
    rows = db.session.execute(db.select(User).order_by(User.email)).scalars().all()
    return render_template("users.html", users=rows, roles=[str(role) for role in Role], errors=errors or {},
                           values=values or {}, editing=editing, min_password_length=users.MIN_PASSWORD_LENGTH), status


def _refused(exc, values=None, editing=None):
    db.session.rollback()
    return _page({exc.field: _(exc.message, **exc.params)}, values, 422, editing)


@bp.get("/")
def index():
    return _page()


@bp.post("/")
def create():
    values = {name: request.form.get(name, "") for name in ("email", "role")}
    try:
        # No token: one shown to the admin would be a credential of someone else; admins make their own.
        user, _token = users.create_user(values["email"], request.form.get("password", ""), values["role"],
                                         issue_token=False)
    except AccountError as exc:
        return _refused(exc, values)
    audit("user_created", user_id=user.id, email=user.email, role=user.role)
    flash(_("User %(email)s created.", email=user.email), "success")
    return redirect(url_for("users.index"))


@bp.post("/<int:user_id>/role")
def set_role(user_id):
    user = _user_or_404(user_id)
    try:
        users.set_role(user, request.form.get("role", ""))
    except AccountError as exc:
        return _refused(exc, editing=user_id)
    audit("user_role_set", user_id=user.id, email=user.email, role=user.role)
    flash(_("%(email)s is now %(role)s.", email=user.email, role=_(user.role)), "success")
    return redirect(url_for("users.index"))


@bp.post("/<int:user_id>/disable")
def disable(user_id):
    return _set_disabled(user_id, True)


@bp.post("/<int:user_id>/enable")
def enable(user_id):
    return _set_disabled(user_id, False)


def _set_disabled(user_id, disabled):
    user = _user_or_404(user_id)
    try:
        users.set_disabled(user, disabled)
    except AccountError as exc:
        return _refused(exc, editing=user_id)
    audit("user_disabled" if disabled else "user_enabled", user_id=user.id, email=user.email)
    flash(_("%(email)s is disabled: they cannot sign in or use their API tokens.", email=user.email) if disabled
          else _("%(email)s is enabled again.", email=user.email), "success")
    return redirect(url_for("users.index"))


@bp.post("/<int:user_id>/password")
def reset_password(user_id):
    user = _user_or_404(user_id)
    try:
        users.reset_password(user, request.form.get("password", ""))
    except AccountError as exc:
        return _refused(exc, editing=user_id)
    audit("password_reset", user_id=user.id, email=user.email)
    flash(_("New password set for %(email)s; their sessions ended. Tell them the password another way.",
            email=user.email), "success")
    return redirect(url_for("users.index"))
