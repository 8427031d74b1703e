"""The pages: creating and editing tasks through the form, and the one-click actions."""
import re
from html import unescape

from promptbeat.scheduling.entries import TaskEntry
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from promptbeat.scheduling.schedules import TaskSchedule
from tests.conftest import csrf_token


def form_data(client, path, **values):
    page = client.get(path).get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), "name": "Daily digest", "prompt": "Summarise the news",
            "system_prompt": "", "model": "fake-model", "temperature": "0.7", "max_tokens": "",
            "schedule_type": "interval", "interval_minutes": "30", "time": "", "cron": "", "timezone": "UTC",
            "enabled": "y"}
    data.update(values)
    return {k: v for k, v in data.items() if v is not None}


def text(response):
    return unescape(response.get_data(as_text=True))


def flashes(page):
    return [unescape(m) for m in re.findall(r'<p class="flash success" role="status">(.*?)</p>', page)]


def input_value(page, name):
    match = re.search(rf'<input[^>]* name="{name}"[^>]* value="([^"]*)"', page)
    return unescape(match.group(1)) if match else None


def created_task_id(response):
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.fullmatch(r"/tasks/(\d+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def load_task(app, task_id):
    with app.app_context():
        task = db.session.get(Task, task_id)
        db.session.expunge_all()
        return task


def executions_of(app, task_id):
    with app.app_context():
        rows = db.session.execute(db.select(Execution).filter_by(task_id=task_id)).scalars().all()
        db.session.expunge_all()
        return rows


def test_new_task_page_offers_the_default_model(signed_in):
    response = signed_in.get("/tasks/new")
    assert response.status_code == 200
    page = text(response)
    assert "<h1>New task</h1>" in page
    assert input_value(page, "model") == "fake-model"
    assert input_value(page, "interval_minutes") == "30"
    assert input_value(page, "timezone") == "UTC"
    assert csrf_token(page)


def test_create_an_interval_task(app, signed_in, redis_client):
    response = signed_in.post("/tasks/new", data=form_data(signed_in, "/tasks/new", interval_minutes="15"))
    task_id = created_task_id(response)

    task = load_task(app, task_id)
    assert (task.name, task.prompt, task.interval_seconds, task.enabled) == ("Daily digest", "Summarise the news",
                                                                             900, True)
    assert task.system_prompt is None and task.max_tokens is None
    assert redis_client.zscore("promptbeat::schedule", f"promptbeat:task:{task_id}") is not None
    (run,) = executions_of(app, task_id)
    assert run.trigger == "immediate"

    page = text(signed_in.get(f"/tasks/{task_id}"))
    assert flashes(page) == ["“Daily digest” created; its first run has started."]
    assert "Every 15 minutes" in page


def test_create_a_fixed_time_task_in_a_zone(app, signed_in):
    data = form_data(signed_in, "/tasks/new", name="Morning note", schedule_type="fixed_time", time="09:00",
                     timezone="Asia/Shanghai", interval_minutes="")
    task_id = created_task_id(signed_in.post("/tasks/new", data=data))

    task = load_task(app, task_id)
    assert (task.schedule_type, task.fixed_time, task.timezone, task.interval_seconds) == (
        "fixed_time", "09:00", "Asia/Shanghai", None)
    assert executions_of(app, task_id) == []
    schedule = TaskEntry.from_key(f"promptbeat:task:{task_id}", app=app.extensions["celery"]).schedule
    assert schedule == TaskSchedule("cron", expr="0 9 * * *", tz="Asia/Shanghai")

    page = text(signed_in.get(f"/tasks/{task_id}"))
    assert flashes(page) == ["“Morning note” created; next run every day at 09:00 (Asia/Shanghai)."]
    assert "Every day at 09:00 (Asia/Shanghai)" in page
    # 09:00 in Shanghai is 01:00 UTC, and the page lists the next five.
    assert len(re.findall(r"<li><time datetime=\"[^\"]+\">\d{4}-\d\d-\d\d 01:00 UTC</time>", page)) == 5


def test_create_a_disabled_task(app, signed_in, redis_client):
    data = form_data(signed_in, "/tasks/new", enabled=None)
    task_id = created_task_id(signed_in.post("/tasks/new", data=data))
    assert load_task(app, task_id).enabled is False
    assert executions_of(app, task_id) == []
    assert not redis_client.exists(f"promptbeat:task:{task_id}")
    page = text(signed_in.get(f"/tasks/{task_id}"))
    assert flashes(page) == ["“Daily digest” created; it is disabled and will not run."]
    assert "Not scheduled while disabled." in page


def test_edit_page_shows_the_tasks_values(api, signed_in):
    task = api.post("/tasks", json={"name": "Feed check", "prompt": "Summarise the feed", "system_prompt": "Be terse",
                                    "temperature": 0.3, "max_tokens": 200, "interval_seconds": 90,
                                    "enabled": False}).get_json()
    page = text(signed_in.get(f"/tasks/{task['id']}/edit"))
    assert "<h1>Edit “Feed check”</h1>" in page
    assert input_value(page, "name") == "Feed check"
    assert input_value(page, "temperature") == "0.3"
    assert input_value(page, "max_tokens") == "200"
    # An interval set through the API in seconds shows as a fraction of a minute.
    assert input_value(page, "interval_minutes") == "1.5"
    assert re.search(r'name="prompt"[^>]*>\s*Summarise the feed</textarea>', page)
    assert re.search(r'name="system_prompt"[^>]*>\s*Be terse</textarea>', page)
    assert not re.search(r'name="enabled"[^>]*checked', page)


def test_saving_the_edit_form_unchanged_keeps_an_interval_in_seconds(app, api, signed_in):
    task = api.post("/tasks", json={"name": "Feed check", "prompt": "p", "interval_seconds": 90,
                                    "enabled": False}).get_json()
    edit = f"/tasks/{task['id']}/edit"
    page = signed_in.get(edit).get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), "name": "Feed check", "prompt": "p", "system_prompt": "",
            "model": "fake-model", "temperature": "0.7", "max_tokens": "", "schedule_type": "interval",
            "interval_minutes": input_value(page, "interval_minutes"), "time": "", "cron": "", "timezone": "UTC"}
    response = signed_in.post(edit, data=data)
    assert response.status_code == 302
    assert load_task(app, task["id"]).interval_seconds == 90


def test_edit_changes_the_schedule_and_the_beat_entry(app, api, signed_in):
    task = api.post("/tasks", json={"name": "Weekday briefing", "prompt": "Brief me", "schedule_type": "crontab",
                                    "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}).get_json()
    edit = f"/tasks/{task['id']}/edit"
    data = form_data(signed_in, edit, name="Weekend briefing", prompt="Brief me", schedule_type="crontab",
                     cron="0 10 * * 6,0", timezone="Europe/Berlin", interval_minutes="")
    response = signed_in.post(edit, data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/tasks/{task['id']}"

    saved = load_task(app, task["id"])
    assert (saved.name, saved.cron) == ("Weekend briefing", "0 10 * * 6,0")
    entry = TaskEntry.from_key(f"promptbeat:task:{task['id']}", app=app.extensions["celery"])
    assert entry.schedule == TaskSchedule("cron", expr="0 10 * * 6,0", tz="Europe/Berlin")
    page = text(signed_in.get(f"/tasks/{task['id']}"))
    assert flashes(page) == ["“Weekend briefing” saved; next run at 10:00, only on Saturday and Sunday (Europe/Berlin)."]
    assert executions_of(app, task["id"]) == []


def test_task_list(api, signed_in):
    assert "No tasks yet." in text(signed_in.get("/"))
    api.post("/tasks", json={"name": "Morning note", "prompt": "p", "schedule_type": "fixed_time", "time": "09:00",
                             "timezone": "Asia/Shanghai"})
    api.post("/tasks", json={"name": "Feed check", "prompt": "p", "interval_seconds": 90, "enabled": False})
    page = text(signed_in.get("/"))
    rows = re.findall(r"<tr data-task-id=\"\d+\">(.*?)</tr>", page, re.S)
    assert len(rows) == 2
    # Sorted by name, with the schedule in words and the state.
    assert "Feed check" in rows[0] and "Every 90 seconds" in rows[0] and 'aria-checked="false"' in rows[0]
    assert "Morning note" in rows[1] and "Every day at 09:00 (Asia/Shanghai)" in rows[1]
    assert 'aria-checked="true"' in rows[1]
    assert re.search(r"\d{4}-\d\d-\d\d 01:00 UTC · 09:00 Asia/Shanghai", rows[1])


def post_action(client, task_id, action, back=None):
    page = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    return client.post(f"/tasks/{task_id}/{action}", data={"csrf_token": csrf_token(page), "next": back or ""})


def test_disable_enable_and_run_buttons(app, api, signed_in, redis_client):
    task_id = api.post("/tasks", json={"name": "Morning note", "prompt": "p", "schedule_type": "fixed_time",
                                       "time": "09:00"}).get_json()["id"]
    key = f"promptbeat:task:{task_id}"

    response = post_action(signed_in, task_id, "disable")
    assert response.headers["Location"] == f"/tasks/{task_id}"
    assert load_task(app, task_id).enabled is False
    assert not redis_client.exists(key)
    page = text(signed_in.get(f"/tasks/{task_id}"))
    assert flashes(page) == ["“Morning note” disabled; it will not run until you enable it."]

    response = post_action(signed_in, task_id, "enable", back="/?status=disabled&page=2")
    assert response.headers["Location"] == "/?status=disabled&page=2"
    assert load_task(app, task_id).enabled is True
    assert redis_client.exists(key)

    post_action(signed_in, task_id, "run")
    (run,) = executions_of(app, task_id)
    assert run.trigger == "manual"
    page = text(signed_in.get(f"/tasks/{task_id}"))
    assert flashes(page) == ["“Morning note” queued to run now."]
    assert f'id="run-{run.id}"' in page


def test_row_actions_return_to_the_filtered_list_and_never_off_site(app, api, signed_in):
    task_id = api.post("/tasks", json={"name": "Row", "prompt": "p", "interval_seconds": 600,
                                       "enabled": False}).get_json()["id"]
    listing = signed_in.get("/?status=disabled&sort=newest").get_data(as_text=True)
    back = re.search(r'name="next" value="([^"]+)"', listing).group(1)
    assert back.replace("&amp;", "&") in ("/?status=disabled&sort=newest", "/?sort=newest&status=disabled")
    for target in ["//evil.example", "/\t/evil.example", "/\\evil.example", "https://evil.example/"]:
        response = post_action(signed_in, task_id, "run", back=target)
        assert response.headers["Location"] == f"/tasks/{task_id}", target


def test_delete_button(app, api, signed_in, redis_client):
    task_id = api.post("/tasks", json={"name": "Feed check", "prompt": "p", "interval_seconds": 60}).get_json()["id"]
    response = post_action(signed_in, task_id, "delete")
    assert response.headers["Location"] == "/"
    assert load_task(app, task_id) is None
    assert executions_of(app, task_id) == []
    assert not redis_client.exists(f"promptbeat:task:{task_id}")
    page = text(signed_in.get("/"))
    assert flashes(page) == ["“Feed check” deleted."]
    assert signed_in.get(f"/tasks/{task_id}").status_code == 404


def test_detail_page_shows_runs_with_output_and_errors(app, api, signed_in):
    task_id = api.post("/tasks", json={"name": "Feed check", "prompt": "p", "interval_seconds": 60,
                                       "enabled": False}).get_json()["id"]
    with app.app_context():
        db.session.add_all([
            Execution(task_id=task_id, trigger="scheduled", status="success", output="The feed is <quiet>.",
                      duration_ms=120, prompt_tokens=5, completion_tokens=7, total_tokens=12),
            Execution(task_id=task_id, trigger="manual", status="failed",
                      error="RateLimitError (HTTP 429): Rate limit reached for requests."),
        ])
        db.session.commit()
    response = signed_in.get(f"/tasks/{task_id}")
    raw = response.get_data(as_text=True)
    assert "The feed is &lt;quiet&gt;." in raw  # escaped, not markup
    page = unescape(raw)
    assert "120 ms" in page and "5 + 7 tokens" in page
    assert '>RateLimitError</code> <span class="error">(HTTP 429) Rate limit reached for requests.<' in page
    statuses = re.findall(r'<span class="status (\w+)">', raw)
    assert statuses == ["failed", "success"]  # newest first
