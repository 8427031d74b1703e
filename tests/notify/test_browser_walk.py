"""In Chromium, against a real worker and SMTP server: a task with a schema that notifies an email channel on change."""
import time

import pytest

from tests.notify.conftest import WORKER_SMTP_ENV
from tests.outputs.fakes import script_answers
from tests.services import wait_for
from tests.web.test_web_browser import page, server, shot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
WORKER_ENV = WORKER_SMTP_ENV


@pytest.mark.parametrize("live_roles", [WORKER_ENV], indirect=True)
def test_a_changed_answer_is_shown_side_by_side_and_mailed_once(server, page, api_token, fake_llm, mailbox,
                                                                live_roles):  # noqa: F811
    from playwright.sync_api import expect

    page.goto(server + "/login")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()

    # An email channel, defined once on the Channels page.
    page.goto(server + "/channels/")
    page.get_by_label("Name").last.fill("Ops mail")
    page.get_by_label("Kind").select_option("email")
    page.get_by_label("Recipients (email; one per line)").fill("ops@example.com")
    page.get_by_role("button", name="Save channel").click()
    expect(page.locator("article", has_text="Ops mail")).to_be_visible()

    # A task whose answer must be JSON with a price, telling that channel only when the answer changes.
    script_answers(fake_llm, '{"price": 3}', '{"price": 4}')
    page.goto(server + "/tasks/new")
    page.get_by_label("Name", exact=True).fill("Tea price")
    page.get_by_label("Prompt", exact=True).fill("The price of tea, as JSON")
    page.locator(".seg", has_text="Every N minutes").click()
    page.locator("#interval_minutes").fill("45")
    page.locator("#output_schema").fill('{"type": "object", "properties": {"price": {"type": "number"}}, '
                                        '"required": ["price"]}')
    page.get_by_label("Every run").uncheck()
    page.get_by_label("The output changed (not the first run)").check()
    page.get_by_label("Ops mail").check()
    page.get_by_role("button", name="Create task").click()
    expect(page.get_by_role("heading", name="Tea price")).to_be_visible()

    # The run at save is the first: nothing to compare with, so nothing is sent.
    expect(page.locator("tr.run[data-status=success]")).to_have_count(1, timeout=30_000)
    page.get_by_role("button", name="Run now", exact=True).click()
    expect(page.locator("tr.run[data-status=success]")).to_have_count(2, timeout=30_000)
    shot(page, "notify-1-two-runs")

    # The change is on the timeline; its link opens both answers side by side.
    page.reload()
    page.locator(".timeline a").first.click()
    expect(page.locator("table.side-by-side tr.replace td").first).to_contain_text('"price": 3')
    expect(page.locator("table.side-by-side tr.replace td").last).to_contain_text('"price": 4')
    expect(page.locator("pre.diff")).to_contain_text("$.price: 3 → 4")
    shot(page, "notify-2-compare")

    wait_for(lambda: mailbox.messages, 30, "the change's email")
    time.sleep(3)  # a second email (for the first run, or a duplicate delivery) would arrive by now
    ((_, recipients, message),) = mailbox.messages
    assert recipients == ["ops@example.com"]
    assert message["Subject"] == "[promptbeat] Tea price: success"
    text = message.get_body(("plain",)).get_content()
    assert '"price": 4' in text and "$.price: 3 → 4" in text
    assert [e for e in page.errors if "Content Security Policy" in e] == []
