"""The file that keeps the first admin's sign-in, readable only by its owner, until the password changes."""
import os
from dataclasses import dataclass
from pathlib import Path

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


def password_changed(path, email):
    """Say "changed" in the file if it holds email's password: the one it keeps no longer signs in."""
    if not path:
        return
    sign_in = read(path)
    if sign_in is not None and sign_in.password and sign_in.email == email:
        write(path, SignIn(email, None))
