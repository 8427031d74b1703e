"""Schedule sync against fakeredis: entry names and contents, reconcile's four cases, and rows beat cannot use."""
import json
import logging
import time
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
from celery import Celery
from redbeat.schedulers import get_redis

from beat.scheduler import PromptbeatScheduler
from promptbeat.scheduling.entries import EXECUTE_TASK, TaskEntry, build_entry, entry_key
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from promptbeat.scheduling.schedules import TaskSchedule
from promptbeat.settings import Settings, celery_config
from promptbeat.scheduling.sync import ReconcileResult, reconcile, remove_entry, sync_task, write_entry
from tests.runner import separate_web_app
from tests.services import free_port

SCHEDULE_KEY = "promptbeat::schedule"


@pytest.fixture
def beat_app():
    """A Celery app with the project's RedBeat settings, its Redis replaced by fakeredis."""
    celery_app = Celery("promptbeat-sync-test", set_as_current=False)
    celery_app.config_from_object(celery_config(Settings(secret_key="test")))
    celery_app.redbeat_redis = fakeredis.FakeRedis(decode_responses=True)
    yield celery_app
    celery_app.redbeat_redis.close()


@pytest.fixture
def redis(beat_app):
    return beat_app.redbeat_redis


def now():
    return datetime.now(timezone.utc)


def make_task(task_id, kind="interval", enabled=True, anchor_at=None, **fields):
    defaults = {
        "interval": {"interval_seconds": 300},
        "fixed_time": {"fixed_time": "09:00", "timezone": "Asia/Shanghai"},
        "crontab": {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"},
    }[kind]
    values = {"name": f"task {task_id}", "prompt": "p", "model": "fake-model", "timezone": "UTC",
              **defaults, **fields}
    return Task(id=task_id, schedule_type=kind, enabled=enabled, anchor_at=anchor_at, **values)


def meta_last_run(redis, key):
    raw = json.loads(redis.hget(key, "meta"))["last_run_at"]
    return datetime(raw["year"], raw["month"], raw["day"], raw["hour"], raw["minute"], raw["second"],
                    raw["microsecond"], tzinfo=timezone.utc)


def simulate_beat_fire(beat_app, task_id, fired_at):
    """Record a fire the way RedBeat does: new last_run_at in meta, new score in the zset."""
    entry = TaskEntry.from_key(entry_key(beat_app, task_id), app=beat_app)
    entry.next(last_run_at=fired_at)


def snapshot(redis):
    """Every key's value, to compare Redis before and after."""
    state = {}
    for key in sorted(redis.keys("*")):
        kind = redis.type(key)
        if kind == "hash":
            state[key] = redis.hgetall(key)
        elif kind == "zset":
            state[key] = redis.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = redis.get(key)
    return state


def test_entry_name_is_deterministic(beat_app, redis):
    task = make_task(42)
    assert entry_key(beat_app, 42) == "promptbeat:task:42"
    write_entry(beat_app, task, reset_phase=True)
    write_entry(beat_app, task, reset_phase=True)
    assert redis.keys("promptbeat:task:*") == ["promptbeat:task:42"]
    assert redis.zrange(SCHEDULE_KEY, 0, -1) == ["promptbeat:task:42"]


def test_interval_entry_has_an_interval_schedule(beat_app):
    write_entry(beat_app, make_task(7, interval_seconds=90), reset_phase=True)
    entry = TaskEntry.from_key("promptbeat:task:7", app=beat_app)
    assert entry.schedule == TaskSchedule("interval", every=90)
    assert entry.task == EXECUTE_TASK
    assert entry.args == [7]
    assert entry.kwargs == {"trigger": "scheduled"}


@pytest.mark.parametrize("kind, expression, zone", [
    ("fixed_time", "0 9 * * *", "Asia/Shanghai"),
    ("crontab", "0 9 * * 1-5", "Europe/Berlin"),
])
def test_cron_entries_keep_their_time_zone(beat_app, kind, expression, zone):
    write_entry(beat_app, make_task(3, kind), reset_phase=False)
    entry = TaskEntry.from_key("promptbeat:task:3", app=beat_app)
    assert isinstance(entry.schedule, TaskSchedule)
    assert (entry.schedule.expr, entry.schedule.tz_name) == (expression, zone)


def test_cron_entry_score_is_the_next_fire_in_its_zone(beat_app, redis):
    write_entry(beat_app, make_task(3, "fixed_time"), reset_phase=True)
    expected = TaskSchedule("cron", expr="0 9 * * *", tz="Asia/Shanghai").cron.next_after(now())
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:3") == pytest.approx(expected.timestamp(), abs=2)


def test_write_entry_with_reset_phase_fires_one_interval_from_now(beat_app, redis):
    task = make_task(5, interval_seconds=600, anchor_at=now() - timedelta(hours=5))
    write_entry(beat_app, task, reset_phase=True)
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:5") == pytest.approx(time.time() + 600, abs=2)
    assert meta_last_run(redis, "promptbeat:task:5") == pytest.approx(now(), abs=timedelta(seconds=2))


def test_write_entry_without_reset_keeps_what_beat_recorded(beat_app, redis):
    write_entry(beat_app, make_task(5, "crontab"), reset_phase=True)
    simulate_beat_fire(beat_app, 5, now() - timedelta(seconds=100))
    meta = redis.hget("promptbeat:task:5", "meta")

    write_entry(beat_app, make_task(5, "crontab", cron="30 8 * * *"), reset_phase=False)
    assert redis.hget("promptbeat:task:5", "meta") == meta
    schedule = TaskSchedule("cron", expr="30 8 * * *", tz="Europe/Berlin")
    assert TaskEntry.from_key("promptbeat:task:5", app=beat_app).schedule == schedule
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:5") == pytest.approx(schedule.cron.next_after(now()).timestamp(), abs=2)


def test_remove_entry(beat_app, redis):
    write_entry(beat_app, make_task(5), reset_phase=True)
    remove_entry(beat_app, 5)
    assert not redis.exists("promptbeat:task:5")
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:5") is None


def test_sync_task_writes_enabled_and_removes_disabled(beat_app, redis):
    assert sync_task(beat_app, make_task(8), reset_phase=True) is True
    assert redis.exists("promptbeat:task:8")
    assert sync_task(beat_app, make_task(8, enabled=False), reset_phase=True) is True
    assert not redis.exists("promptbeat:task:8")
    assert redis.zcard(SCHEDULE_KEY) == 0


def test_reconcile_restores_a_missing_entry_in_phase_with_the_anchor(beat_app, redis):
    anchor = now() - timedelta(seconds=100)
    result = reconcile(beat_app, [make_task(1, interval_seconds=300, anchor_at=anchor)])
    assert result == ReconcileResult(added=1)
    # Neither due at once nor a whole interval from now: 300 s after the anchor.
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:1") == pytest.approx(anchor.timestamp() + 300, abs=2)
    assert meta_last_run(redis, "promptbeat:task:1") == anchor
    assert TaskEntry.from_key("promptbeat:task:1", app=beat_app).schedule.run_every == timedelta(seconds=300)


def test_reconcile_restores_a_missing_cron_entry_with_its_zone(beat_app, redis):
    result = reconcile(beat_app, [make_task(2, "crontab", anchor_at=now())])
    assert result == ReconcileResult(added=1)
    assert TaskEntry.from_key("promptbeat:task:2", app=beat_app).schedule == TaskSchedule("cron", expr="0 9 * * 1-5", tz="Europe/Berlin")
    expected = TaskSchedule("cron", expr="0 9 * * 1-5", tz="Europe/Berlin").cron.next_after(now())
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:2") == pytest.approx(expected.timestamp(), abs=2)


def test_reconcile_leaves_an_unchanged_entry_and_its_meta_alone(beat_app, redis):
    task = make_task(1, interval_seconds=300, anchor_at=now() - timedelta(seconds=250))
    write_entry(beat_app, task, reset_phase=True)
    # Beat fired after the anchor was saved; Redis knows, the database does not yet.
    simulate_beat_fire(beat_app, 1, now() - timedelta(seconds=30))
    before = snapshot(redis)

    assert reconcile(beat_app, [task]) == ReconcileResult(unchanged=1)
    assert snapshot(redis) == before
    assert json.loads(redis.hget("promptbeat:task:1", "meta"))["total_run_count"] == 1


def test_reconcile_rewrites_a_modified_entry_keeping_its_phase(beat_app, redis):
    anchor = now() - timedelta(seconds=250)
    write_entry(beat_app, make_task(1, interval_seconds=300, anchor_at=anchor), reset_phase=True)
    fired = now() - timedelta(seconds=30)
    simulate_beat_fire(beat_app, 1, fired)

    result = reconcile(beat_app, [make_task(1, interval_seconds=600, anchor_at=anchor)])
    assert result == ReconcileResult(updated=1)
    entry = TaskEntry.from_key("promptbeat:task:1", app=beat_app)
    assert entry.schedule.run_every == timedelta(seconds=600)
    assert meta_last_run(redis, "promptbeat:task:1") == pytest.approx(fired, abs=timedelta(milliseconds=1))
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:1") == pytest.approx(fired.timestamp() + 600, abs=2)


def test_reconcile_rewrites_a_cron_entry_whose_zone_changed(beat_app):
    write_entry(beat_app, make_task(2, "crontab"), reset_phase=True)
    result = reconcile(beat_app, [make_task(2, "crontab", timezone="America/New_York", anchor_at=now())])
    assert result == ReconcileResult(updated=1)
    schedule = TaskEntry.from_key("promptbeat:task:2", app=beat_app).schedule
    assert schedule == TaskSchedule("cron", expr="0 9 * * 1-5", tz="America/New_York")


def test_reconcile_puts_back_an_entry_missing_from_the_schedule(beat_app, redis):
    write_entry(beat_app, make_task(1), reset_phase=True)
    redis.zrem(SCHEDULE_KEY, "promptbeat:task:1")
    assert reconcile(beat_app, [make_task(1, anchor_at=now())]) == ReconcileResult(updated=1)
    assert redis.zscore(SCHEDULE_KEY, "promptbeat:task:1") is not None


def test_reconcile_drops_entries_of_deleted_and_disabled_tasks(beat_app, redis):
    for task_id in (1, 2, 3):
        write_entry(beat_app, make_task(task_id), reset_phase=True)
    # An entry left only in the schedule, and keys that are not task entries at all.
    redis.zadd(SCHEDULE_KEY, {"promptbeat:task:9": 1})
    redis.zadd(SCHEDULE_KEY, {"promptbeat:someone-elses-entry": 1})
    redis.hset("promptbeat:someone-elses-entry", "definition", "{}")
    redis.set("promptbeat::lock", "token")
    redis.hset("otherapp:task:1", "definition", "{}")

    # Task 1 was deleted (not in the list); task 2 is disabled.
    tasks = [make_task(2, enabled=False), make_task(3, anchor_at=now())]
    assert reconcile(beat_app, tasks) == ReconcileResult(removed=3, unchanged=1)

    assert redis.keys("promptbeat:task:*") == ["promptbeat:task:3"]
    assert redis.zrange(SCHEDULE_KEY, 0, -1) == ["promptbeat:someone-elses-entry", "promptbeat:task:3"]
    assert redis.exists("promptbeat:someone-elses-entry", "promptbeat::lock", "otherapp:task:1") == 3


def test_reconcile_is_idempotent(beat_app, redis):
    write_entry(beat_app, make_task(1), reset_phase=True)
    write_entry(beat_app, make_task(2, "crontab"), reset_phase=True)
    write_entry(beat_app, make_task(4), reset_phase=True)
    tasks = [
        make_task(1, interval_seconds=900, anchor_at=now()),  # modified
        make_task(2, "crontab", anchor_at=now()),  # unchanged
        make_task(3, "fixed_time", anchor_at=now()),  # new
        make_task(4, enabled=False),  # removed
    ]
    assert reconcile(beat_app, tasks) == ReconcileResult(added=1, updated=1, removed=1, unchanged=1)
    after_first = snapshot(redis)

    assert reconcile(beat_app, tasks) == ReconcileResult(unchanged=3)
    assert snapshot(redis) == after_first


def test_a_failed_redis_write_never_fails_the_save(app, api_token, caplog):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(secret_key="test", database_url=app.config["PROMPTBEAT"].database_url,
                        redis_url=dead_redis, default_model="fake-model")
    caplog.set_level(logging.ERROR, logger="promptbeat")
    with separate_web_app(settings) as dead_app:
        response = dead_app.test_client().post(
            "/api/tasks", headers={"Authorization": f"Bearer {api_token}"},
            json={"name": "Daily digest", "prompt": "Summarise", "interval_seconds": 60},
        )
        assert response.status_code == 201, response.get_json()
        task_id = response.get_json()["id"]

    with app.app_context():
        task = db.session.get(Task, task_id)
        assert (task.name, task.interval_seconds, task.enabled) == ("Daily digest", 60, True)
        # The first run could not be queued either; it says so instead of staying queued forever.
        (execution,) = db.session.execute(db.select(Execution)).scalars().all()
        assert execution.status == "failed"
        assert "broker is unreachable" in execution.error

    sync_errors = [r for r in caplog.records if r.name == "promptbeat.scheduling.sync" and r.levelno == logging.ERROR]
    assert len(sync_errors) == 1
    assert f"schedule sync failed for task {task_id}" in sync_errors[0].getMessage()
    assert sync_errors[0].exc_info is not None


# --- a task whose stored schedule beat cannot use --------------------------------------------------

LAST_DAY = datetime(9999, 12, 31, tzinfo=timezone.utc)
BAD_SCHEDULES = [
    {"kind": "crontab", "cron": "0 0 31 2 *"},  # never matches
    {"kind": "crontab", "cron": "0 9 * * *", "start_at": LAST_DAY},
    {"kind": "interval", "interval_seconds": 0},
    {"kind": "fixed_time", "timezone": "Mars/Olympus_Mons"},
    {"kind": "crontab", "cron": "every day"},
]


def bad_tasks(first_id):
    return [make_task(first_id + n, anchor_at=now(), **fields) for n, fields in enumerate(BAD_SCHEDULES)]


def test_reconcile_skips_a_bad_schedule_and_still_restores_the_others(beat_app, redis, caplog):
    good = make_task(1, anchor_at=now())
    write_entry(beat_app, good, reset_phase=True)
    # An entry written while the task's schedule was still good: beat must not keep firing it.
    write_entry(beat_app, make_task(10), reset_phase=True)
    redis.delete(entry_key(beat_app, 1))  # deleted by hand
    caplog.set_level(logging.WARNING, logger="promptbeat.scheduling.sync")

    result = reconcile(beat_app, [*bad_tasks(10), good])

    assert result == ReconcileResult(added=1, removed=1, skipped=len(BAD_SCHEDULES))
    assert redis.zscore(SCHEDULE_KEY, entry_key(beat_app, 1)) is not None
    assert [k for k in redis.keys("*task:*")] == [entry_key(beat_app, 1)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "reconcile: task 10 has no entry until its schedule is fixed: This schedule never fires" in warnings[0]
    assert len(warnings) == len(BAD_SCHEDULES)


@pytest.fixture
def beat(app):
    return PromptbeatScheduler(app.extensions["celery"], lazy=True)


def test_beats_reconcile_pass_survives_bad_rows_in_the_database(app, beat):
    celery_app = app.extensions["celery"]
    with app.app_context():
        good = Task(name="good", prompt="p", model="fake-model", schedule_type="interval", interval_seconds=300,
                    timezone="UTC", anchor_at=now())
        rows = [Task(name="bad", prompt="p", model="fake-model", schedule_type=task.schedule_type,
                     interval_seconds=task.interval_seconds, fixed_time=task.fixed_time, cron=task.cron,
                     timezone=task.timezone, start_at=task.start_at, anchor_at=now()) for task in bad_tasks(1)]
        db.session.add_all([good, *rows])
        db.session.commit()
        good_id = good.id
    # The good task's entry was deleted by hand: the pass must put it back despite the others.
    result = beat.reconcile_now()
    assert result.added == 1 and result.skipped == len(BAD_SCHEDULES)
    assert TaskEntry.from_key(entry_key(celery_app, good_id), app=celery_app).schedule.every == 300


def test_beat_drops_an_unreadable_entry_and_fires_the_rest(app, beat, monkeypatch):
    celery_app = app.extensions["celery"]
    sent = []
    monkeypatch.setattr(beat, "send_task", lambda name, args, kwargs, **options: sent.append(args[0]))
    monkeypatch.setattr(type(beat), "producer", None)
    schedule_key = celery_app.redbeat_conf.schedule_key
    with app.app_context():
        for task_id in (1, 2):  # both one interval overdue
            build_entry(celery_app, make_task(task_id), last_run_at=now() - timedelta(seconds=301)).save(True)
        broken = entry_key(celery_app, 2)
        client = get_redis(celery_app)
        client.hset(broken, "definition", "{not json")
        beat.fire_due()
        beat.fire_due()
    assert sent == [1]
    assert client.zscore(schedule_key, broken) is None
    # Reconcile rewrites the entry from the database's row.
    reconcile(celery_app, [make_task(1, anchor_at=now()), make_task(2, anchor_at=now())])
    assert TaskEntry.from_key(broken, app=celery_app).schedule.every == 300
    assert client.zscore(schedule_key, broken) is not None
