"""Headless Chromium: change your password, an admin resets a viewer's, and the API docs page under the CSP."""
import pytest

from tests.conftest import issue_api_token
from tests.web.test_web_browser import page, server, shot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def sign_in(page, server, email, password):  # noqa: F811
    from playwright.sync_api import expect

    page.goto(server + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()


def sign_out(page):
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")


def test_change_password_on_the_account_page(server, page, api_token):  # noqa: F811
    from playwright.sync_api import expect

    sign_in(page, server, "admin@example.com", "correct horse battery")
    page.get_by_role("link", name="Account").click()
    page.get_by_label("Current password").fill("wrong one")
    page.get_by_label("New password", exact=True).fill("my new password")
    page.get_by_label("New password again").fill("my new password")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("The current password is not right.")).to_be_visible()

    page.get_by_label("Current password").fill("correct horse battery")
    page.get_by_label("New password", exact=True).fill("my new password")
    page.get_by_label("New password again").fill("my new password")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Password changed.")).to_be_visible()
    shot(page, "account-password-changed")
    sign_out(page)
    sign_in(page, server, "admin@example.com", "my new password")
    # The refused change answered 422, as a refused form does; nothing else went wrong.
    assert [error for error in page.errors if "status of 422" not in error] == []


def test_an_admin_resets_a_viewers_password_and_the_viewer_signs_in(app, server, page, api_token):  # noqa: F811
    from playwright.sync_api import expect

    issue_api_token(app, "viewer@example.com", "forgotten password", role="viewer")
    sign_in(page, server, "admin@example.com", "correct horse battery")
    page.get_by_role("link", name="Users").click()
    page.get_by_label("New password for viewer@example.com").fill("given by the admin")
    page.locator("tr", has_text="viewer@example.com").get_by_role("button", name="Reset password").click()
    expect(page.get_by_text("New password set for viewer@example.com")).to_be_visible()
    shot(page, "users-reset-password")
    sign_out(page)
    sign_in(page, server, "viewer@example.com", "given by the admin")
    expect(page.get_by_role("link", name="Users")).to_have_count(0)  # a viewer manages no one
    assert page.errors == []


def test_api_docs_render_with_no_csp_violation(server, page, api_token):  # noqa: F811
    from playwright.sync_api import expect

    console = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    sign_in(page, server, "admin@example.com", "correct horse battery")
    page.get_by_role("link", name="API docs").click()
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("promptbeat")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/api/tasks").first).to_be_visible()
    shot(page, "api-docs")
    violations = [line for line in console if "Content Security Policy" in line or "Refused to" in line]
    assert violations == [], violations
    assert page.errors == []
