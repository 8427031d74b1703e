"""Headless Chromium walks through the UI against a real HTTP server, worker and beat."""
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import _missing

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CHROMIUM = os.environ.get("PROMPTBEAT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def server(app):
    """The app served over real HTTP on 127.0.0.1, in a thread."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def page(server):
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium, or set PROMPTBEAT_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 860})
        tab = context.new_page()
        errors = []
        tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
        tab.set_default_timeout(15_000)
        tab.errors = errors
        yield tab
        context.close()
        browser.close()


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_in_create_watch_run_read_output_switch_language_disable_sign_out(server, page, api_token, live_roles):
    from playwright.sync_api import expect

    # 1. signs in
    page.goto(server + "/")
    expect(page).to_have_url(server + "/login?next=%2F")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    shot(page, "1-sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

    # 2. creates an interval task, watching the live schedule preview on the way
    page.get_by_role("link", name="New task").first.click()
    page.get_by_label("Name", exact=True).fill("Browser check")
    page.get_by_label("Prompt", exact=True).fill("Say **hello** to the browser")
    page.locator(".seg", has_text="Cron expression").click()
    page.locator("#cron").fill("30 8 * * 1-5")
    expect(page.locator("#schedule-preview")).to_contain_text("At 08:30, Monday through Friday")
    page.locator(".seg", has_text="Every N minutes").click()
    page.locator("#interval_minutes").fill("45")
    expect(page.locator("#schedule-preview")).to_contain_text("Every 45 minutes")
    shot(page, "2-form")
    page.get_by_role("button", name="Create task").click()
    expect(page.get_by_role("heading", name="Browser check")).to_be_visible()

    # 3. sees its immediate run appear and finish without reloading
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("tr.run[data-status=success]")).to_have_count(1, timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    expect(page.locator("tr.run").first).to_contain_text("immediate")
    shot(page, "3-run-finished")

    # 4. opens the output, rendered as Markdown
    page.locator("details.output summary").first.click()
    expect(page.locator(".markdown strong")).to_have_text("hello")
    shot(page, "4-output")

    # 5. switches the language
    page.select_option("#language-select", "zh_Hans")
    expect(page.get_by_role("link", name="新建任务")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    shot(page, "5-chinese")

    # 6. disables the task (from the dashboard, in Chinese)
    page.get_by_role("link", name="任务", exact=True).click()
    row = page.locator("tr[data-task-id]", has_text="Browser check")
    row.get_by_role("switch").click()
    expect(page.locator("tr[data-task-id]", has_text="Browser check").get_by_role("switch")).to_have_attribute(
        "aria-checked", "false")
    shot(page, "6-disabled")

    # 7. signs out
    page.get_by_role("button", name="退出登录").click()
    expect(page.locator("input[name=email]")).to_be_visible()
    shot(page, "7-signed-out")
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors


def test_a_crafted_link_opened_by_a_signed_in_admin_changes_nothing(app, server, page, api_token):
    from urllib.parse import urlencode

    from playwright.sync_api import expect

    from promptbeat.extensions import db
    from promptbeat.models import Task, utcnow

    with app.app_context():
        task = Task(name="Target", prompt="p", model="fake-model", schedule_type="crontab", cron="0 9 * * *",
                    timezone="UTC", enabled=True, anchor_at=utcnow())
        db.session.add(task)
        db.session.commit()
        task_id = task.id
    page.goto(server + "/login")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    # htmx read its hardening from the page's htmx-config meta tag.
    assert page.evaluate("[htmx.config.selfRequestsOnly, htmx.config.allowScriptTags, htmx.config.allowEval]") == [
        True, False, False]
    # The strongest attacker: one who already holds the session's CSRF token. The page's own htmx,
    # loaded by a script tag the CSP allows ('self'), would post the pause as soon as it loads.
    page.goto(server + "/account")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    payload = (f'<script src="/static/vendor/htmx.min.js"></script>'
               f'<form id="attack" hx-post="/tasks/{task_id}/disable" hx-trigger="load">'
               f'<input name="csrf_token" value="{token}"><input name="note" value="paused by a link"></form>')
    links = [
        "/tasks/preview?" + urlencode({"schedule_type": "fixed_time", "time": "09:00", "timezone": payload}),
        "/tasks/preview?" + urlencode({"schedule_type": "crontab", "cron": payload}),
        "/?" + urlencode({"q": payload}),
        f"/tasks/{task_id}?" + urlencode({"page": payload}),
    ]
    for link in links:
        page.goto(server + link)
        page.wait_for_load_state("networkidle")
        with app.app_context():
            task = db.session.get(Task, task_id)
            assert (task.enabled, task.pause_note) == (True, None), f"{link} paused the task"
        expect(page.locator("#attack")).to_have_count(0)
        if "timezone=" in link:
            expect(page.locator(".field-error").first).to_contain_text("Unknown time zone")  # the input not echoed
            shot(page, "crafted-link")
        if link.startswith("/?"):
            # The search kept (cut to its length limit) as text in the field, not as markup on the page.
            expect(page.locator("input[name=q]")).to_have_value(re.compile("^" + re.escape(payload[:60])))
