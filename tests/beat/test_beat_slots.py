"""Beat fires slots: the misfire rule, phase kept through a fire, no second fire of a slot, and the lock."""
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from beat.scheduler import LockLost, PromptbeatScheduler
from promptbeat.scheduling.entries import TaskEntry, build_entry, entry_key
from promptbeat.extensions import db
from promptbeat.models import ScheduleType, Task
from promptbeat.scheduling.sync import reconcile


def now():
    return datetime.now(timezone.utc)


@pytest.fixture
def celery_app(app):
    return app.extensions["celery"]


@pytest.fixture
def scheduler(celery_app, monkeypatch):
    """A scheduler whose publishes are recorded instead of sent: [(task_id, slot, catch_up)]."""
    beat = PromptbeatScheduler(celery_app, lazy=True)
    sent = []
    monkeypatch.setattr(beat, "send_task", lambda name, args, kwargs, **options: sent.append(
        (args[0], datetime.fromisoformat(kwargs["slot"]), kwargs["catch_up"])))
    monkeypatch.setattr(PromptbeatScheduler, "producer", None)
    beat.sent = sent
    yield beat


def add_task(app, celery_app, last_run_at, **values):
    values = {"name": "t", "prompt": "p", "model": "fake-model", "schedule_type": ScheduleType.INTERVAL,
              "interval_seconds": 60, **values}
    with app.app_context():
        task = Task(**values, anchor_at=last_run_at)
        db.session.add(task)
        db.session.commit()
        build_entry(celery_app, task, last_run_at=last_run_at).save(reset_phase=True)
        db.session.expunge(task)
        return task


def stored_last_run(celery_app, task_id):
    return TaskEntry.from_key(entry_key(celery_app, task_id), app=celery_app).last_run_at


def test_missed_interval_slots_fire_once_as_catch_up_and_keep_phase(app, celery_app, scheduler):
    last = now().replace(microsecond=0) - timedelta(seconds=150)
    task = add_task(app, celery_app, last)
    with app.app_context():
        scheduler.fire_due()
        scheduler.fire_due()
    # Two slots were missed (last+60, last+120); one run stands for both, marked catch-up.
    assert scheduler.sent == [(task.id, last + timedelta(seconds=120), True)]
    assert stored_last_run(celery_app, task.id) == last + timedelta(seconds=120)


def test_a_slot_fired_on_time_is_not_a_catch_up(app, celery_app, scheduler):
    last = now() - timedelta(seconds=61)
    task = add_task(app, celery_app, last)
    with app.app_context():
        scheduler.fire_due()
    assert scheduler.sent == [(task.id, last + timedelta(seconds=60), False)]


@pytest.mark.parametrize(("grace", "late", "catch_up"), [(60, 40, False), (5, 10, True)])
def test_the_misfire_grace_setting_decides_what_is_a_catch_up(app, celery_app, scheduler, monkeypatch, grace, late,
                                                              catch_up):
    # PROMPTBEAT_MISFIRE_GRACE_SECONDS, not the default 15 s: 40 s late is on time under a minute's
    # grace, 10 s late is a catch-up under 5 s.
    monkeypatch.setitem(app.config, "PROMPTBEAT",
                        dataclasses.replace(app.config["PROMPTBEAT"], misfire_grace_seconds=grace))
    last = now() - timedelta(seconds=60 + late)
    task = add_task(app, celery_app, last)
    with app.app_context():
        scheduler.fire_due()
    assert scheduler.sent == [(task.id, last + timedelta(seconds=60), catch_up)]


def test_missed_slot_beyond_the_catch_up_window_waits_for_the_next_slot(app, celery_app, scheduler):
    # A daily task whose newest missed slot is 3 hours old: past the default one-hour window.
    last = now() - timedelta(days=2, hours=3)
    task = add_task(app, celery_app, last, interval_seconds=86400)
    with app.app_context():
        scheduler.fire_due()
    assert scheduler.sent == []
    # The entry moved on in phase: its next slot is one interval after the missed one.
    assert stored_last_run(celery_app, task.id) == last + timedelta(days=2)


def test_catch_up_window_is_per_task(app, celery_app, scheduler):
    last = now() - timedelta(days=2, hours=3)
    task = add_task(app, celery_app, last, interval_seconds=86400, catchup_seconds=4 * 3600)
    with app.app_context():
        scheduler.fire_due()
    assert scheduler.sent == [(task.id, last + timedelta(days=2), True)]


def test_cron_after_downtime_fires_newest_slot_once(app, celery_app, scheduler):
    task = add_task(app, celery_app, now() - timedelta(hours=2), schedule_type=ScheduleType.CRONTAB,
                    interval_seconds=None, cron="* * * * *", timezone="Europe/Berlin")
    with app.app_context():
        scheduler.fire_due()
        scheduler.fire_due()
    (fired,) = scheduler.sent
    assert fired[1] == now().replace(second=0, microsecond=0) or fired[1] == (
        now().replace(second=0, microsecond=0) - timedelta(minutes=1))


def test_reconcile_racing_a_fire_does_not_bring_the_slot_back(app, celery_app, scheduler):
    last = now() - timedelta(seconds=70)
    task = add_task(app, celery_app, last)
    with app.app_context():
        scheduler.fire_due()
        # The worker has not yet recorded the run: the database still holds the older phase.
        stale = db.session.get(Task, task.id)
        assert stale.anchor_at < scheduler.sent[0][1]
        reconcile(celery_app, [stale])
        scheduler.fire_due()
    assert len(scheduler.sent) == 1


def test_lock_lost_to_a_flush_is_taken_again(app, celery_app, scheduler, redis_client):
    token = b"mine"
    scheduler.lock = redis_client.lock(scheduler.lock_key, timeout=30)
    scheduler.lock.local.token = token
    redis_client.delete(scheduler.lock_key)  # what FLUSHALL does
    scheduler.keep_lock()
    assert redis_client.get(scheduler.lock_key) == "mine"


def test_a_stalled_beat_whose_lock_was_taken_stops(app, celery_app, scheduler, redis_client):
    scheduler.lock = redis_client.lock(scheduler.lock_key, timeout=30)
    scheduler.lock.local.token = b"stalled"
    redis_client.set(scheduler.lock_key, "the-other-beat", ex=30)
    with pytest.raises(LockLost):
        scheduler.keep_lock()
    assert redis_client.get(scheduler.lock_key) == "the-other-beat"
    redis_client.delete(scheduler.lock_key)


def test_resuming_a_paused_cron_task_fires_no_burst(app, api, celery_app, scheduler):
    body = {"name": "n", "prompt": "p", "schedule_type": "crontab", "cron": "* * * * *"}
    task_id = api.post("/tasks", json=body).get_json()["id"]
    assert api.post(f"/tasks/{task_id}/pause", json={"note": "holiday"}).get_json()["pause_note"] == "holiday"
    with app.app_context():
        task = db.session.get(Task, task_id)
        task.anchor_at = now() - timedelta(days=3)  # paused for days
        db.session.commit()
    resumed = api.post(f"/tasks/{task_id}/resume").get_json()
    assert (resumed["status"], resumed["pause_note"]) == ("active", None)
    with app.app_context():
        scheduler.fire_due()
    assert scheduler.sent == []
    assert stored_last_run(celery_app, task_id) > now() - timedelta(minutes=1)
