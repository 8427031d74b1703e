"""Running a task in-process through the worker's own path (promptbeat.runs.pipeline.run)."""
import time

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
