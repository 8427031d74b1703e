"""The form's Test run in headless Chromium: the answer appears inline as text, and nothing is saved."""
import pytest

from promptbeat.extensions import db
from promptbeat.models import Task
from tests.outputs.fakes import script_answers
from tests.web.test_web_browser import page, server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_test_run_shows_the_answer_and_schema_errors_inline(app, server, page, api_token, fake_llm):  # noqa: F811
    from playwright.sync_api import expect

    page.goto(server + "/login")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.goto(server + "/tasks/new")
    page.get_by_label("Name", exact=True).fill("Tea")
    page.get_by_label("Prompt", exact=True).fill("Price of tea on {{ weekday }}?")
    page.locator("#output_schema").fill('{"type": "object", "required": ["price"]}')

    script_answers(fake_llm, '{"price": 3, "note": "<img src=x onerror=alert(1)>"}', '{"cost": 1}')
    page.get_by_role("button", name="Test run").click()
    expect(page.locator(".test-output")).to_contain_text('"price": 3')
    # Shown as text: the markup in the answer is not an element on the page.
    expect(page.locator(".test-output")).to_contain_text("<img src=x onerror=alert(1)>")
    assert page.locator(".test-result img").count() == 0
    expect(page.locator(".test-error")).to_be_hidden()

    page.get_by_role("button", name="Test run").click()
    expect(page.locator(".test-error")).to_contain_text("The answer does not match the schema at $: 'price' is a")
    expect(page.locator(".test-output")).to_contain_text('{"cost": 1}')

    page.locator("#output_schema").fill("{broken")
    page.get_by_role("button", name="Test run").click()
    expect(page.locator(".test-error")).to_contain_text("output_schema: Not valid JSON")
    # The 422 of the last test run (and a missing favicon) are logged as failed loads; no script failed.
    assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []
    with app.app_context():
        assert db.session.query(Task).count() == 0
