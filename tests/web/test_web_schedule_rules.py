"""Schedule semantics in the pages: once, bounds, overlap, catch-up, auto-pause, pause notes and status."""
import re
from datetime import datetime, timedelta, timezone

import pytest

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
        "overlap_policy": "allow", "catchup_seconds": "120", "auto_pause_after": "3", "enabled": "y"})
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
        "end_at": "2030-01-01 00:00", "timezone": "UTC", "overlap_policy": "skip"})
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


# --- schedules that cannot fire -------------------------------------------------------------------

def soon(**delta):
    return (datetime.now(timezone.utc) + timedelta(**delta)).isoformat()


REFUSED = {
    "never fires": ({"schedule_type": "crontab", "cron": "0 0 31 2 *"}, "cron", "never fires"),
    "start in 9999": ({"schedule_type": "crontab", "cron": "0 9 * * *", "start_at": "9999-01-01T00:00Z"},
                      "start_at", "more than 10 years away"),
    "one-off in 9999": ({"schedule_type": "once", "run_at": "9999-06-01T00:00Z"}, "run_at", "more than 10 years"),
    "last second of the calendar": ({"schedule_type": "interval", "interval_minutes": 5,
                                     "start_at": "9999-12-31T23:59:59-05:00"}, "start_at", "between the years 1"),
    "first minute of the calendar": ({"schedule_type": "interval", "interval_minutes": 5,
                                      "end_at": "0001-01-01T00:00+01:00"}, "end_at", "between the years 1"),
    "one-off in the past": ({"schedule_type": "once", "run_at": "2020-01-01T09:00Z"}, "run_at", "has passed"),
    "end before the first run": ({"schedule_type": "fixed_time", "time": "09:00", "timezone": "UTC",
                                  "end_at": soon(minutes=-5)}, "end_at", "before the first run"),
    "random cron field": ({"schedule_type": "crontab", "cron": "R 9 * * *"}, "cron", "5-field cron"),
}


def task_entry_keys(redis_client):
    return list(redis_client.scan_iter(match="*task:*"))


@pytest.mark.parametrize("case", REFUSED)
def test_a_schedule_without_a_first_run_is_refused_everywhere_and_changes_nothing(api, signed_in, redis_client,
                                                                                   case):
    schedule, field, words = REFUSED[case]
    created = api.post("/tasks", json={"name": "n", "prompt": "p", **schedule})
    assert created.status_code == 422 and words in created.get_json()["fields"][field], created.get_json()
    assert api.get("/tasks").get_json()["tasks"] == [] and task_entry_keys(redis_client) == []
    preview = api.post("/schedule/preview", json=schedule)
    assert preview.status_code == 422 and words in preview.get_json()["fields"][field]
    fragment = signed_in.get("/tasks/preview", query_string=schedule)
    assert fragment.status_code == 200 and words in fragment.get_data(as_text=True)


def test_a_past_one_off_refuses_a_new_time_or_resuming_but_allows_other_edits(app, api, signed_in):
    task_id = insert(app, name="Launch", schedule_type="once", run_at=datetime(2026, 1, 1, 9, tzinfo=timezone.utc),
                     enabled=False, completed_at=datetime(2026, 1, 1, 9, 1, tzinfo=timezone.utc), run_count=1)
    renamed = api.patch(f"/tasks/{task_id}", json={"name": "Launch (done)"})
    assert renamed.status_code == 200 and renamed.get_json()["status"] == "completed"
    moved = api.patch(f"/tasks/{task_id}", json={"run_at": "2026-02-01T09:00Z"})
    assert moved.status_code == 422 and "has passed" in moved.get_json()["fields"]["run_at"]
    resumed = api.post(f"/tasks/{task_id}/enable")
    assert resumed.status_code == 422 and "has passed" in resumed.get_json()["fields"]["run_at"]
    detail = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    signed_in.post(f"/tasks/{task_id}/enable", data={"csrf_token": csrf_token(detail)})
    assert "This time has passed" in signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    task = load(app, task_id)
    assert (task.name, task.enabled, task.run_at.month, task.completed_at is not None) == ("Launch (done)", False, 1,
                                                                                         True)
    later = api.patch(f"/tasks/{task_id}", json={"run_at": soon(days=1), "enabled": True})
    assert later.status_code == 200 and later.get_json()["status"] == "active"


# Rows saved before validation knew better (or written by hand): each is a schedule beat cannot use.
BAD_ROWS = {
    "never fires": {"schedule_type": "crontab", "cron": "0 0 31 2 *"},
    "start in 9999": {"schedule_type": "crontab", "cron": "0 9 * * *",
                      "start_at": datetime(9999, 12, 31, tzinfo=timezone.utc)},
    "interval at the calendar's end": {"schedule_type": "interval", "interval_seconds": 60,
                                       "start_at": datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)},
    "one-off past the calendar in Tokyo": {"schedule_type": "once", "timezone": "Asia/Tokyo",
                                           "run_at": datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)},
    "not a cron": {"schedule_type": "crontab", "cron": "every day"},
    "unknown zone": {"schedule_type": "fixed_time", "fixed_time": "09:00", "timezone": "Mars/Olympus_Mons"},
    "zero interval": {"schedule_type": "interval", "interval_seconds": 0},
    "unknown type": {"schedule_type": "hourly"},
}


def insert(app, **values):
    """A task written straight to the database, past validation."""
    values = {"name": "bad", "prompt": "p", "model": "fake-model", "timezone": "UTC",
              "anchor_at": datetime.now(timezone.utc), **values}
    with app.app_context():
        task = Task(**values)
        db.session.add(task)
        db.session.commit()
        return task.id


@pytest.fixture
def bad_rows(app, api):
    good = api.post("/tasks", json={"name": "Good digest", "prompt": "p", "schedule_type": "crontab",
                                    "cron": "0 9 * * *"}).get_json()["id"]
    bad = {case: insert(app, name=f"Bad {case}", **values) for case, values in BAD_ROWS.items()}
    return good, bad


def test_a_bad_row_breaks_neither_the_api_nor_its_own_json(api, bad_rows):
    good, bad = bad_rows
    listed = api.get("/tasks")
    assert listed.status_code == 200
    tasks = {task["id"]: task for task in listed.get_json()["tasks"]}
    assert set(tasks) == {good, *bad.values()} and tasks[good]["next_run_at"] is not None
    assert tasks[bad["never fires"]]["next_runs"] == [] and tasks[bad["not a cron"]]["next_run_at"] is None
    assert tasks[bad["one-off past the calendar in Tokyo"]]["schedule_description"] == "Once, at 9999-12-31 23:59 (UTC)"
    for task_id in bad.values():
        one = api.get(f"/tasks/{task_id}")
        assert one.status_code == 200 and one.get_json()["schedule_description"]


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_a_bad_row_breaks_no_dashboard_view_and_is_flagged_on_its_page(signed_in, bad_rows, language):
    good, bad = bad_rows
    headers = {"Accept-Language": language}
    views = [{"sort": sort} for sort in ("name", "newest", "updated")] + [
        {"q": "Bad"}, {"q": "digest"}, {"status": "enabled"}, {"status": "failing"}, {"page": "2"},
        *({"type": kind} for kind in ("interval", "fixed_time", "crontab", "once")), {"q": "Bad", "sort": "updated"}]
    for args in views:
        page = signed_in.get("/", query_string=args, headers=headers)
        assert page.status_code == 200, args
    assert "Good digest" in signed_in.get("/", query_string={"q": "digest"}, headers=headers).get_data(as_text=True)
    assert "Bad never fires" in signed_in.get("/", query_string={"q": "Bad"}, headers=headers).get_data(as_text=True)
    for case, task_id in bad.items():
        page = signed_in.get(f"/tasks/{task_id}", headers=headers)
        assert page.status_code == 200, case
        assert 'class="error-box schedule-problem"' in page.get_data(as_text=True), case
    good_page = signed_in.get(f"/tasks/{good}", headers=headers).get_data(as_text=True)
    assert "schedule-problem" not in good_page
    flagged = signed_in.get(f"/tasks/{bad['never fires']}", headers=headers).get_data(as_text=True)
    assert {"en": "Schedule problem: This schedule never fires: no date matches it (for example 31 February).",
            "zh-CN": "计划有问题： 此计划永远不会触发：没有日期与之匹配（例如 2 月 31 日）。"}[language] in flagged


def test_every_bad_row_can_be_paused_through_the_api_and_the_page(app, api, signed_in, bad_rows):
    _, bad = bad_rows
    for number, (case, task_id) in enumerate(bad.items()):
        if number % 2:
            page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
            response = signed_in.post(f"/tasks/{task_id}/disable", data={"csrf_token": csrf_token(page),
                                                                         "note": "stop it"})
            assert response.status_code in (200, 302), case
        else:
            response = api.post(f"/tasks/{task_id}/pause", json={"note": "stop it"})
            assert response.status_code == 200, (case, response.get_json())
        with app.app_context():
            task = db.session.get(Task, task_id)
            assert (task.enabled, task.pause_note) == (False, "stop it"), case
    # A pause with a note that cannot be stored still changes nothing.
    task_id = next(iter(bad.values()))
    assert api.post(f"/tasks/{task_id}/pause", json={"note": "a\x00b"}).status_code == 422
    with app.app_context():
        assert db.session.get(Task, task_id).pause_note == "stop it"
