"""Submitted runs belong to their batch: the worker sweep never takes them; only the batch poll ends them."""
from datetime import timedelta

from sqlalchemy import update

from promptbeat.batches import poll
from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, utcnow
from promptbeat.runs import recovery, store
from promptbeat.runs.states import RunStatus


def submitted_run(deadline_at, **values):
    task = Task(name="Batch", prompt="Say hi", model="fake-model", schedule_type="crontab", cron="0 0 1 1 *",
                timezone="UTC", enabled=False, batch=True)
    db.session.add(task)
    db.session.commit()
    run_id = store.create(task.id, Trigger.SCHEDULED, "fake-model")
    db.session.execute(update(Execution).where(Execution.id == run_id).values(
        status=RunStatus.SUBMITTED, created_at=utcnow() - timedelta(days=2), deadline_at=deadline_at, **values))
    db.session.commit()
    return run_id


def reread(run_id):
    db.session.expire_all()
    return db.session.get(Execution, run_id)


def test_the_sweep_never_marks_a_submitted_run_lost_or_sends_it_again(app):
    with app.app_context():
        # Past any worker deadline, with a claim of a runner that never lived, and no queued-message marker.
        run_id = submitted_run(utcnow() - timedelta(hours=1), runner="gone:1:ab/1", batch_id="batch_x")
        assert recovery.sweep(app.config["PROMPTBEAT"], app.extensions["celery"]) == (0, 0)
        assert (reread(run_id).status, reread(run_id).recoveries) == (RunStatus.SUBMITTED, 0)


def test_the_batch_poll_gives_up_a_run_past_its_batch_window_only(app):
    with app.app_context():
        stranded = submitted_run(utcnow() - timedelta(seconds=1))
        waiting = submitted_run(utcnow() + timedelta(hours=20), batch_id="batch_y")
        poll.poll(app.config["PROMPTBEAT"])
        lost = reread(stranded)
        assert (lost.status, lost.error_class, lost.error) == (RunStatus.LOST, "BatchLost", poll.STRANDED_MESSAGE)
        assert reread(waiting).status == RunStatus.SUBMITTED
