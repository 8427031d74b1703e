"""The pages: dashboard, task page, form preview, Markdown safety, languages, live fragments."""
import re

import pytest

from promptbeat import service
from promptbeat.runs import message_ids
from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, utcnow
from promptbeat.runs.states import RunStatus
from promptbeat.settings import ConfigError, Settings
from tests.conftest import csrf_token

XSS = "<script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>"


def make_task(app, name="Feed check", **extra):
    values = dict(name=name, prompt="Summarise", model="fake-model", schedule_type="interval",
                  interval_seconds=600, timezone="UTC", enabled=False, anchor_at=utcnow())
    values.update(extra)
    with app.app_context():
        task = Task(**values)
        db.session.add(task)
        db.session.commit()
        return task.id


def add_run(app, task_id, status="success", output=None, error=None, duration_ms=1200, tokens=30):
    with app.app_context():
        run = Execution(task_id=task_id, status=status, trigger=Trigger.SCHEDULED, model="fake-model",
                        started_at=utcnow(), finished_at=utcnow(), duration_ms=duration_ms, output=output,
                        error=error, prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2,
                        total_tokens=tokens)
        db.session.add(run)
        db.session.commit()
        return run.id


def test_dashboard_shows_schedule_words_last_run_success_rate_and_sparklines(app, signed_in):
    task_id = make_task(app, "Morning brief", schedule_type="crontab", cron="0 9 * * 1-5", interval_seconds=None,
                        timezone="Asia/Shanghai", enabled=True)
    for duration, status in [(900, "success"), (1500, "success"), (1100, "failed"), (1300, "success")]:
        add_run(app, task_id, status=status, duration_ms=duration)
    page = signed_in.get("/").get_data(as_text=True)
    row = re.search(rf'<tr data-task-id="{task_id}".*?</tr>', page, re.S).group(0)
    assert "At 09:00, Monday through Friday (Asia/Shanghai)" in row
    assert '<span class="status success">success</span>' in row and "ago" in row
    assert "75%" in row  # 3 of 4 finished runs succeeded
    assert row.count("<svg") == 2 and "polyline" in row
    assert "Run now" in row and 'role="switch"' in row


def test_dashboard_searches_filters_sorts_and_paginates(app, signed_in):
    for i in range(30):
        make_task(app, f"Report {i:02d}", enabled=i % 2 == 0)
    make_task(app, "Cron thing", schedule_type="crontab", cron="*/5 * * * *", interval_seconds=None)
    page = signed_in.get("/").get_data(as_text=True)
    assert "Page 1 of 2 · 31 tasks" in page and "Report 00" in page and "Report 29" not in page
    assert "Report 29" in signed_in.get("/?page=2").get_data(as_text=True)
    found = signed_in.get("/?q=report+1").get_data(as_text=True)
    assert re.findall(r'class="task-name[^"]*"[^>]*>([^<]+)<', found) == [f"Report {i}" for i in range(10, 20)]
    disabled = signed_in.get("/?status=disabled&q=report").get_data(as_text=True)
    assert "Report 01" in disabled and "Report 00" not in disabled
    cron = signed_in.get("/?type=crontab").get_data(as_text=True)
    assert re.findall(r'class="task-name[^"]*"[^>]*>([^<]+)<', cron) == ["Cron thing"]
    newest = signed_in.get("/?sort=newest").get_data(as_text=True)
    assert re.findall(r'class="task-name[^"]*"[^>]*>([^<]+)<', newest)[0] == "Cron thing"
    assert signed_in.get("/?q=%25").status_code == 200  # LIKE wildcards are searched literally


def test_dashboard_filters_failing_tasks(app, signed_in):
    make_task(app, "Healthy")
    failing = make_task(app, "Failing feed")
    recovered = make_task(app, "Recovered")
    with app.app_context():
        # What the worker records after runs: the count of consecutive failed scheduled runs.
        db.session.get(Task, failing).consecutive_failures = 2
        db.session.get(Task, recovered).consecutive_failures = 0
        db.session.commit()
    page = signed_in.get("/?status=failing").get_data(as_text=True)
    assert re.findall(r'class="task-name[^"]*"[^>]*>([^<]+)<', page) == ["Failing feed"]
    assert '<option value="failing" selected>' in page


def test_dashboard_fragment_answers_204_until_something_changes(app, signed_in):
    task_id = make_task(app)
    headers = {"HX-Request": "true"}
    page = signed_in.get("/").get_data(as_text=True)
    poll_url = re.search(r'id="task-table" hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert signed_in.get(poll_url, headers=headers).status_code == 204
    add_run(app, task_id)
    fresh = signed_in.get(poll_url, headers=headers)
    assert fresh.status_code == 200 and 'id="task-table"' in fresh.get_data(as_text=True)
    assert "<html" not in fresh.get_data(as_text=True)


def test_task_page_shows_settings_next_runs_history_and_charts(app, signed_in):
    task_id = make_task(app, enabled=True)
    for i in range(3):
        add_run(app, task_id, output=f"**answer {i}**", duration_ms=1000 + i * 100, tokens=20 + i)
    add_run(app, task_id, status="failed", output=None, error="Rate limited by the model server (429).")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert page.count('<li><time datetime=') == 5  # the next five runs
    assert "<strong>answer 2</strong>" in page  # Markdown rendered
    assert "Rate limited by the model server (429)." in page and 'role="alert"' in page
    assert page.count('class="chart"') == 2
    assert "Copy output" in page and "1,200 ms" in page


def test_run_history_paginates(app, signed_in):
    task_id = make_task(app)
    first = add_run(app, task_id)
    for _ in range(20):
        add_run(app, task_id)
    page1 = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert f'id="run-{first}"' not in page1 and "Page 1 of 2" in page1
    assert f'id="run-{first}"' in signed_in.get(f"/tasks/{task_id}?page=2").get_data(as_text=True)


def test_xss_in_model_output_is_inert(app, signed_in, fake_llm):
    # The fake server echoes the prompt, so this is what a hostile model answer looks like.
    task_id = make_task(app, prompt=XSS)
    add_run(app, task_id, output="echo: " + XSS)
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    body = page.split('<div class="markdown">', 1)[1].split("</div>", 1)[0]
    assert "<script" not in body and "<img" not in body and "onerror" not in body.replace("onerror=alert(1)&gt;", "")
    assert "javascript:" not in re.sub(r"&[a-z]+;", "", "".join(re.findall(r'href="([^"]*)"', body)))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # shown as text, not run
    assert "<script>alert(1)</script>" not in page


def test_form_preview_shows_words_and_next_runs_or_the_error(app, signed_in):
    ok = signed_in.get("/tasks/preview?schedule_type=crontab&cron=30+8+*+*+*&timezone=Europe/Berlin")
    text = ok.get_data(as_text=True)
    assert "At 08:30 (Europe/Berlin)" in text and text.count("<li>") == 5
    bad = signed_in.get("/tasks/preview?schedule_type=fixed_time&time=25:00").get_data(as_text=True)
    assert "Use HH:MM in 24-hour time" in bad and "<li>" not in bad


def test_form_shows_inline_errors_and_model_picker(app, signed_in):
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    assert '<datalist id="model-choices"><option value="fake-model">' in page
    response = signed_in.post("/tasks/new", data={"csrf_token": csrf_token(page), "name": "", "prompt": "x",
                                                  "schedule_type": "crontab", "cron": "bad", "timezone": "UTC"})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert re.search(r'data-field="name">.*?This field is required', text, re.S)
    assert re.search(r'data-field="cron">.*?5-field cron expression', text, re.S)
    with app.app_context():
        assert db.session.execute(db.select(Task)).first() is None


def test_chinese_from_browser_and_from_the_user_setting(app, signed_in):
    make_task(app)
    chinese = signed_in.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert '<html lang="zh-Hans">' in chinese and "新建任务" in chinese and "立即运行" in chinese
    english = signed_in.get("/", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
    assert "New task" in english and "新建任务" not in english
    token = csrf_token(english)
    signed_in.post("/account/language", data={"csrf_token": token, "language": "zh_Hans"})
    assert "新建任务" in signed_in.get("/", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
    signed_in.post("/account/language", data={"csrf_token": token, "language": ""})
    assert "New task" in signed_in.get("/", headers={"Accept-Language": "en-US"}).get_data(as_text=True)


def test_connections_page_in_chinese_for_a_user_who_chose_it(app, signed_in, fake_llm):
    from promptbeat.models import User

    with app.app_context():
        db.session.execute(db.select(User).filter_by(email="admin@example.com")).scalar_one().language = "zh_Hans"
        db.session.commit()
    english_browser = {"Accept-Language": "en-US"}  # the user's own setting wins over the browser
    empty = signed_in.get("/connections/", headers=english_browser).get_data(as_text=True)
    assert "<h1>连接</h1>" in empty and "还没有连接。" in empty and "添加连接" in empty and "保存连接" in empty
    assert "（<code>OPENAI_BASE_URL</code>）" in empty
    assert "<h1>Connections</h1>" not in empty and "No connections yet" not in empty and "Save connection" not in empty
    invalid = signed_in.post("/connections/", headers=english_browser, data={
        "csrf_token": csrf_token(empty), "name": "", "base_url": "ftp://x"}).get_data(as_text=True)
    assert "此项为必填。" in invalid and "请使用 http(s) URL" in invalid and "This field is required" not in invalid
    saved = signed_in.post("/connections/", headers=english_browser, follow_redirects=True, data={
        "csrf_token": csrf_token(empty), "name": "本地", "base_url": fake_llm.url}).get_data(as_text=True)
    assert "连接“本地”已保存。" in saved and "测试连接" in saved and "无密钥" in saved
    assert "Test connection" not in saved and "no key" not in saved
    connection_id = re.search(r'id="connection-(\d+)"', saved).group(1)
    tested = signed_in.post(f"/connections/{connection_id}/test", headers=english_browser, follow_redirects=True,
                            data={"csrf_token": csrf_token(saved)}).get_data(as_text=True)
    assert "个模型可用" in tested and "model(s) available" not in tested


def test_chinese_catalogue_is_complete_and_compiled(tmp_path):
    from pathlib import Path

    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    folder = Path(__file__).resolve().parents[2] / "web" / "translations" / "zh_Hans" / "LC_MESSAGES"
    with open(folder / "messages.po", "rb") as po_file, open(folder / "messages.mo", "rb") as mo_file:
        po, mo = read_po(po_file), read_mo(mo_file)
    untranslated = [m.id for m in po if m.id and not m.string]
    assert untranslated == []
    assert {m.id: m.string for m in po if m.id} == {m.id: m.string for m in mo if m.id}, "run pybabel compile"


def test_schedules_read_in_chinese(app, signed_in):
    make_task(app, "Hourly", interval_seconds=3600)
    make_task(app, "Weekdays", schedule_type="crontab", cron="30 8 * * 1-5", interval_seconds=None,
              timezone="Asia/Shanghai")
    page = signed_in.get("/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "每小时" in page and "（Asia/Shanghai）" in page and "Monday" not in page
    preview = signed_in.get("/tasks/preview?schedule_type=interval&interval_minutes=45",
                            headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "每 45 分钟" in preview


def test_runs_fragment_answers_204_until_a_run_appears_or_changes(app, signed_in):
    task_id = make_task(app)
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    poll_url = re.search(r'id="runs" hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert signed_in.get(poll_url).status_code == 204
    run_id = add_run(app, task_id, status="running")
    fresh = signed_in.get(poll_url)
    assert fresh.status_code == 200 and f'id="run-{run_id}" data-status="running"' in fresh.get_data(as_text=True)
    poll_url = re.search(r'id="runs" hx-get="([^"]+)"', fresh.get_data(as_text=True)).group(1).replace("&amp;", "&")
    assert signed_in.get(poll_url).status_code == 204
    with app.app_context():
        db.session.get(Execution, run_id).status = RunStatus.SUCCESS
        db.session.commit()
    assert 'data-status="success"' in signed_in.get(poll_url).get_data(as_text=True)


def test_each_run_links_to_its_flower_entry_when_flower_is_configured(app, signed_in, swap_settings):
    task_id = make_task(app)
    manual = add_run(app, task_id)
    slot = utcnow().replace(microsecond=0)
    with app.app_context():
        scheduled = Execution(task_id=task_id, status="queued", trigger=Trigger.SCHEDULED, slot=slot)
        db.session.add(scheduled)
        db.session.commit()
        scheduled = scheduled.id
    assert "This run in Flower" not in signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)

    swap_settings(flower_url="https://flower.example.com/")
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    # The message ids the web derives are the ones the API and beat publish with.
    links = re.findall(r'id="run-(\d+)".*?href="([^"]+)"', page, re.S)
    assert dict(links) == {str(manual): f"https://flower.example.com/task/{message_ids.id_for_run(manual)}",
                           str(scheduled): f"https://flower.example.com/task/{message_ids.id_for_slot(task_id, slot)}"}


@pytest.mark.parametrize("url", ["javascript:alert(1)", "flower.example.com", "//flower.example.com"])
def test_a_flower_url_that_is_not_http_is_refused_at_start(url):
    with pytest.raises(ConfigError, match="PROMPTBEAT_FLOWER_URL"):
        Settings.from_environ({"SECRET_KEY": "x", "PROMPTBEAT_FLOWER_URL": url})
