"""The one application factory every role builds on: config, database, migrations, Celery."""
import logging
from pathlib import Path

from flask import Flask

from promptbeat.notify import tasks as notify_tasks  # noqa: F401  (registers the task names)
from promptbeat.runs import tasks  # noqa: F401
from promptbeat.batches import tasks as batch_tasks  # noqa: F401
from promptbeat.celery_app import celery_init_app
from promptbeat.extensions import db, migrate, ping_when_idle
from promptbeat.models import render_migration_type
from promptbeat.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings=None, import_name="promptbeat", **overrides):
    """Build the core app; roles add their own parts on top. Reads the environment unless given settings.

    import_name decides where Flask looks for templates and static files (the web role passes "web").
    """
    app = Flask(import_name, instance_path=str(Path.cwd() / "instance"))
    settings = settings or Settings.from_environ()
    app.config.update(settings.flask_config())
    app.config.update(overrides)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db.init_app(app)
    with app.app_context():
        ping_when_idle(db.engine)
    migrate.init_app(app, db, directory=str(MIGRATIONS), render_item=render_migration_type)
    celery_init_app(app)
    return app
