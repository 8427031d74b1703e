"""Celery bound to the Flask app, so every task runs inside an application context."""
from celery import Celery, Task


def celery_init_app(flask_app):
    """Build the Celery app from flask_app.config["CELERY"] and store it in app.extensions."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(flask_app.name, task_cls=FlaskTask)
    celery_app.config_from_object(flask_app.config["CELERY"])
    celery_app.set_default()
    # The beat scheduler needs the database; it reaches the Flask app through here.
    celery_app.flask_app = flask_app
    flask_app.extensions["celery"] = celery_app
    return celery_app
