"""Admin commands: `flask --app web create-admin EMAIL`, `create-user`, `set-role`, `set-password`, `ensure-admin`."""
import secrets

import click
from flask import current_app

from promptbeat.llm import connections
from promptbeat.extensions import db
from promptbeat.models import Role, Task, User
from promptbeat.notify import channels
from promptbeat.scheduling.sync import reconcile
from web.auth import MIN_PASSWORD_LENGTH, create_user


def register(app):
    """Attach the admin commands to app.cli."""

    @app.cli.command("create-admin")
    @click.argument("email")
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
    def create_admin(email, password):
        """Create an admin user; the last line printed is a new API token."""
        try:
            user, token = create_user(email, password)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Created admin {user.email}. API token (shown once):")
        click.echo(token)

    @app.cli.command("create-user")
    @click.argument("email")
    @click.option("--role", type=click.Choice([str(r) for r in Role]), default=str(Role.VIEWER), show_default=True)
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
    def create_user_command(email, role, password):
        """Create a user with a role (viewers can look but not change); the last line is an API token."""
        try:
            user, token = create_user(email, password, role=role)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Created {user.role} {user.email}. API token (shown once):")
        click.echo(token)

    @app.cli.command("set-role")
    @click.argument("email")
    @click.argument("role", type=click.Choice([str(r) for r in Role]))
    def set_role(email, role):
        """Give a user another role; their browser sessions end, so the new rights apply at once."""
        user = _user(email)
        user.role = role
        db.session.commit()
        click.echo(f"{user.email} is now {user.role}; their sessions were ended.")

    @app.cli.command("set-password")
    @click.argument("email")
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
    def set_password(email, password):
        """Set a user's password; their browser sessions end."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise click.ClickException(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
        user = _user(email)
        user.set_password(password)
        db.session.commit()
        click.echo(f"Password of {user.email} changed; their sessions were ended.")

    @app.cli.command("ensure-admin")
    def ensure_admin():
        """Create admin@localhost with a random password when there are no users yet."""
        if db.session.execute(db.select(User.id).limit(1)).first():
            return
        password = secrets.token_urlsafe(12)
        user, token = create_user("admin@localhost", password)
        click.echo(f"Created the first user: {user.email} / password {password}")
        click.echo("API token (shown once):")
        click.echo(token)

    @app.cli.command("reconcile")
    def reconcile_command():
        """Rewrite beat's entries in Redis from the database (beat also does this by itself)."""
        tasks = db.session.execute(db.select(Task)).scalars().all()
        result = reconcile(current_app.extensions["celery"], tasks)
        click.echo(f"added {result.added}, updated {result.updated}, removed {result.removed}, unchanged {result.unchanged}")

    @app.cli.command("rotate-keys")
    def rotate_keys_command():
        """Re-encrypt every stored API key and channel signing secret under the first PROMPTBEAT_FERNET_KEYS key."""
        click.echo(f"re-encrypted {connections.rotate_keys()} API key(s) under the first key")
        click.echo(f"re-encrypted {channels.rotate_secrets()} channel secret(s) under the first key")


def _user(email):
    user = db.session.execute(db.select(User).filter_by(email=email.strip().lower())).scalar()
    if user is None:
        raise click.ClickException(f"no user {email.strip().lower()}")
    return user
