"""Schedule semantics in the pages: once, bounds, overlap, catch-up, auto-pause, pause notes and status."""
import re
from datetime import datetime, timezone

from promptbeat.extensions import db
from promptbeat.models import Task
from tests.conftest import csrf_token


def load(app, task_id):
    with app.app_context():
        task = db.session.get(Task, task_id)
        db.session.expunge(task)
        return task


def test_form_creates_a_once_task_with_the_advanced_rules(app, signed_in):
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    assert 'value="once"' in page and 'name="run_at"' in page and "<details class=\"advanced\"" in page
    response = signed_in.post("/tasks/new", data={
        "csrf_token": csrf_token(page), "name": "Launch note", "prompt": "p", "model": "fake-model",
        "temperature": "0.7", "schedule_type": "once", "run_at": "2031-03-01 09:00", "timezone": "Europe/Berlin",
        "overlap_policy": "allow", "catchup_seconds": "120", "auto_pause_after": "3", "enabled": "y",
        "webhook_format": "json"})
    assert response.status_code == 302, response.get_data(as_text=True)
    task_id = int(response.headers["Location"].rsplit("/", 1)[1])
    task = load(app, task_id)
    assert task.schedule_type == "once" and task.run_at == datetime(2031, 3, 1, 8, 0, tzinfo=timezone.utc)
    assert (task.overlap_policy, task.catchup_seconds, task.auto_pause_after) == ("allow", 120, 3)
    detail = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "Once, at 2031-03-01 09:00 (Europe/Berlin)" in detail and '<span class="pill on">active</span>' in detail
    assert "after 3 failures in a row" in detail
    edit = signed_in.get(f"/tasks/{task_id}/edit").get_data(as_text=True)
    assert 'value="2031-03-01 09:00"' in edit and re.search(r'<details class="advanced"\s+open>', edit)


def test_form_shows_bound_errors_next_to_their_fields(app, signed_in):
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    response = signed_in.post("/tasks/new", data={
        "csrf_token": csrf_token(page), "name": "Bounded", "prompt": "p", "model": "fake-model",
        "temperature": "0.7", "schedule_type": "once", "run_at": "", "start_at": "2030-01-02 00:00",
        "end_at": "2030-01-01 00:00", "timezone": "UTC", "overlap_policy": "skip", "webhook_format": "json"})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert re.search(r'data-field="run_at">.*?Give a date and time', text, re.S)
    assert re.search(r'data-field="end_at">.*?The end must come after the start', text, re.S)
    with app.app_context():
        assert db.session.execute(db.select(Task)).first() is None


def test_live_preview_knows_once_and_bounds_in_both_languages(signed_in):
    query = "/tasks/preview?schedule_type=once&run_at=2031-03-01+09:00&timezone=Asia/Shanghai"
    english = signed_in.get(query).get_data(as_text=True)
    assert "Once, at 2031-03-01 09:00 (Asia/Shanghai)" in english and english.count("<li>") == 1
    chinese = signed_in.get(query, headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "仅一次，于 2031-03-01 09:00（Asia/Shanghai）" in chinese
    bounded = signed_in.get("/tasks/preview?schedule_type=interval&interval_minutes=60&max_runs=2"
                            "&start_at=2031-01-01+00:00").get_data(as_text=True)
    assert "at most 2 runs" in bounded and bounded.count("<li>") == 2


def test_pause_with_a_note_shows_on_the_dashboard_and_task_page_then_resume(app, api, signed_in):
    task_id = api.post("/tasks", json={"name": "Digest", "prompt": "p", "schedule_type": "crontab",
                                       "cron": "0 9 * * *"}).get_json()["id"]
    detail = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'name="note"' in detail and ">Pause<" in detail
    signed_in.post(f"/tasks/{task_id}/disable", data={"csrf_token": csrf_token(detail), "note": "Vendor outage"})
    assert load(app, task_id).pause_note == "Vendor outage"
    dashboard = signed_in.get("/").get_data(as_text=True)
    assert "paused" in dashboard and "Vendor outage" in dashboard
    detail = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "Paused: Vendor outage" in detail and ">Resume<" in detail and '<span class="pill off">paused</span>' in detail
    assert api.get(f"/tasks/{task_id}").get_json()["status"] == "paused"
    signed_in.post(f"/tasks/{task_id}/enable", data={"csrf_token": csrf_token(detail)})
    task = load(app, task_id)
    assert task.enabled and task.pause_note is None
    assert "Vendor outage" not in signed_in.get("/").get_data(as_text=True)


def test_run_now_even_if_one_is_running_from_the_task_page(app, api, signed_in):
    task_id = api.post("/tasks", json={"name": "Guarded", "prompt": "p", "schedule_type": "crontab",
                                       "cron": "0 9 * * *", "enabled": False}).get_json()["id"]
    detail = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'name="allow_overlap" value="1"' in detail
    response = signed_in.post(f"/tasks/{task_id}/run", data={"csrf_token": csrf_token(detail), "allow_overlap": "1"})
    assert response.status_code == 302
    with app.app_context():
        assert len(db.session.get(Task, task_id).executions) == 1
