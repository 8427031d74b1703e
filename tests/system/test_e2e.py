"""End to end: real worker and beat subprocesses, real Redis, the fake LLM server over HTTP.

Each of the original system's acceptance criteria (AC 1-6) is shown here through the
API and through the web form.
"""
import time
from datetime import timedelta

import pytest

from promptbeat.scheduling.entries import TaskEntry
from promptbeat.extensions import db
from promptbeat.models import Execution
from promptbeat.runs.states import FINAL
from tests.conftest import TEST_API_KEY, csrf_token
from tests.services import wait_for

# The worker's run path writes with PostgreSQL statements (data-modifying WITH, RETURNING).
pytestmark = pytest.mark.slow

# The worker's replacements of library internals switched off: its runs take the libraries' own paths.
LIBRARY_PATHS = {"PROMPTBEAT_FAST_BROKER": "false", "PROMPTBEAT_FAST_GEVENT_POLL": "false",
                 "PROMPTBEAT_FAST_LLM_CALLS": "false"}
# Tests of the worker's run paths run twice: with the worker as deployed by default, and with LIBRARY_PATHS.
both_paths = pytest.mark.library_paths


def pytest_generate_tests(metafunc):
    """Give every test the worker as deployed by default, and tests marked both_paths LIBRARY_PATHS as well.

    Every test names its roles' settings, so the tests of one kind share one worker and beat.
    """
    if "live_roles" not in metafunc.fixturenames:
        return
    both = metafunc.definition.get_closest_marker("library_paths") is not None
    metafunc.parametrize("live_roles", [{}, LIBRARY_PATHS] if both else [{}], indirect=True, scope="module",
                         ids=["fast-paths", "library-paths"] if both else ["fast-paths"])


INTERVAL_TASK = {"name": "Feed check", "prompt": "Summarise the feed", "schedule_type": "interval",
                 "interval_seconds": 600}


def runs(app, task_id):
    """The task's executions, oldest first."""
    with app.app_context():
        rows = db.session.execute(
            db.select(Execution).filter_by(task_id=task_id).order_by(Execution.id)
        ).scalars().all()
        db.session.expunge_all()
        return rows


def finished_runs(app, task_id):
    return [r for r in runs(app, task_id) if r.status in ("success", "failed", "skipped")]


def wait_for_runs(app, task_id, count, timeout):
    return wait_for(lambda: len(finished_runs(app, task_id)) >= count and finished_runs(app, task_id),
                    timeout, f"{count} finished run(s) of task {task_id}")


def entry_key(task_id):
    return f"promptbeat:task:{task_id}"


# Beat logs this at the end of every tick (the tests run it at DEBUG level).
TICK_ENDED = "beat: Waking up in"


def beat_ticked(live_roles):
    """Wait until a whole beat tick ran after this call, so any entry due by then has been fired.

    The first tick to end after the call may have begun before it; the second cannot have.
    """
    beat = live_roles["beat"]
    seen = beat.output().count(TICK_ENDED)
    wait_for(lambda: beat.output().count(TICK_ENDED) >= seen + 2, timeout=15, what="two beat ticks")


def reconciled(api, redis_client, live_roles):
    """Wait until beat has rewritten its entries from the database after this call, then ticked once more."""
    marker = api.post("/tasks", json={"name": "Reconcile marker", "prompt": "p", "schedule_type": "crontab",
                                      "cron": "0 9 * * *"}).get_json()["id"]
    redis_client.delete(entry_key(marker))
    redis_client.zrem("promptbeat::schedule", entry_key(marker))
    wait_for(lambda: redis_client.exists(entry_key(marker)), timeout=15, what="reconcile to restore the marker")
    beat_ticked(live_roles)


def fired_by_beat(live_roles, task_id):
    """Whether beat has sent a scheduled run of the task (its log names every slot it sends)."""
    return f"Sending due task task:{task_id} slot " in live_roles["beat"].output()


def form_data(client, path, **values):
    page = client.get(path).get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), "name": "Daily briefing", "prompt": "Brief me", "model": "fake-model",
            "temperature": "0.7", "max_tokens": "", "schedule_type": "interval", "interval_minutes": "30",
            "time": "", "cron": "", "timezone": "UTC", "enabled": "y"}
    data.update(values)
    return {k: v for k, v in data.items() if v is not None}


# AC 1, AC 5, AC 6: creating an enabled interval task runs it at once, through the API.
@both_paths
def test_api_created_interval_task_runs_within_two_seconds(app, api, live_roles):
    response = api.post("/tasks", json=INTERVAL_TASK)
    assert response.status_code == 201
    task_id = response.get_json()["id"]
    (run,) = wait_for_runs(app, task_id, 1, timeout=2)
    assert run.status == "success"
    assert run.trigger == "immediate"
    assert run.output == "echo: Summarise the feed"
    assert run.prompt_tokens and run.completion_tokens
    assert run.duration_ms is not None and run.started_at <= run.finished_at

    executions = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
    assert [e["status"] for e in executions] == ["success"]
    switches = "off" if live_roles["env"].get("PROMPTBEAT_FAST_LLM_CALLS") == "false" else "on"
    assert f"fast broker transport: {switches}; fast LLM calls: {switches}" in live_roles["worker"].output()


# AC 1 through the web form.
def test_form_created_interval_task_runs_at_once(app, signed_in, live_roles):
    response = signed_in.post("/tasks/new", data=form_data(signed_in, "/tasks/new"))
    assert response.status_code == 302
    task_id = int(response.headers["Location"].rstrip("/").split("/")[-1])
    (run,) = wait_for_runs(app, task_id, 1, timeout=2)
    assert (run.status, run.trigger) == ("success", "immediate")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "echo: Brief me" in page


@both_paths
def test_next_scheduled_run_comes_one_interval_after_the_immediate_run(app, api, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "interval_seconds": 10}).get_json()["id"]
    (first,) = wait_for_runs(app, task_id, 1, timeout=2)
    # Beat's first fire is the second run, a full interval after the first: an early fire would be it.
    second = wait_for_runs(app, task_id, 2, timeout=14)[1]
    assert second.trigger == "scheduled"
    gap = second.created_at - first.created_at
    assert timedelta(seconds=9.5) <= gap <= timedelta(seconds=13), gap


# AC 4: fixed-time and crontab tasks do not run at save, through API and form.
def test_fixed_time_and_crontab_tasks_do_not_run_at_save(app, api, signed_in, redis_client, live_roles):
    fixed = api.post("/tasks", json={"name": "Morning", "prompt": "p", "schedule_type": "fixed_time",
                                     "time": "04:00", "timezone": "Asia/Shanghai"}).get_json()["id"]
    cron = api.post("/tasks", json={"name": "Weekdays", "prompt": "p", "schedule_type": "crontab",
                                    "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}).get_json()["id"]
    response = signed_in.post("/tasks/new", data=form_data(signed_in, "/tasks/new", schedule_type="fixed_time",
                                                            interval_minutes="", time="07:30"))
    form_fixed = int(response.headers["Location"].split("/")[-1])
    beat_ticked(live_roles)
    for task_id in (fixed, cron, form_fixed):
        assert runs(app, task_id) == []
        assert not fired_by_beat(live_roles, task_id)
        assert redis_client.exists(entry_key(task_id)), "the task is not registered with beat"


# AC 2: a disabled task is not run, through API and form.
def test_disabled_interval_task_is_not_run(app, api, signed_in, redis_client, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "enabled": False}).get_json()["id"]
    response = signed_in.post("/tasks/new", data=form_data(signed_in, "/tasks/new", enabled=None))
    form_id = int(response.headers["Location"].split("/")[-1])
    reconciled(api, redis_client, live_roles)
    for tid in (task_id, form_id):
        assert runs(app, tid) == []
        assert not fired_by_beat(live_roles, tid)
        assert not redis_client.exists(entry_key(tid))


def test_enabling_an_interval_task_runs_it_at_once(app, api, signed_in, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "enabled": False}).get_json()["id"]
    assert api.post(f"/tasks/{task_id}/enable").status_code == 200
    (run,) = wait_for_runs(app, task_id, 1, timeout=2)
    assert run.trigger == "immediate"

    form_id = api.post("/tasks", json={**INTERVAL_TASK, "enabled": False}).get_json()["id"]
    page = signed_in.get(f"/tasks/{form_id}").get_data(as_text=True)
    signed_in.post(f"/tasks/{form_id}/enable", data={"csrf_token": csrf_token(page)})
    wait_for_runs(app, form_id, 1, timeout=2)


# AC 3: updating a task that is afterwards an enabled interval task runs it at once.
def test_updating_an_enabled_interval_task_runs_it_at_once(app, api, signed_in, live_roles):
    task_id = api.post("/tasks", json={"name": "Was cron", "prompt": "p", "schedule_type": "crontab",
                                       "cron": "0 9 * * *"}).get_json()["id"]
    beat_ticked(live_roles)
    assert runs(app, task_id) == [] and not fired_by_beat(live_roles, task_id)
    response = api.patch(f"/tasks/{task_id}", json={"schedule_type": "interval", "interval_minutes": 30})
    assert response.status_code == 200
    (run,) = wait_for_runs(app, task_id, 1, timeout=2)
    assert run.trigger == "immediate"

    api.patch(f"/tasks/{task_id}", json={"prompt": "A new prompt"})
    second = wait_for_runs(app, task_id, 2, timeout=2)[1]
    assert second.output == "echo: A new prompt"

    edit = f"/tasks/{task_id}/edit"
    response = signed_in.post(edit, data=form_data(signed_in, edit, prompt="Edited in the form"))
    assert response.status_code == 302
    third = wait_for_runs(app, task_id, 3, timeout=2)[2]
    assert (third.trigger, third.output) == ("immediate", "echo: Edited in the form")


def test_update_restarts_the_interval_without_a_second_run_straight_away(app, api, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "interval_seconds": 10}).get_json()["id"]
    wait_for_runs(app, task_id, 1, timeout=2)
    time.sleep(6)  # change the task six seconds into its interval: the old phase would fire 4 s later
    api.patch(f"/tasks/{task_id}", json={"prompt": "Changed"})
    second = wait_for_runs(app, task_id, 2, timeout=2)[1]
    # The next run is beat's first fire in the new phase, a full interval on: a fire in the old phase would be it.
    third = wait_for_runs(app, task_id, 3, timeout=14)[2]
    assert third.trigger == "scheduled"
    assert third.created_at - second.created_at >= timedelta(seconds=9.5), third.created_at - second.created_at


def test_deleting_a_task_removes_its_beat_entry(app, api, signed_in, redis_client, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "schedule_type": "crontab", "cron": "*/5 * * * *"}).get_json()["id"]
    assert redis_client.exists(entry_key(task_id))
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    assert not redis_client.exists(entry_key(task_id))
    assert redis_client.zscore("promptbeat::schedule", entry_key(task_id)) is None
    assert api.get(f"/tasks/{task_id}").status_code == 404

    form_id = api.post("/tasks", json={**INTERVAL_TASK, "enabled": False, "name": "x"}).get_json()["id"]
    api.post(f"/tasks/{form_id}/enable")
    page = signed_in.get(f"/tasks/{form_id}").get_data(as_text=True)
    assert signed_in.post(f"/tasks/{form_id}/delete", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert not redis_client.exists(entry_key(form_id))


def test_llm_error_is_recorded_as_failed_with_its_message(app, api, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "prompt": "Break [[fail:500]]"}).get_json()["id"]
    (run,) = wait_for_runs(app, task_id, 1, timeout=2)
    assert run.status == "failed"
    assert "500" in run.error and "InternalServerError" in run.error
    assert run.output is None

    task_id = api.post("/tasks", json={**INTERVAL_TASK, "prompt": "Bad key [[fail:401]]"}).get_json()["id"]
    (run,) = wait_for_runs(app, task_id, 1, timeout=2)
    assert run.status == "failed" and "AuthenticationError" in run.error
    assert TEST_API_KEY not in run.error


@both_paths
def test_run_now_runs_a_disabled_fixed_time_task(app, api, live_roles):
    task_id = api.post("/tasks", json={"name": "Daily", "prompt": "Now please", "schedule_type": "fixed_time",
                                       "time": "06:00", "enabled": False}).get_json()["id"]
    response = api.post(f"/tasks/{task_id}/run")
    assert response.status_code == 202
    (run,) = wait_for_runs(app, task_id, 1, timeout=2)
    assert (run.trigger, run.status, run.output) == ("manual", "success", "echo: Now please")


def test_entry_deleted_from_redis_comes_back_through_reconcile(app, api, redis_client, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "interval_seconds": 600}).get_json()["id"]
    wait_for_runs(app, task_id, 1, timeout=2)
    key = entry_key(task_id)
    redis_client.delete(key)
    redis_client.zrem("promptbeat::schedule", key)
    wait_for(lambda: redis_client.exists(key), timeout=10, what="reconcile to restore the entry")
    # Restored with its phase: the next fire is still about ten minutes out, not now.
    score = wait_for(lambda: redis_client.zscore("promptbeat::schedule", key), timeout=5, what="score")
    assert score - time.time() > 500
    entry = TaskEntry.from_key(key, app=app.extensions["celery"])
    assert entry.args == [task_id]
    beat_ticked(live_roles)
    assert not fired_by_beat(live_roles, task_id)
    assert len(runs(app, task_id)) == 1


def test_task_list_shows_schedule_state_last_and_next_run(app, api, signed_in, live_roles):
    task_id = api.post("/tasks", json={**INTERVAL_TASK, "interval_seconds": 1800}).get_json()["id"]
    wait_for_runs(app, task_id, 1, timeout=2)
    api.post("/tasks", json={"name": "Cron one", "prompt": "p", "schedule_type": "crontab", "cron": "30 8 * * 1"})
    page = signed_in.get("/").get_data(as_text=True)
    assert "Feed check" in page and "Every 30 minutes" in page
    assert "At 08:30, only on Monday (UTC)" in page
    assert "success" in page and "enabled" in page
    # Each row has Run now, the enable switch (on) and Edit; Delete lives on the task page.
    assert "Run now" in page and 'role="switch" aria-checked="true"' in page and "Edit" in page
    listed = api.get("/tasks").get_json()["tasks"]
    first = next(t for t in listed if t["id"] == task_id)
    assert first["last_run"]["status"] == "success"
    assert first["next_run_at"] is not None


def run_status(app, run_id):
    with app.app_context():
        return db.session.get(Execution, run_id).status


def test_run_now_with_the_override_runs_while_another_run_of_the_task_is_running(app, api, signed_in, live_roles):
    # The held run's call takes long enough for the others to be queued, run and finish meanwhile;
    # the prompt the others read once it started is a quick one.
    task = api.post("/tasks", json={"name": "Held", "prompt": "Hold on [[sleep:10]]", "schedule_type": "crontab",
                                    "cron": "0 0 1 1 *", "enabled": False}).get_json()
    run_url = f"/tasks/{task['id']}/run"
    held = api.post(run_url).get_json()["execution"]["id"]
    wait_for(lambda: run_status(app, held) == "running", 10, "the first run to start")
    assert api.patch(f"/tasks/{task['id']}", json={"prompt": "Quick"}).status_code == 200

    overriding = api.post(run_url, json={"allow_overlap": True}).get_json()["execution"]["id"]
    assert wait_for(lambda: run_status(app, overriding) in FINAL and run_status(app, overriding), 8,
                    "the API's overriding run to finish") == "success"

    page = signed_in.get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert signed_in.post(run_url, data={"csrf_token": csrf_token(page), "allow_overlap": "1"}).status_code == 302
    from_page = runs(app, task["id"])[-1].id
    assert wait_for(lambda: run_status(app, from_page) in FINAL and run_status(app, from_page), 8,
                    "the page's overriding run to finish") == "success"

    honouring = api.post(run_url).get_json()["execution"]["id"]
    assert wait_for(lambda: run_status(app, honouring) in FINAL and run_status(app, honouring), 8,
                    "the policy-honouring run to finish") == "skipped"
    # All of it while the first run was still running; it then finishes as usual.
    assert run_status(app, held) == "running"
    assert wait_for(lambda: run_status(app, held) in FINAL and run_status(app, held), 30,
                    "the first run to finish") == "success"



def test_fixed_jobs_leave_the_worker_log_at_info_to_the_runs(app, api, live_roles):
    """A sweep every few seconds would bury the lines people read, such as the sign-in lines of dev.py."""
    app.extensions["celery"].send_task("promptbeat.sweep_lost_runs")
    # One queue, taken in order: once a run sent after the sweep is done, the sweep was received.
    task_id = api.post("/tasks", json={"name": "Logged", "prompt": "p", "schedule_type": "interval",
                                       "interval_minutes": 60}).get_json()["id"]
    wait_for_runs(app, task_id, 1, timeout=15)
    output = live_roles["worker"].output()
    assert f"Task promptbeat task {task_id}[" in output  # a run is logged under its task (its shadow name)
    assert "Task promptbeat.sweep_lost_runs[" not in output
