"""beat's healthcheck (`python -m beat.health`): healthy while its loop runs, holding the lock or waiting for it."""
import signal
import subprocess
import sys
import time

import pytest

from tests import services
from tests.services import ROOT, PrivateRedis, Role, wait_for

pytestmark = pytest.mark.slow

LOCK_TIMEOUT = 4
LOOP_INTERVAL = 1


@pytest.fixture
def env(role_environ, tmp_path):
    private = PrivateRedis(tmp_path)
    yield services.role_env({**role_environ, "REDIS_URL": private.url,
                             "PROMPTBEAT_BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
                             "PROMPTBEAT_BEAT_MAX_LOOP_INTERVAL": str(LOOP_INTERVAL)})
    private.stop()


def own_tmpdir(env, tmp_path, name):
    """The environment of one beat with a temporary directory of its own, as each container has."""
    directory = tmp_path / name
    directory.mkdir()
    return {**env, "TMPDIR": str(directory)}


def healthcheck(env):
    result = subprocess.run([sys.executable, "-m", "beat.health"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    return result.returncode, result.stderr.strip()


def test_holder_and_standby_are_healthy_and_a_stalled_loop_is_not(env, tmp_path):
    holder_env, standby_env = own_tmpdir(env, tmp_path, "holder"), own_tmpdir(env, tmp_path, "standby")
    assert healthcheck(holder_env) == (1, "beat has not started its loop")
    command = ["celery", "-A", "beat", "beat", "--loglevel", "INFO"]
    holder = Role(command, holder_env, tmp_path / "holder.log")
    standby = None
    try:
        holder.wait_for_output("beat: Acquired lock", timeout=60)
        standby = Role(command, standby_env, tmp_path / "standby.log")
        standby.wait_for_output("beat: Starting...", timeout=60)
        wait_for(lambda: healthcheck(standby_env)[0] == 0, 30, "the waiting standby to be healthy")
        assert healthcheck(holder_env) == (0, "")
        assert "Acquired lock" not in standby.output()

        # A stalled loop (SIGSTOP: the process is there, its loop is not) goes unhealthy once its
        # heartbeat is older than the lock timeout plus one loop interval, and healthy again after.
        standby.process.send_signal(signal.SIGSTOP)
        time.sleep(LOCK_TIMEOUT + LOOP_INTERVAL + 1)
        code, message = healthcheck(standby_env)
        assert code == 1 and "beat's loop last ran" in message
        standby.process.send_signal(signal.SIGCONT)
        wait_for(lambda: healthcheck(standby_env)[0] == 0, 30, "the resumed standby to be healthy")
        assert healthcheck(holder_env) == (0, "")
    finally:
        for role in (standby, holder):
            if role is not None:
                role.process.send_signal(signal.SIGCONT)
                role.stop()
