"""Admin commands: `flask --app web create-admin EMAIL`, `create-user`, `set-role`, `reset-password`,
`ensure-admin`, `seed-demo`."""
import click
from flask import current_app

from promptbeat import demo
from promptbeat.accounts import first_admin, users
from promptbeat.accounts.users import AccountError, create_user
from promptbeat.llm import connections
from promptbeat.extensions import db
from promptbeat.models import Role, Task, User
from promptbeat.notify import channels
from promptbeat.scheduling.sync import reconcile
from web.security import audit


def register(app):
    """Attach the admin commands to app.cli."""

    @app.cli.command("create-admin")
    @click.argument("email")
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
    def create_admin(email, password):
        """Create an admin user; the last line printed is a new API token."""
        try:
            user, token = create_user(email, password)
        except AccountError as exc:
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
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Created {user.role} {user.email}. API token (shown once):")
        click.echo(token)

    @app.cli.command("set-role")
    @click.argument("email")
    @click.argument("role", type=click.Choice([str(r) for r in Role]))
    def set_role(email, role):
        """Give a user another role; their browser sessions end, so the new rights apply at once."""
        user = _user(email)
        _refused(users.set_role, user, role)
        audit("user_role_set", user_id=user.id, email=user.email, role=user.role)
        click.echo(f"{user.email} is now {user.role}; their sessions were ended.")

    @app.cli.command("reset-password")
    @click.argument("email")
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
    def reset_password(email, password):
        """Set a user's password without the old one (for a locked-out operator); their sessions end."""
        user = _user(email)
        _refused(users.reset_password, user, password)
        audit("password_reset", user_id=user.id, email=user.email)
        click.echo(f"Password of {user.email} changed; their sessions were ended.")

    @app.cli.command("ensure-admin")
    @click.option("--credentials-file", type=click.Path(dir_okay=False),
                  help="Keep the first admin's sign-in here (mode 0600) until the password is changed "
                       "(default: PROMPTBEAT_ADMIN_CREDENTIALS_FILE).")
    def ensure_admin(credentials_file):
        """Create admin@localhost with a random password when there are no users yet."""
        credentials_file = credentials_file or app.config["PROMPTBEAT"].admin_credentials_file
        sign_in, token = first_admin.ensure(credentials_file)
        if token is None:
            return
        click.echo(f"Created the first user: {sign_in.email}"
                   + (f" (password in {credentials_file})" if credentials_file else f" / password {sign_in.password}"))
        click.echo("API token (shown once):")
        click.echo(token)

    @app.cli.command("seed-demo")
    def seed_demo():
        """Add the demo's example tasks (once: tasks that exist by name are left as they are)."""
        created = demo.seed()
        click.echo(f"demo: {len(created)} example task(s) added" if created else "demo: example tasks already there")

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
    user = users.find_user(email)
    if user is None:
        raise click.ClickException(f"no user {email.strip().lower()}")
    return user


def _refused(change, *args):
    """Run an account change; its refusal becomes the command's error message."""
    try:
        change(*args)
    except AccountError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
