"""The first admin: created with a random password when there are no users, its sign-in kept in a file."""
import secrets

from promptbeat.accounts.sign_in_file import SignIn, read, write
from promptbeat.accounts.users import create_user, find_user
from promptbeat.extensions import db
from promptbeat.models import User

FIRST_ADMIN_EMAIL = "admin@localhost"


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
