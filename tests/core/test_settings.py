"""Settings every role refuses at start: a visibility timeout that would hand a running run to a second worker."""
import os
import re
import signal
import subprocess
import sys

import pytest

from promptbeat.settings import ConfigError, Settings
from tests import compose
from tests.services import ROOT, free_port, role_env
from web import create_app

RUN_BOUND_SETTINGS = ("PROMPTBEAT_VISIBILITY_TIMEOUT", "PROMPTBEAT_MAX_RUN_SECONDS", "PROMPTBEAT_SWEEP_SECONDS",
                      "PROMPTBEAT_LOST_GRACE_SECONDS")
# A visibility timeout of half a minute under runs of up to a quarter of an hour.
SHORT_TIMEOUT = {"PROMPTBEAT_VISIBILITY_TIMEOUT": "30", "PROMPTBEAT_MAX_RUN_SECONDS": "900",
                 "PROMPTBEAT_SWEEP_SECONDS": "60", "PROMPTBEAT_LOST_GRACE_SECONDS": "30"}


def test_a_visibility_timeout_under_the_run_bound_is_refused_by_name():
    with pytest.raises(ConfigError) as refused:
        Settings.from_environ({"SECRET_KEY": "x", **SHORT_TIMEOUT})
    message = str(refused.value)
    assert all(name in message for name in RUN_BOUND_SETTINGS), message
    assert "(30 s)" in message and "900 + 60 + 30 = 990 s" in message


def test_the_visibility_timeout_must_be_greater_than_the_run_bound():
    bound = {"SECRET_KEY": "x", "PROMPTBEAT_MAX_RUN_SECONDS": "100", "PROMPTBEAT_SWEEP_SECONDS": "10",
             "PROMPTBEAT_LOST_GRACE_SECONDS": "5"}
    with pytest.raises(ConfigError, match="PROMPTBEAT_VISIBILITY_TIMEOUT"):
        Settings.from_environ({**bound, "PROMPTBEAT_VISIBILITY_TIMEOUT": "115"})
    assert Settings.from_environ({**bound, "PROMPTBEAT_VISIBILITY_TIMEOUT": "116"}).visibility_timeout == 116


def test_the_shipped_defaults_pass_the_check():
    assert Settings(secret_key="x").visibility_timeout == 3600
    example = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    assert Settings.from_environ({**example, "SECRET_KEY": "x"}).max_run_seconds == 900
    document = compose.load()
    shell = {"SECRET_KEY": "x", "POSTGRES_PASSWORD": "x", "FLOWER_BASIC_AUTH": "a:b", "PROMPTBEAT_FERNET_KEYS": "k"}
    for name in ("web", "worker", "beat"):
        environment = compose.service(document, name, shell)["environment"]
        assert Settings.from_environ(environment).visibility_timeout == 3600, name


def test_the_web_app_factory_refuses_a_short_visibility_timeout(monkeypatch):
    for name, value in {"SECRET_KEY": "x", **SHORT_TIMEOUT}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape("PROMPTBEAT_VISIBILITY_TIMEOUT (30 s) must be greater than")):
        create_app()


ROLE_COMMANDS = {
    "worker": ["celery", "-A", "worker", "worker", "--loglevel", "INFO"],
    "beat": ["celery", "-A", "beat", "beat", "--loglevel", "INFO"],
}


def test_the_worker_and_beat_processes_refuse_to_start_with_a_short_visibility_timeout():
    # Started side by side: each fails while loading its settings. Should one start anyway, it finds
    # no database or Redis at these addresses, and is killed with its pool when the test ends.
    environ = role_env({"SECRET_KEY": "x", **SHORT_TIMEOUT, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/none"})
    started = {role: subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
               for role, argv in ROLE_COMMANDS.items()}
    try:
        for role, process in started.items():
            output, _ = process.communicate(timeout=90)
            assert process.returncode != 0, (role, output)
            assert "PROMPTBEAT_VISIBILITY_TIMEOUT (30 s) must be greater than" in output, (role, output)
    finally:
        for process in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.mark.parametrize("name,value", [("PROMPTBEAT_BATCH_DISCOUNT", "1.5"), ("PROMPTBEAT_BATCH_DISCOUNT", "-0.1"),
                                        ("PROMPTBEAT_BATCH_SECONDS", "0"), ("PROMPTBEAT_BATCH_MAX_RUNS", "0"),
                                        ("PROMPTBEAT_BATCHES_PER_TICK", "-1"),
                                        ("PROMPTBEAT_BATCH_GRACE_SECONDS", "-5")])
def test_batch_settings_out_of_range_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_environ({"SECRET_KEY": "x", name: value})


def test_batch_jobs_are_fixed_jobs_of_beat_at_their_interval():
    settings = Settings.from_environ({"SECRET_KEY": "x", "PROMPTBEAT_BATCH_SECONDS": "7",
                                      "PROMPTBEAT_BATCH_DISCOUNT": "0.25"})
    schedule = settings.flask_config()["CELERY"]["beat_schedule"]
    assert {schedule[name]["task"]: schedule[name]["schedule"] for name in
            ("promptbeat-submit-batches", "promptbeat-poll-batches")} == {
        "promptbeat.submit_batches": 7.0, "promptbeat.poll_batches": 7.0}
    assert settings.batch_discount == 0.25
@pytest.mark.parametrize(("name", "raw"), [
    ("PROMPTBEAT_BUDGET_USD_DAY", "-1"), ("PROMPTBEAT_BUDGET_USD_DAY", "nan"), ("PROMPTBEAT_BUDGET_USD_MONTH", "inf"),
    ("PROMPTBEAT_BUDGET_USD_MONTH", "ten"), ("PROMPTBEAT_BUDGET_TOKENS_DAY", "1.5"),
    ("PROMPTBEAT_BUDGET_TOKENS_MONTH", "-5"), ("PROMPTBEAT_BUDGET_TIMEZONE", "Mars/Base"),
])
def test_a_malformed_global_budget_is_refused_by_name(name, raw):
    with pytest.raises(ConfigError, match=name):
        Settings.from_environ({"SECRET_KEY": "x", name: raw})


def test_global_budgets_are_read_and_blank_means_no_limit():
    settings = Settings.from_environ({"SECRET_KEY": "x", "PROMPTBEAT_BUDGET_USD_DAY": "2.5",
                                      "PROMPTBEAT_BUDGET_TOKENS_MONTH": "1000000", "PROMPTBEAT_BUDGET_USD_MONTH": " ",
                                      "PROMPTBEAT_BUDGET_TIMEZONE": "Asia/Tokyo"})
    assert (settings.budget_usd_day, settings.budget_usd_month, settings.budget_tokens_day,
            settings.budget_tokens_month, settings.budget_timezone) == (2.5, None, None, 1_000_000, "Asia/Tokyo")
