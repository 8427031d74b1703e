"""High availability with real processes on a private redis-server: kill, stall and flush the beat's world.

Each test starts its own worker and beats against a throwaway redis-server (never the
shared one), with a 4-second lock timeout so takeovers happen within seconds.
"""
import re
import signal
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import redis as redis_lib

from promptbeat.extensions import db
from promptbeat.models import Execution, ScheduleType, Task
from tests import services
from tests.services import PrivateRedis, Role, wait_for

pytestmark = pytest.mark.slow

LOCK_TIMEOUT = 4
SENT = re.compile(r"Sending due task (task:\d+) slot (\S+)")


@pytest.fixture
def world(app, role_environ, tmp_path):
    """A private redis-server, a worker on it, and a way to start beats; everything stopped by pid."""
    private = PrivateRedis(tmp_path)
    env = services.role_env({**role_environ, "REDIS_URL": private.url,
                             "PROMPTBEAT_BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
                             "PROMPTBEAT_BEAT_MAX_LOOP_INTERVAL": "1", "PROMPTBEAT_RECONCILE_SECONDS": "1"})
    roles = []

    class World:
        redis = redis_lib.Redis.from_url(private.url, decode_responses=True)
        logs = tmp_path

        def beat(self, name, wait=True):
            role = Role(["celery", "-A", "beat", "beat", "--loglevel", "INFO"], env, tmp_path / f"{name}.log")
            roles.append(role)
            if wait:
                role.wait_for_output("beat: Acquired lock", timeout=60)
            return role

        def sent(self):
            """Every (entry, slot) any beat published, in order."""
            return [m.groups() for log in sorted(tmp_path.glob("beat-*.log"))
                    for m in SENT.finditer(log.read_text(errors="replace"))]

    roles.append(services.start_worker(env, tmp_path / "worker.log"))
    yield World()
    for role in reversed(roles):
        if role.process.poll() is None:
            role.process.send_signal(signal.SIGCONT)
        role.stop()
    World.redis.close()
    private.stop()


def add_interval_task(app, seconds):
    with app.app_context():
        task = Task(name=f"every {seconds}s", prompt="tick", model="fake-model", schedule_type=ScheduleType.INTERVAL,
                    interval_seconds=seconds, anchor_at=datetime.now(timezone.utc), overlap_policy="allow")
        db.session.add(task)
        db.session.commit()
        return task.id


def slots(app, task_id):
    with app.app_context():
        return [row.slot for row in db.session.execute(
            db.select(Execution).filter_by(task_id=task_id).order_by(Execution.slot)).scalars()]


def runs_after(app, task_id, moment):
    return [slot for slot in slots(app, task_id) if slot and slot > moment]


def assert_nothing_fired_twice(world):
    sent = world.sent()
    assert sent, "no beat published anything"
    twice = [item for item, count in Counter(sent).items() if count > 1]
    assert twice == []


def assert_in_phase(app, task_id, seconds):
    found = slots(app, task_id)
    assert len(found) == len(set(found))
    assert all((slot - found[0]).total_seconds() % seconds == 0 for slot in found), found


def test_standby_takes_over_from_a_killed_holder_and_a_stalled_holder_gives_up(app, world):
    task_id = add_interval_task(app, 2)
    holder = world.beat("beat-a")
    standby = world.beat("beat-b", wait=False)
    wait_for(lambda: len(slots(app, task_id)) >= 2, 30, "runs fired by the first beat")

    killed_at = datetime.now(timezone.utc)
    holder.kill()
    standby.wait_for_output("beat: Acquired lock", timeout=30)
    wait_for(lambda: runs_after(app, task_id, killed_at), 30, "a run fired by the standby within 30 s of the kill")

    third = world.beat("beat-c", wait=False)
    standby.process.send_signal(signal.SIGSTOP)
    stopped_at = datetime.now(timezone.utc)
    third.wait_for_output("beat: Acquired lock", timeout=30)
    wait_for(lambda: runs_after(app, task_id, stopped_at + timedelta(seconds=LOCK_TIMEOUT)), 30,
             "a run fired by the third beat")
    standby.process.send_signal(signal.SIGCONT)
    wait_for(lambda: "another beat holds the lock" in standby.output(), 30, "the stalled beat to give up")
    standby.process.wait(timeout=30)
    resumed_at = datetime.now(timezone.utc)
    wait_for(lambda: runs_after(app, task_id, resumed_at + timedelta(seconds=2)), 30, "runs after the stall")

    assert_nothing_fired_twice(world)
    assert_in_phase(app, task_id, 2)


def test_flushall_restores_every_task_with_its_phase(app, world):
    fast, slow = add_interval_task(app, 2), add_interval_task(app, 3)
    world.beat("beat-a")
    wait_for(lambda: len(slots(app, fast)) >= 2 and len(slots(app, slow)) >= 2, 30, "runs before the flush")

    world.redis.flushall()
    flushed_at = datetime.now(timezone.utc)
    wait_for(lambda: world.redis.exists("promptbeat:task:%d" % fast, "promptbeat:task:%d" % slow) == 2, 60,
             "both entries restored")
    wait_for(lambda: len(runs_after(app, fast, flushed_at)) >= 2 and len(runs_after(app, slow, flushed_at)) >= 2,
             60, "runs after the flush")

    assert_nothing_fired_twice(world)
    assert_in_phase(app, fast, 2)
    assert_in_phase(app, slow, 3)
