"""In-process helpers: a task run through the worker's own path (promptbeat.runs.pipeline.run), a second web app."""
import time
from contextlib import contextmanager

import celery
from flask import current_app

from promptbeat.extensions import db
from promptbeat.models import Execution, Trigger
from promptbeat.runs import pipeline
from promptbeat.runs.plan import RunRequest


def run_and_reload(task_id, trigger=Trigger.SCHEDULED, sleep=time.sleep, **message):
    """Run a task as a worker would, from a message's arguments, inside an app context; returns its
    Execution as recorded, or None when there is no run."""
    run_id = pipeline.run(RunRequest.from_message(task_id, trigger, **message), current_app.config["PROMPTBEAT"],
                          sleep=sleep)
    if run_id is None:
        return None
    db.session.expire_all()
    return db.session.get(Execution, run_id)


@contextmanager
def separate_web_app(settings):
    """A second web app in this process; the Celery app current before it is current again after."""
    from web import create_app

    previous = celery.current_app._get_current_object()
    flask_app = create_app(settings)
    try:
        yield flask_app
    finally:
        with flask_app.app_context():
            db.engine.dispose()
        previous.set_current()
        previous.set_default()
