"""Times in the viewer's zone, the schedule form's time and zone fields, the dashboard row and the run history."""
import re
from datetime import datetime, timedelta, timezone

import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, User, utcnow
from promptbeat.runs.states import RunStatus
from tests.conftest import csrf_token
from tests.web.test_web_ui import make_task


def set_zone(app, zone, email="admin@example.com"):
    with app.app_context():
        user = db.session.execute(db.select(User).filter_by(email=email)).scalar_one()
        user.timezone = zone
        db.session.commit()


def zone_of(app, email="admin@example.com"):
    with app.app_context():
        return db.session.execute(db.select(User.timezone).filter_by(email=email)).scalar_one()


def add_run(app, task_id, trigger=Trigger.SCHEDULED, status=RunStatus.SUCCESS, **values):
    with app.app_context():
        run = Execution(task_id=task_id, status=status, trigger=trigger, model="fake-model", started_at=utcnow(),
                        finished_at=utcnow(), **values)
        db.session.add(run)
        db.session.commit()
        return run.id


def shanghai_daily(app):
    return make_task(app, "Morning brief", schedule_type="fixed_time", fixed_time="09:00", interval_seconds=None,
                     timezone="Asia/Shanghai", enabled=True)


def test_a_shanghai_task_shows_its_next_runs_in_the_viewers_zone_with_its_own_beside(app, signed_in):
    task_id = shanghai_daily(app)
    set_zone(app, "Europe/Berlin")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "Next runs, in Europe/Berlin" in page
    # 09:00 in Shanghai is 02:00 in Berlin in winter and 03:00 in summer.
    runs = re.findall(r'<time datetime="[^"]+">(\d{4}-\d\d-\d\d (\d\d):00 CES?T)</time> <span class="task-zone">· '
                      r'(?:\d{4}-\d\d-\d\d )?09:00 Asia/Shanghai</span>', page)
    assert len(runs) == 5 and {hour for _, hour in runs} <= {"02", "03"}
    set_zone(app, "Asia/Shanghai")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "Next runs, in Asia/Shanghai" in page and page.count("09:00 CST</time>") == 5
    assert "task-zone" not in page  # the task's zone is the viewer's: said once


def test_without_a_zone_times_are_utc_and_the_page_offers_the_browser_its_zone_once(app, signed_in):
    task_id = shanghai_daily(app)
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "Next runs, in UTC" in page and page.count("01:00 UTC</time>") == 5
    assert 'id="detect-zone"' in page
    sent = signed_in.post("/account/timezone", data={"csrf_token": csrf_token(page), "detected": "1",
                                                     "timezone": "America/New_York"})
    assert sent.status_code == 204 and zone_of(app) == "America/New_York"
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'id="detect-zone"' not in page and "Next runs, in America/New_York" in page
    # A detected zone never overrides one already set.
    signed_in.post("/account/timezone", data={"csrf_token": csrf_token(page), "detected": "1", "timezone": "Asia/Tokyo"})
    assert zone_of(app) == "America/New_York"



def sign_in_from(client, zone):
    page = client.get("/login").get_data(as_text=True)
    assert 'name="timezone"' in page and "data-browser-zone" in page
    return client.post("/login", data={"email": "admin@example.com", "password": "correct horse battery",
                                       "timezone": zone, "csrf_token": csrf_token(page)})


def test_the_sign_in_keeps_the_browsers_zone_so_the_first_page_is_in_it(app, client, api_token):
    assert sign_in_from(client, "Asia/Shanghai").status_code == 302
    assert zone_of(app) == "Asia/Shanghai"
    page = client.get("/").get_data(as_text=True)
    assert 'id="detect-zone"' not in page
    # A zone already chosen is never overridden by the browser's.
    client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert sign_in_from(client, "America/New_York").status_code == 302
    assert zone_of(app) == "Asia/Shanghai"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Asia/Shanghai\x00", "Europe/Berlin\r\nX: y", "A" * 100_000,
                                  "../../etc/localtime", ""])
def test_an_unknown_zone_sent_with_the_sign_in_is_ignored(app, client, api_token, zone):
    assert sign_in_from(client, zone).status_code == 302  # signed in all the same
    assert zone_of(app) is None


def test_the_account_page_sets_the_zone_from_a_searchable_list(app, signed_in):
    page = signed_in.get("/account").get_data(as_text=True)
    assert 'list="zone-names"' in page and '<option value="Asia/Shanghai">' in page
    saved = signed_in.post("/account/timezone", data={"csrf_token": csrf_token(page), "timezone": "Asia/Shanghai"},
                           follow_redirects=True).get_data(as_text=True)
    assert "Times are now shown in Asia/Shanghai." in saved and zone_of(app) == "Asia/Shanghai"
    chinese = signed_in.get("/account", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "时区" in chinese


HOSTILE_ZONES = ["Mars/Olympus", "Asia/Shanghai\x00", "\x00", "Europe/" + "x" * 100_000, "<b>UTC</b>",
                 "Asia/Shanghai\r\nX: y", "../../etc/passwd", "utc "]


@pytest.mark.parametrize("zone", HOSTILE_ZONES, ids=range(len(HOSTILE_ZONES)))
def test_hostile_zones_on_the_account_page_get_a_field_message_and_change_nothing(app, signed_in, zone):
    set_zone(app, "Europe/Paris")
    page = signed_in.get("/account").get_data(as_text=True)
    answer = signed_in.post("/account/timezone", data={"csrf_token": csrf_token(page), "timezone": zone})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert re.search(r'id="timezone-error">Unknown time zone; use an IANA name such as Europe/Berlin.<', text)
    assert "<b>UTC</b>" not in text and zone_of(app) == "Europe/Paris"


def test_a_hostile_detected_zone_reads_as_utc_so_the_browser_stops_sending_it(app, signed_in):
    page = signed_in.get("/account").get_data(as_text=True)
    answer = signed_in.post("/account/timezone", data={"csrf_token": csrf_token(page), "detected": "1",
                                                       "timezone": "Asia/Shanghai\x00" + "x" * 10_000})
    assert answer.status_code == 204 and zone_of(app) == "UTC"


@pytest.mark.parametrize("zone", HOSTILE_ZONES, ids=range(len(HOSTILE_ZONES)))
def test_hostile_zones_on_the_task_form_get_a_field_message_and_save_nothing(app, signed_in, zone):
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    answer = signed_in.post("/tasks/new", data={"csrf_token": csrf_token(page), "name": "Brief", "prompt": "p",
                                                "schedule_type": "fixed_time", "time": "09:00", "timezone": zone})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert re.search(r'data-field="timezone">.*?Unknown time zone; use an IANA name', text, re.S)
    with app.app_context():
        assert db.session.execute(db.select(Task)).first() is None
    preview = signed_in.get("/tasks/preview", query_string={"schedule_type": "fixed_time", "time": "09:00",
                                                            "timezone": zone})
    assert preview.status_code == 200 and "Unknown time zone" in preview.get_data(as_text=True)


def test_the_task_form_offers_zones_and_a_time_input_and_defaults_to_the_viewers_zone(app, signed_in):
    set_zone(app, "Asia/Kolkata")
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    assert re.search(r'<input[^>]*id="timezone"[^>]*list="zone-names"[^>]*value="Asia/Kolkata"', page) or re.search(
        r'<input[^>]*list="zone-names"[^>]*id="timezone"[^>]*value="Asia/Kolkata"', page)
    assert re.search(r'<input[^>]*id="time"[^>]*type="time"', page) or re.search(r'<input[^>]*type="time"[^>]*id="time"', page)
    assert '<option value="Pacific/Auckland">' in page


@pytest.mark.parametrize("typed, stored", [("7:30", "07:30"), ("07:30", "07:30"), (" 9:05 ", "09:05"), ("23:59", "23:59")])
def test_a_daily_time_with_one_hour_digit_is_accepted_and_stored_as_hh_mm(app, api, typed, stored):
    answer = api.post("/tasks", json={"name": "n", "prompt": "p", "schedule_type": "fixed_time", "time": typed,
                                      "timezone": "Asia/Shanghai", "enabled": False})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["time"] == stored
    preview = api.post("/schedule/preview", json={"schedule_type": "fixed_time", "time": typed,
                                                   "timezone": "Asia/Shanghai"}).get_json()
    local = [datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=8)))
             for moment in preview["next_runs"]]
    assert {moment.strftime("%H:%M") for moment in local} == {stored}


@pytest.mark.parametrize("typed", ["7:3", "24:00", "7.30", "١٢:٣٠", "07:30:00:00", "-7:30", "7:60"])
def test_other_daily_times_are_refused(api, typed):
    answer = api.post("/tasks", json={"name": "n", "prompt": "p", "schedule_type": "fixed_time", "time": typed})
    assert answer.status_code == 422 and "HH:MM" in answer.get_json()["fields"]["time"]


def test_the_interval_preview_starts_with_the_run_at_save(app, signed_in, api):
    text = signed_in.get("/tasks/preview?schedule_type=interval&interval_minutes=60").get_data(as_text=True)
    items = re.findall(r"<li>(.*?)</li>", text)
    assert len(items) == 5 and "At once, when you save" in items[0] and "At once" not in "".join(items[1:])
    before = datetime.now(timezone.utc)
    runs = api.post("/schedule/preview", json={"schedule_type": "interval", "interval_minutes": 60}).get_json()["next_runs"]
    moments = [datetime.fromisoformat(moment.replace("Z", "+00:00")) for moment in runs]
    assert moments[0] - before < timedelta(seconds=5)
    assert [round((b - a).total_seconds()) for a, b in zip(moments, moments[1:])] == [3600] * 4
    later = signed_in.get("/tasks/preview?schedule_type=interval&interval_minutes=60&start_at=2031-01-01+00:00")
    assert "At once" not in later.get_data(as_text=True)


def test_runs_so_far_counts_every_trigger_and_refreshes_with_the_poll(app, signed_in):
    task_id = make_task(app)
    for trigger in (Trigger.IMMEDIATE, Trigger.SCHEDULED, Trigger.MANUAL):
        add_run(app, task_id, trigger=trigger)
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert "<strong data-runs-total>3</strong>" in page
    version = re.search(r'runs\?page=1&amp;v=([^"]+)"', page).group(1)
    assert signed_in.get(f"/tasks/{task_id}/runs?page=1&v={version}", headers={"HX-Request": "true"}).status_code == 204
    add_run(app, task_id, trigger=Trigger.MANUAL)
    fragment = signed_in.get(f"/tasks/{task_id}/runs?page=1&v={version}", headers={"HX-Request": "true"})
    assert "<strong data-runs-total>4</strong>" in fragment.get_data(as_text=True)


def test_a_skipped_run_reads_as_skipped_not_as_an_error(app, signed_in):
    task_id = make_task(app)
    add_run(app, task_id, status=RunStatus.SKIPPED, error="Skipped: the previous run is still running.")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert '<p class="run-note skipped">Skipped: the previous run is still running.</p>' in page
    assert "error-line" not in page and 'role="alert"' not in page


def test_an_error_names_its_class_once_with_the_model_and_endpoint(app, signed_in, swap_settings):
    task_id = make_task(app)
    add_run(app, task_id, status=RunStatus.FAILED, error_class="APIConnectionError",
            error="APIConnectionError: could not reach the model server (Connection refused)")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    line = re.search(r'<p class="error-line" role="alert">(.*?)</p>', page, re.S).group(1)
    assert line.count("APIConnectionError") == 1
    assert "could not reach the model server (Connection refused)" in line and "<code>fake-model</code>" in line


def test_an_http_error_keeps_its_status(app, signed_in):
    task_id = make_task(app)
    add_run(app, task_id, status=RunStatus.FAILED, error_class="RateLimitError",
            error="RateLimitError (HTTP 429): slow down")
    line = re.search(r'<p class="error-line" role="alert">(.*?)</p>', signed_in.get(f"/tasks/{task_id}").get_data(
        as_text=True), re.S).group(1)
    assert line.count("RateLimitError") == 1 and "(HTTP 429) slow down" in line


def test_the_newest_output_is_open_older_ones_closed_and_times_are_local(app, signed_in):
    set_zone(app, "Asia/Shanghai")
    task_id = make_task(app)
    older = add_run(app, task_id, output="older answer")
    newest = add_run(app, task_id, output="```python\nprint(1)\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nuse `x`")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert f'<details class="output" id="output-{newest}" open>' in page
    assert f'<details class="output" id="output-{older}">' in page
    assert '<code class="language-python">' in page and "<th>a</th>" in page and "<code>x</code>" in page
    assert re.search(r"<time [^>]*>\d{4}-\d\d-\d\d \d\d:\d\d CST</time>", page)
    assert not re.search(r">\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+", page)  # no raw ISO with microseconds


def test_the_dashboard_row_has_a_switch_named_by_its_action_and_sparklines_with_a_scale(app, signed_in):
    on = make_task(app, "Alpha", enabled=True, schedule_type="crontab", cron="0 9 * * *", interval_seconds=None)
    make_task(app, "Beta", enabled=False)
    for duration in (900, 1500, 1200):
        add_run(app, on, duration_ms=duration, total_tokens=40)
    page = signed_in.get("/").get_data(as_text=True)
    assert re.search(rf'role="switch" aria-checked="true" aria-label="Pause" aria-describedby="task-{on}-name"', page)
    assert re.search(r'role="switch" aria-checked="false" aria-label="Resume"', page)
    spark = re.search(r'<svg class="spark".*?</svg>', page, re.S).group(0)
    assert '<text class="tick"' in spark and ">1.5k<" in spark and ">900<" in spark
    assert re.findall(r"<circle [^>]*><title>Duration \(ms\): ([\d,]+) \(\d/3\)</title>", spark) == ["900", "1,500", "1,200"]
