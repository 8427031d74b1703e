"""`python3 dev.py start --demo` from scratch: within a minute a new user signs in and sees runs and a failure."""
import re
import signal
import subprocess

import pytest

from tests.services import wait_for
from tests.system.test_dev import DevStart
from tests.web.test_web_browser import page, server, shot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SIGN_IN = re.compile(r"\[dev\] sign in: (\S+)\n\[dev\]   email:    (\S+)\n\[dev\]   password: (\S+)   \(kept in (\S+)")


def dev_lines(output):
    return [line for line in output.splitlines() if line.startswith("[dev] ")]


def test_the_demo_shows_runs_and_a_failure_on_the_dashboard(role_environ, tmp_path, page):  # noqa: F811
    from playwright.sync_api import expect

    dev = DevStart(role_environ, tmp_path / "dev.log", "--demo", PROMPTBEAT_DEV_INSTANCE=str(tmp_path / "instance"),
                   WORKER_CONCURRENCY="4")
    try:
        wait_for(lambda: SIGN_IN.search(dev.output()), 120, "dev.py start --demo to print how to sign in")
        output = dev.output()
        url, email, password, kept_in = SIGN_IN.search(output).groups()
        # How to sign in comes last of what dev.py itself prints, after the addresses.
        assert dev_lines(output)[-3:][0].startswith("[dev] sign in:"), dev_lines(output)[-6:]
        assert "[dev] demo:    example tasks run against the fake model server" in output
        assert kept_in == str(tmp_path / "instance" / "admin_credentials")

        page.goto(url)
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
        for name in ("Demo: every minute", "Demo: daily at 09:00", "Demo: weekdays 09:00 in Shanghai"):
            expect(page.locator("tr", has_text=name)).to_be_visible()

        def shows(name, status):
            page.reload()
            return page.locator("tr", has_text=name).locator(f".status.{status}").count() == 1

        wait_for(lambda: shows("Demo: every minute", "success"), 60, "the interval task's first run")
        wait_for(lambda: shows("Demo: failing endpoint", "failed"), 60, "the failing task's run")
        shot(page, "demo-dashboard")
        assert page.errors == []
    finally:
        if dev.process.poll() is None:
            dev.process.send_signal(signal.SIGINT)
            try:
                dev.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass  # close() kills it
        dev.close()
