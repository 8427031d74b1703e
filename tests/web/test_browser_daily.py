"""Headless Chromium in another zone and at narrow widths: local times, the zone picker, the dashboard's actions."""
import re
import shutil
import time
from pathlib import Path

import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, User, utcnow
from promptbeat.runs.states import RunStatus
from tests.conftest import _missing
from tests.web.test_web_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, server  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium, or set PROMPTBEAT_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_tab(browser, zone="UTC", width=1280, height=860):
    context = browser.new_context(locale="en-US", timezone_id=zone, viewport={"width": width, "height": height})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.errors = []
    tab.on("console", lambda message: message.type == "error" and tab.errors.append(message.text))
    return tab


def sign_in(tab, server):
    from playwright.sync_api import expect

    tab.goto(server + "/login")
    tab.get_by_label("Email").fill("admin@example.com")
    tab.get_by_label("Password").fill("correct horse battery")
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.get_by_role("heading", name="Tasks")).to_be_visible()


def wait_for_zone(app, zone, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        with app.app_context():
            stored = db.session.execute(db.select(User.timezone).filter_by(email="admin@example.com")).scalar_one()
        if stored == zone:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"the browser's zone was not stored: {stored!r}")


def test_a_task_made_in_shanghai_shows_nine_local_and_the_viewers_own_zone(app, server, browser, api_token):
    from playwright.sync_api import expect

    tab = open_tab(browser, zone="Europe/Berlin")
    sign_in(tab, server)
    # The sign-in carried the browser's zone: the first page is already in it, with nothing to reload.
    wait_for_zone(app, "Europe/Berlin", timeout=0)
    expect(tab.locator("#detect-zone")).to_have_count(0)
    tab.get_by_role("link", name="New task").first.click()
    expect(tab.locator("#timezone")).to_have_value("Europe/Berlin")  # the viewer's zone by default
    tab.get_by_label("Name", exact=True).fill("Shanghai morning")
    tab.get_by_label("Prompt", exact=True).fill("Good morning")
    tab.locator(".seg", has_text="Every day at").click()
    assert tab.locator("#time").get_attribute("type") == "time"
    tab.locator("#time").fill("09:00")
    tab.locator("#timezone").fill("Asia/Shanghai")
    # The zone list the browser searches: every IANA name, Shanghai among them.
    assert tab.locator("#zone-names option[value='Asia/Shanghai']").count() == 1
    expect(tab.locator("#schedule-preview")).to_contain_text("Every day at 09:00 (Asia/Shanghai)")
    expect(tab.locator("#schedule-preview")).to_contain_text("Next runs, in Europe/Berlin")
    expect(tab.locator("#schedule-preview .task-zone").first).to_contain_text("09:00 Asia/Shanghai")
    tab.get_by_role("button", name="Create task").click()
    expect(tab.get_by_role("heading", name="Shanghai morning")).to_be_visible()
    expect(tab.get_by_role("heading", name="Next runs, in Europe/Berlin")).to_be_visible()
    first = tab.locator("ol.times li").first
    # 09:00 in Shanghai is 02:00 in Berlin in winter (03:00 in summer), with Shanghai's time beside it.
    expect(first.locator("time")).to_have_text(re.compile(r"\d{4}-\d\d-\d\d 0[23]:00 CES?T"))
    expect(first.locator(".task-zone")).to_contain_text("09:00 Asia/Shanghai")
    tab.screenshot(path=str(ARTIFACTS / "zone-shanghai-task-in-berlin.png"), full_page=True)

    # A viewer in Shanghai reads 09:00 with no second zone.
    other = open_tab(browser, zone="Asia/Shanghai")
    with app.app_context():
        user = db.session.execute(db.select(User).filter_by(email="admin@example.com")).scalar_one()
        user.timezone = None
        db.session.commit()
    sign_in(other, server)
    wait_for_zone(app, "Asia/Shanghai")
    other.get_by_role("link", name="Shanghai morning").click()
    expect(other.locator("ol.times li").first.locator("time")).to_have_text(
        re.compile(r"\d{4}-\d\d-\d\d 09:00 CST"))
    expect(other.locator("ol.times .task-zone")).to_have_count(0)
    assert not [e for e in tab.errors + other.errors if "Content Security Policy" in e]


def make_tasks(app, count):
    """count tasks with long names, half of them paused, each with a few runs for its sparklines."""
    with app.app_context():
        for number in range(count):
            task = Task(name=f"Daily digest of a rather long feed name {number:02d}", prompt="p",
                        model="gpt-4o-mini-2024-07-18", schedule_type="crontab", cron="*/15 9-17 * * 1-5",
                        timezone="America/Los_Angeles", enabled=number % 2 == 0, anchor_at=utcnow())
            db.session.add(task)
            db.session.flush()
            for run in range(number % 4 * 3):
                failed = run % 5 == 4
                db.session.add(Execution(
                    task_id=task.id, trigger=Trigger.SCHEDULED, model=task.model, started_at=utcnow(),
                    finished_at=utcnow(), status=RunStatus.FAILED if failed else RunStatus.SUCCESS,
                    error="APITimeoutError: no answer within 120 s" if failed else None,
                    duration_ms=None if failed else 800 + (run * 370 + number * 90) % 1900,
                    total_tokens=None if failed else 120 + (run * 53) % 400))
        db.session.commit()


@pytest.mark.parametrize("width, height", [(800, 900), (390, 844)], ids=["800px", "phone"])
def test_the_dashboard_keeps_every_action_in_view_at_800_px_and_on_a_phone(app, server, browser, api_token,
                                                                           width, height):
    from playwright.sync_api import expect

    make_tasks(app, 12)
    tab = open_tab(browser, width=width, height=height)
    sign_in(tab, server)
    rows = tab.locator("tr[data-task-id]")
    expect(rows).to_have_count(12)
    tab.screenshot(path=str(ARTIFACTS / f"dashboard-{width}px.png"), full_page=True)
    assert tab.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    for index in range(rows.count()):
        row = rows.nth(index)
        controls = row.locator(".actions button, .actions a")
        assert controls.count() == 3
        boxes = [controls.nth(number).bounding_box() for number in range(3)]
        for box in boxes:
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (index, boxes)
        middles = [box["y"] + box["height"] / 2 for box in boxes]
        assert max(middles) - min(middles) < 4, f"the actions wrap onto more than one line: {boxes}"
    # The switch says what a click does, and a click does it.
    first = rows.first
    switch = first.get_by_role("switch")
    expect(switch).to_have_attribute("aria-checked", "true")
    expect(switch).to_have_accessible_name("Pause")
    switch.click()
    expect(tab.locator("tr[data-task-id]").first.get_by_role("switch")).to_have_attribute("aria-checked", "false")
    expect(tab.locator("tr[data-task-id]").first.get_by_role("switch")).to_have_accessible_name("Resume")
