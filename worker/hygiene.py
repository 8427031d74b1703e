"""Fork and task hygiene: no database connection crosses a fork, no session outlives a task."""
from celery.signals import task_postrun, worker_process_init

from promptbeat.extensions import db


def connect(flask_app):
    """Hook the signals for this app."""

    @worker_process_init.connect(weak=False)
    def dispose_engine_after_fork(**kwargs):
        # Connections opened by the parent before fork must not be shared with children.
        with flask_app.app_context():
            db.engine.dispose(close=False)

    @task_postrun.connect(weak=False)
    def remove_session(**kwargs):
        with flask_app.app_context():
            db.session.remove()
