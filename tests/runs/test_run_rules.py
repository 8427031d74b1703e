"""Worker-side rules, run in-process against the fake LLM server: slots, overlap, bounds, pause, caps."""
import dataclasses
import json
import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from promptbeat.scheduling.entries import entry_key
from promptbeat.extensions import db
from promptbeat.models import Channel, Execution, ScheduleType, Task, Trigger, utcnow
from promptbeat.runs.limits import llm_call_slot
from promptbeat.settings import Settings, engine_options
from tests.conftest import csrf_token
from tests.runner import run_and_reload
from tests.services import wait_for

SLOT = datetime(2030, 1, 1, 9, 0, tzinfo=timezone.utc)


def make_task(app, **values):
    values = {"name": "t", "prompt": "Hello", "model": "fake-model", "schedule_type": ScheduleType.INTERVAL,
              "interval_seconds": 60, "anchor_at": SLOT - timedelta(minutes=1), **values}
    with app.app_context():
        task = Task(**values)
        db.session.add(task)
        db.session.commit()
        return task.id


def executions(app, task_id):
    with app.app_context():
        rows = db.session.execute(db.select(Execution).filter_by(task_id=task_id).order_by(Execution.id)).scalars().all()
        db.session.expunge_all()
        return rows


def fire(app, task_id, slot=SLOT, **kwargs):
    with app.app_context():
        execution = run_and_reload(task_id, trigger=Trigger.SCHEDULED, slot=slot.isoformat(), **kwargs)
        return execution.id, execution.status, execution.error


def test_second_dispatch_of_a_slot_runs_nothing(app, fake_llm):
    task_id = make_task(app)
    first = fire(app, task_id, catch_up=True)
    again = fire(app, task_id)  # a redelivered message, or the other beat's copy
    assert first[1] == "success" and again == first
    (run,) = executions(app, task_id)
    assert (run.slot, run.catch_up, run.trigger) == (SLOT, True, "scheduled")


def anchor_and_times(app, task_id):
    with app.app_context():
        task = db.session.get(Task, task_id)
        return task.anchor_at, task.created_at, task.updated_at


def test_a_claimed_slot_moves_the_anchor_forward_only_and_nothing_else(app, fake_llm):
    task_id = make_task(app)
    _, created, updated = anchor_and_times(app, task_id)
    fire(app, task_id)
    # Runs are not changes to the task: "Recently changed" on the dashboard sorts by updated_at.
    assert anchor_and_times(app, task_id) == (SLOT, created, updated)

    fire(app, task_id, slot=SLOT - timedelta(minutes=30))  # a late catch-up of an older slot
    fire(app, task_id)  # the same slot again: its claim fails and changes nothing
    assert anchor_and_times(app, task_id) == (SLOT, created, updated)
    fire(app, task_id, slot=SLOT + timedelta(minutes=1))
    assert anchor_and_times(app, task_id) == (SLOT + timedelta(minutes=1), created, updated)
    with app.app_context():
        assert db.session.get(Task, task_id).run_count == 3


def test_a_slot_of_a_disabled_task_is_skipped_and_leaves_the_anchor(app, fake_llm):
    task_id = make_task(app, enabled=False)
    anchor, _, _ = anchor_and_times(app, task_id)
    assert fire(app, task_id)[1:] == ("skipped", "The task was disabled before this run started.")
    assert anchor_and_times(app, task_id)[0] == anchor


def test_two_beats_racing_one_slot_make_one_execution(app, fake_llm):
    task_id = make_task(app, overlap_policy="allow")
    results, barrier = [], threading.Barrier(2)

    def dispatch():
        barrier.wait()
        results.append(fire(app, task_id))

    threads = [threading.Thread(target=dispatch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2 and results[0][0] == results[1][0]
    assert len(executions(app, task_id)) == 1


def test_overlap_skip_records_a_skipped_run_with_the_reason(app, fake_llm, redis_client):
    task_id = make_task(app)
    redis_client.set(f"promptbeat:running:{task_id}", "another-run", ex=30)  # a run in flight elsewhere
    try:
        _, status, error = fire(app, task_id)
    finally:
        redis_client.delete(f"promptbeat:running:{task_id}")
    assert status == "skipped" and "still running" in error


def test_database_guard_stands_behind_the_lock(app, fake_llm):
    task_id = make_task(app)
    with app.app_context():
        db.session.add(Execution(task_id=task_id, trigger="scheduled", status="running",
                                 started_at=datetime.now(timezone.utc)))
        db.session.commit()
    _, status, error = fire(app, task_id)
    assert status == "skipped" and "still marked running" in error


def test_a_run_marked_running_longer_than_any_run_can_last_does_not_block_the_next(app, fake_llm):
    task_id = make_task(app)
    with app.app_context():
        # Started before the overlap lock's lifetime: its worker died and the sweep has not marked it yet.
        started = datetime.now(timezone.utc) - timedelta(seconds=app.config["PROMPTBEAT"].max_run_seconds + 120)
        db.session.add(Execution(task_id=task_id, trigger="scheduled", status="running", started_at=started))
        db.session.commit()
    assert fire(app, task_id)[1] == "success"


def test_overlap_allow_and_manual_override_run_anyway(app, fake_llm, redis_client):
    allowed = make_task(app, overlap_policy="allow")
    skipping = make_task(app)
    for task_id in (allowed, skipping):
        redis_client.set(f"promptbeat:running:{task_id}", "another-run", ex=30)
    try:
        assert fire(app, allowed)[1] == "success"
        with app.app_context():
            manual = run_and_reload(skipping, trigger=Trigger.MANUAL, allow_overlap=True)
            assert manual.status == "success"
            honoured = run_and_reload(skipping, trigger=Trigger.MANUAL)
            assert honoured.status == "skipped"
    finally:
        for task_id in (allowed, skipping):
            redis_client.delete(f"promptbeat:running:{task_id}")


def test_auto_pause_after_consecutive_failures(app, fake_llm, redis_client):
    task_id = make_task(app, prompt="[[fail:401]]", auto_pause_after=2)
    assert fire(app, task_id, SLOT)[1] == "failed"
    assert fire(app, task_id, SLOT + timedelta(minutes=1))[1] == "failed"
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert not task.enabled
        assert task.pause_note.startswith("Paused automatically after 2 consecutive failures")
    assert not redis_client.exists(entry_key(app.extensions["celery"], task_id))
    assert fire(app, task_id, SLOT + timedelta(minutes=2))[1] == "skipped"


def test_max_runs_completes_the_task(app, fake_llm):
    task_id = make_task(app, max_runs=2)
    assert [fire(app, task_id, SLOT + timedelta(minutes=i))[1] for i in range(3)] == ["success", "success", "skipped"]
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert (task.run_count, task.enabled, task.completed_at is not None) == (2, False, True)


def test_a_run_marked_lost_during_its_call_is_neither_written_over_nor_counted(app, fake_llm):
    task_id = make_task(app, prompt="Slow [[sleep:1]]")

    def mark_lost_while_it_calls():
        with app.app_context():
            for _ in range(400):
                marked = db.session.execute(update(Execution).where(Execution.task_id == task_id,
                                                                    Execution.status == "running")
                                            .values(status="lost")).rowcount
                db.session.commit()
                if marked:
                    return
                time.sleep(0.02)

    sweeper = threading.Thread(target=mark_lost_while_it_calls)
    sweeper.start()
    assert fire(app, task_id)[1] == "lost"
    sweeper.join()
    with app.app_context():
        assert db.session.get(Task, task_id).run_count == 0


def test_runs_of_one_task_that_finish_together_each_count(app, fake_llm):
    task_id = make_task(app, prompt="Together [[sleep:0.5]]", overlap_policy="allow")
    threads = [threading.Thread(target=fire, args=(app, task_id, SLOT + timedelta(minutes=i))) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [run.status for run in executions(app, task_id)] == ["success"] * 4
    with app.app_context():
        assert db.session.get(Task, task_id).run_count == 4


def test_slot_after_end_is_skipped(app, fake_llm):
    task_id = make_task(app, end_at=SLOT - timedelta(seconds=1))
    _, status, error = fire(app, task_id)
    assert status == "skipped" and "after the task's end" in error


def test_one_off_runs_once_then_shows_completed(app, api, fake_llm):
    run_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    body = {"name": "once", "prompt": "Hi", "schedule_type": "once", "run_at": run_at.isoformat()}
    created = api.post("/tasks", json=body).get_json()
    assert created["next_runs"] == [run_at.isoformat().replace("+00:00", "Z")]
    assert fire(app, created["id"], run_at)[1] == "success"
    shown = api.get(f"/tasks/{created['id']}").get_json()
    assert (shown["status"], shown["enabled"], shown["next_runs"]) == ("completed", False, [])


def test_api_shows_next_five_runs_and_words(app, api):
    body = {"name": "n", "prompt": "p", "schedule_type": "fixed_time", "time": "02:30", "timezone": "Europe/Berlin"}
    shown = api.get(f"/tasks/{api.post('/tasks', json=body).get_json()['id']}").get_json()
    assert len(shown["next_runs"]) == 5
    assert shown["schedule_description"] == "Every day at 02:30 (Europe/Berlin)"


def test_preview_endpoint_uses_beats_rules(api):
    response = api.post("/schedule/preview", json={"schedule_type": "crontab", "cron": "30 2 * * *",
                                                   "timezone": "Europe/Berlin"})
    assert response.status_code == 200
    body = response.get_json()
    assert len(body["next_runs"]) == 5 and "02:30" in body["description"]
    bad = api.post("/schedule/preview", json={"schedule_type": "crontab", "cron": "61 * * *"})
    assert bad.status_code == 422 and "cron" in bad.get_json()["fields"]


def test_form_preview_with_the_session(signed_in):
    token = csrf_token(signed_in.get("/tasks/new").get_data(as_text=True))
    response = signed_in.post("/tasks/preview", json={"schedule_type": "interval", "interval_minutes": "30"},
                              headers={"X-CSRFToken": token})
    assert response.status_code == 200 and response.get_json()["description"] == "Every 30 minutes"
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    assert 'hx-get="/tasks/preview"' in page  # the live preview fragment, same presenter


def test_bad_schedule_input_gets_field_errors(api):
    body = {"name": "n", "prompt": "p", "schedule_type": "once", "run_at": "tomorrow", "overlap_policy": "queue",
            "start_at": "2030-01-02T00:00", "end_at": "2030-01-01T00:00"}
    response = api.post("/tasks", json=body)
    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == {"run_at", "overlap_policy", "end_at"}


def test_minimum_interval_defaults_to_a_minute():
    assert Settings(secret_key="x").min_interval_seconds == 60


def test_maximum_enabled_tasks(app, api, monkeypatch):
    monkeypatch.setitem(app.config, "PROMPTBEAT", dataclasses.replace(app.config["PROMPTBEAT"], max_enabled_tasks=1))
    body = {"name": "n", "prompt": "p", "schedule_type": "crontab", "cron": "0 9 * * *"}
    assert api.post("/tasks", json=body).status_code == 201
    refused = api.post("/tasks", json=body)
    assert refused.status_code == 422 and "At most 1 tasks" in refused.get_json()["fields"]["enabled"]
    assert api.post("/tasks", json={**body, "enabled": False}).status_code == 201


def test_enabling_past_the_maximum_enabled_tasks_is_refused_on_the_page_and_the_api(app, api, signed_in,
                                                                                  redis_client, monkeypatch):
    monkeypatch.setitem(app.config, "PROMPTBEAT", dataclasses.replace(app.config["PROMPTBEAT"], max_enabled_tasks=1))
    body = {"name": "n", "prompt": "p", "schedule_type": "crontab", "cron": "0 9 * * *"}
    assert api.post("/tasks", json=body).status_code == 201
    paused = api.post("/tasks", json={**body, "name": "Paused", "enabled": False}).get_json()["id"]
    refusals = [api.post(f"/tasks/{paused}/enable"), api.post(f"/tasks/{paused}/resume"),
                api.patch(f"/tasks/{paused}", json={"enabled": True})]
    for refused in refusals:
        assert refused.status_code == 422, refused.get_data(as_text=True)
        assert "At most 1 tasks may be enabled" in refused.get_json()["fields"]["enabled"]

    page = signed_in.get(f"/tasks/{paused}").get_data(as_text=True)
    switched = signed_in.post(f"/tasks/{paused}/enable", data={"csrf_token": csrf_token(page)}, follow_redirects=True)
    assert "At most 1 tasks may be enabled" in switched.get_data(as_text=True)
    edit = f"/tasks/{paused}/edit"
    form = {"csrf_token": csrf_token(signed_in.get(edit).get_data(as_text=True)), "name": "Paused", "prompt": "p",
            "model": "fake-model", "temperature": "0.7", "max_tokens": "", "schedule_type": "crontab",
            "interval_minutes": "", "time": "", "cron": "0 9 * * *", "timezone": "UTC", "enabled": "y"}
    edited = signed_in.post(edit, data=form)
    assert edited.status_code == 422 and "At most 1 tasks may be enabled" in edited.get_data(as_text=True)
    form["csrf_token"] = csrf_token(signed_in.get("/tasks/new").get_data(as_text=True))
    created = signed_in.post("/tasks/new", data={**form, "name": "One more"})
    assert created.status_code == 422 and "At most 1 tasks may be enabled" in created.get_data(as_text=True)

    shown = api.get(f"/tasks/{paused}").get_json()
    assert (shown["enabled"], shown["status"]) == (False, "paused")
    assert [t["name"] for t in api.get("/tasks").get_json()["tasks"]].count("One more") == 0
    assert not redis_client.exists(entry_key(app.extensions["celery"], paused))


def test_llm_call_cap_queues_calls_across_workers(app, caplog):
    settings = dataclasses.replace(app.config["PROMPTBEAT"], max_concurrent_llm_calls=1)
    entered = []
    caplog.set_level(logging.INFO, logger="promptbeat.runs.limits")
    with llm_call_slot(settings):
        waiter = threading.Thread(target=lambda: _enter(settings, entered))
        waiter.start()
        # The second call has asked for a slot and been told to wait, while the first is in flight.
        wait_for(lambda: "waiting for one to finish" in caplog.text, timeout=10, what="the second call to wait")
        assert entered == []
    waiter.join(timeout=10)
    assert entered == ["in"]


def _enter(settings, entered):
    with llm_call_slot(settings, poll=0.05):
        entered.append("in")


def test_run_now_works_on_a_paused_fixed_time_task_with_an_explicit_override(app, api):
    body = {"name": "n", "prompt": "p", "schedule_type": "fixed_time", "time": "09:00", "enabled": False}
    task_id = api.post("/tasks", json=body).get_json()["id"]
    response = api.post(f"/tasks/{task_id}/run", json={"allow_overlap": True})
    assert response.status_code == 202 and response.get_json()["execution"]["trigger"] == "manual"
    assert api.post(f"/tasks/{task_id}/run", json={"allow_overlap": "yes"}).status_code == 422


def test_a_run_needs_one_database_connection_at_a_time(app, role_environ, fake_llm, redis_client):
    # Hundreds of runs in flight share a worker's small pool: a run that kept one connection while
    # it waited for another could wait forever, and so could every other run holding one.
    from promptbeat.app import create_app

    settings = Settings.from_environ(role_environ)
    options = {**engine_options(settings.database_url, pool_size=1, autocommit=True), "pool_timeout": 3}
    worker_app = create_app(settings, SQLALCHEMY_ENGINE_OPTIONS=options)
    scheduled = make_task(app)  # overlap policy skip: the slot claim, the anchor, the overlap guard
    skipped = make_task(app)
    # A templated prompt (two reads for its variables), a retry (its attempts shown while it waits)
    # and a channel (its rules read, its delivery queued); then an auto-pause (task reloaded).
    busy = make_task(app, prompt="Run {{ run_count }} [[fail:500x1]]")
    with app.app_context():
        hook = Channel(name="closed port", kind="webhook", url="http://127.0.0.1:9/hook")
        task = db.session.get(Task, busy)
        task.channels.append(hook)
        db.session.commit()
    pausing = make_task(app, prompt="[[fail:401]]", auto_pause_after=1)
    try:
        assert fire(worker_app, scheduled)[1] == "success"
        assert fire(worker_app, busy)[1] == "success"
        (run,) = executions(app, busy)
        assert len(run.attempts) == 2
        queued = [json.loads(message)["headers"]["task"] for message in redis_client.lrange("promptbeat", 0, -1)]
        assert queued.count("promptbeat.deliver") == 1
        assert fire(worker_app, pausing)[1] == "failed"
        with app.app_context():
            assert db.session.get(Task, pausing).enabled is False
        with worker_app.app_context():
            # A run of the second task still marked running: the next one is skipped, and says why.
            db.session.add(Execution(task_id=skipped, trigger=Trigger.SCHEDULED, status="running",
                                     started_at=datetime.now(timezone.utc)))
            db.session.commit()
        _, status, error = fire(worker_app, skipped)
        assert (status, error) == ("skipped", "Skipped: a previous run of this task is still marked running "
                                              "(overlap policy: skip).")
    finally:
        with worker_app.app_context():
            db.engine.dispose()



def test_lowering_max_runs_below_the_count_lets_no_further_run_through(app, api, fake_llm):
    marker = uuid.uuid4().hex
    task = api.post("/tasks", json={"name": "Bounded", "prompt": f"Count {marker}", "model": "fake-model",
                                    "schedule_type": "interval", "interval_seconds": 600, "max_runs": 5}).get_json()
    with app.app_context():
        db.session.get(Task, task["id"]).run_count = 3
        db.session.commit()
    # Saving an interval task queues its immediate run; it counts, so it keeps to the lowered bound.
    assert api.patch(f"/tasks/{task['id']}", json={"max_runs": 2}).status_code == 200
    newest = api.get(f"/tasks/{task['id']}/executions").get_json()["executions"][0]
    assert newest["trigger"] == "immediate"
    with app.app_context():
        execution = run_and_reload(task["id"], trigger=Trigger.IMMEDIATE, execution_id=newest["id"])
        assert (execution.status, execution.error) == ("skipped", "Skipped: the task already ran its maximum of 2 runs.")
        assert db.session.get(Task, task["id"]).run_count == 3
    assert [r for r in fake_llm.requests if marker in r["messages"][-1]["content"]] == []
    # A scheduled slot is held to it as well.
    assert fire(app, task["id"], utcnow() + timedelta(minutes=10))[1] == "skipped"


def test_the_worker_skips_a_slot_before_the_start(app, fake_llm):
    task_id = make_task(app, start_at=SLOT + timedelta(seconds=1))
    _, status, error = fire(app, task_id)
    assert (status, error) == ("skipped", "Skipped: the slot is before the task's start time.")
    assert fire(app, task_id, SLOT + timedelta(minutes=1))[1] == "success"


def test_run_now_on_a_completed_task_runs_and_leaves_it_completed(app, api, fake_llm):
    task_id = make_task(app, max_runs=1)
    assert fire(app, task_id)[1] == "success"
    with app.app_context():
        completed = db.session.get(Task, task_id)
        assert (completed.enabled, completed.completed_at is not None) == (False, True)
    queued = api.post(f"/tasks/{task_id}/run")
    assert queued.status_code == 202
    with app.app_context():
        manual = run_and_reload(task_id, trigger=Trigger.MANUAL, execution_id=queued.get_json()["execution"]["id"])
        assert manual.status == "success"
        db.session.expire_all()
        task = db.session.get(Task, task_id)
        assert (task.run_count, task.enabled, task.completed_at is not None) == (1, False, True)
