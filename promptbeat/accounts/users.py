"""Create users and change their password, role and access; the last active admin is kept."""
from dataclasses import dataclass, field

from flask import current_app

from promptbeat.accounts import sign_in_file
from promptbeat.extensions import db
from promptbeat.models import ApiToken, Role, User

MIN_PASSWORD_LENGTH = 8
# Hashing cost grows with the input: a bound keeps a huge "password" from tying up a web process.
MAX_PASSWORD_LENGTH = 1024
MAX_EMAIL_LENGTH = 255


@dataclass
class AccountError(ValueError):
    """A refused change: the form field it concerns and an English message with its parameters."""

    field: str
    message: str
    params: dict = field(default_factory=dict)

    def __str__(self):
        return self.message % self.params if self.params else self.message


def check_password(password):
    """Refuse a password that is too short, too long or not text."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError("password", "The password must be at least %(count)d characters.",
                           {"count": MIN_PASSWORD_LENGTH})
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError("password", "The password must be at most %(count)d characters.",
                           {"count": MAX_PASSWORD_LENGTH})
    # No keyboard types them, and a NUL or line break is more likely a pasting accident than a choice.
    if not password.isprintable():
        raise AccountError("password", "The password must not contain control characters or line breaks.")


def normal_email(email):
    """The stored form of an address (trimmed, lower case); AccountError when it is not one."""
    email = email.strip().lower() if isinstance(email, str) else ""
    local, at, domain = email.partition("@")
    if (not at or not local or not domain or len(email) > MAX_EMAIL_LENGTH or not email.isprintable()
            or any(char.isspace() or char in "<>\"'" for char in email)):
        raise AccountError("email", "Give an email address such as name@example.com.")
    return email


def check_role(role):
    if role not in {str(r) for r in Role}:
        raise AccountError("role", "Not a valid choice.")
    return str(role)


def find_user(email):
    """The user with this address, or None."""
    try:
        email = normal_email(email)
    except AccountError:
        return None
    return db.session.execute(db.select(User).filter_by(email=email)).scalar()


def create_user(email, password, role=Role.ADMIN, issue_token=True):
    """Create a user, with a first API token unless told not to; returns (user, plaintext token or None)."""
    email = normal_email(email)
    role = check_role(role)
    check_password(password)
    if find_user(email) is not None:
        raise AccountError("email", "A user with this email address exists.")
    user = User(email=email, role=role)
    user.set_password(password)
    db.session.add(user)
    plaintext = None
    if issue_token:
        token, plaintext = ApiToken.issue(user)
        db.session.add(token)
    db.session.commit()
    return user, plaintext


def change_password(user, current, new):
    """The user's own change: the current password is required. Sessions elsewhere end."""
    if not isinstance(current, str) or not current or not user.check_password(current):
        raise AccountError("current_password", "The current password is not right.")
    reset_password(user, new)


def reset_password(user, new):
    """Set a password without the old one (an admin or the operator); the user's sessions end."""
    check_password(new)
    user.set_password(new)
    db.session.commit()
    sign_in_file.password_changed(current_app.config["PROMPTBEAT"].admin_credentials_file, user.email)


def set_role(user, role):
    """Give the user another role; the last active admin keeps theirs."""
    role = check_role(role)
    if role != Role.ADMIN and _is_last_active_admin(user):
        raise AccountError("role", "The last active admin cannot become a viewer.")
    user.role = role
    db.session.commit()


def set_disabled(user, disabled):
    """Disable a user (sign-in, sessions and API tokens refused) or enable them again."""
    if disabled and _is_last_active_admin(user):
        raise AccountError("disabled", "The last active admin cannot be disabled.")
    user.disabled = bool(disabled)
    db.session.commit()


def _is_last_active_admin(user):
    if not user.is_admin or user.disabled:
        return False
    others = db.session.execute(
        db.select(db.func.count()).select_from(User)
        .where(User.role == str(Role.ADMIN), User.disabled.is_(False), User.id != user.id)
    ).scalar()
    return others == 0
