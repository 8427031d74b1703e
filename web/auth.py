"""Sign-in for people (session cookies) and for programs (bearer API tokens)."""
import functools
from datetime import timedelta

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired

from promptbeat.extensions import db
from promptbeat.models import ApiToken, User, hash_token, utcnow
from promptbeat.scheduling.schedules import known_zone
from web.i18n import LANGUAGES
from web.security import SignInLimiterUnavailable, audit, safe_next, signin_limiter
from web.times import MAX_ZONE_LENGTH

bp = Blueprint("auth", __name__)
# last_used_at is for people to spot stale tokens; minute precision spares a write per request.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please sign in to see this page.")
csrf = CSRFProtect()
# How long to wait before trying again when sign-in cannot be checked against the limiter.
LIMITER_RETRY_AFTER_SECONDS = 30
# Endpoints anyone may reach. The API checks its bearer tokens itself, and /metrics its own
# optional token (PROMPTBEAT_METRICS_TOKEN) or is switched off (PROMPTBEAT_METRICS=false).
PUBLIC_ENDPOINTS = {"auth.login", "auth.language", "static", "ops.healthz", "ops.metrics", "ops.favicon"}


@login_manager.user_loader
def load_user(session_user_id):
    """The session's user while its session version is current; None signs the session out."""
    if g.get("database_unavailable"):
        return None  # the error page for a lost database shows no user rather than fail again
    user_id, _, version = session_user_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.disabled or user.session_version != int(version):
        return None
    return user


def require_sign_in():
    """Every page needs a signed-in user, except sign-in, health, metrics and static files."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.blueprint == "api" or request.endpoint is None:
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    return None


class LoginForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired()])
    password = PasswordField(_l("Password"), validators=[DataRequired()])
    # The browser's zone, filled in by app.js: the first page after sign-in is then in the user's time.
    timezone = HiddenField(render_kw={"data-browser-zone": ""})


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    limiter = signin_limiter()
    if form.is_submitted():
        try:
            blocked = limiter.blocked(request.remote_addr)
        except SignInLimiterUnavailable:
            # Failing closed: without the count, unlimited password guessing would be possible.
            flash(_("Sign-in is unavailable because its rate limit cannot be checked (Redis is not "
                    "answering). Try again in a minute."), "error")
            return render_template("login.html", form=form), 503, {"Retry-After": str(LIMITER_RETRY_AFTER_SECONDS)}
        if blocked:
            flash(_("Too many failed sign-ins from your address. Wait a few minutes and try again."), "error")
            return render_template("login.html", form=form), 429
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        # No address holds a control character, and PostgreSQL refuses to compare text holding NUL.
        user = db.session.execute(db.select(User).filter_by(email=email)).scalar() if email.isprintable() else None
        if user and user.check_password(form.password.data) and user.disabled:
            # Said only to whoever knows the password: it tells them whom to ask.
            audit("sign_in_refused_disabled", email=email)
            flash(_("This account is disabled. Ask an admin to enable it."), "error")
            return render_template("login.html", form=form), 403
        if user and user.check_password(form.password.data):
            target = safe_next(request.args.get("next")) or url_for("tasks.index")
            # A new session on sign-in: nothing set before it (by whoever handed over the cookie) carries
            # on, except the language chosen on this page, checked again.
            language = session.get("language")
            session.clear()
            if language in LANGUAGES:
                session["language"] = language
            login_user(user)
            audit("sign_in")
            _keep_browser_zone(user, form.timezone.data)
            return redirect(target)
        limiter.failed(request.remote_addr)
        audit("sign_in_failed", email=email)
        flash(_("Wrong email or password."), "error")
    return render_template("login.html", form=form)


def _keep_browser_zone(user, zone):
    """Take the zone the browser sent with the sign-in while the user has none; anything else is ignored."""
    if user.timezone is not None or not zone or len(zone) > MAX_ZONE_LENGTH or not known_zone(zone):
        return
    user.timezone = zone
    db.session.commit()
    audit("timezone_changed", timezone=zone, detected=True)


@bp.post("/language")
def language():
    """The sign-in page's language menu: kept in the session, as there is no user yet to keep it."""
    choice = request.form.get("language", "")
    if choice and choice not in LANGUAGES:
        abort(400)
    if choice:
        session["language"] = choice
    else:
        session.pop("language", None)
    return redirect(safe_next(request.form.get("next")) or url_for("auth.login"))


@bp.post("/logout")
def logout():
    """Sign out: this user's sessions end in every browser, so a copied cookie stops working too."""
    audit("sign_out")
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


def token_required(view):
    """Require `Authorization: Bearer <token>`; answers 401 JSON otherwise."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("Send an API token: Authorization: Bearer <token>.")
        row = db.session.execute(db.select(ApiToken).filter_by(token_hash=hash_token(token.strip()))).scalar()
        if row is None:
            return _unauthorized("The API token is not valid.")
        if row.user.disabled:
            return _unauthorized("The API token's user is disabled.")
        if row.last_used_at is None or utcnow() - row.last_used_at > TOKEN_TOUCH_INTERVAL:
            row.last_used_at = utcnow()
            db.session.commit()
        g.api_user = row.user
        return view(*args, **kwargs)

    return wrapper


def _unauthorized(message):
    response = jsonify(error="unauthorized", message=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="promptbeat"'
    return response
