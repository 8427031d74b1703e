"""The first admin's sign-in, kept in a file only its owner can read until the password is changed."""
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from promptbeat.accounts.users import create_user, find_user
from promptbeat.extensions import db
from promptbeat.models import User

FIRST_ADMIN_EMAIL = "admin@localhost"
CHANGED = "changed"


@dataclass(frozen=True)
class SignIn:
    """What the credentials file says: the address, and the password or None once it was changed."""

    email: str
    password: str | None


def write(path, sign_in):
    """Write the file with mode 0600, replacing any earlier one."""
    path = Path(path)
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"email: {sign_in.email}\npassword: {sign_in.password or CHANGED}\n")
    os.replace(temporary, path)


def read(path):
    """The file's SignIn, or None when there is no readable file."""
    try:
        lines = dict(line.split(": ", 1) for line in Path(path).read_text().splitlines() if ": " in line)
    except OSError:
        return None
    if "email" not in lines or "password" not in lines:
        return None
    password = lines["password"]
    return SignIn(lines["email"], None if password == CHANGED else password)


def ensure(path=None):
    """Create the first admin with a random password when there are no users; keep the file current.

    Returns (SignIn or None, the first API token or None). When the stored password no longer signs
    in (it was changed or reset), the file is rewritten to say so rather than keep a stale password.
    """
    if db.session.execute(db.select(User.id).limit(1)).first() is None:
        password = secrets.token_urlsafe(12)
        user, token = create_user(FIRST_ADMIN_EMAIL, password)
        sign_in = SignIn(user.email, password)
        if path:
            write(path, sign_in)
        return sign_in, token
    sign_in = read(path) if path else None
    if sign_in and sign_in.password:
        user = find_user(sign_in.email)
        if user is None or not user.check_password(sign_in.password):
            sign_in = SignIn(sign_in.email, None)
            write(path, sign_in)
    return sign_in, None
