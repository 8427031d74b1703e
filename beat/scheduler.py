"""RedBeat scheduler that fires slots: batched, with the misfire rule, and reconciles from the database.

Every fire carries its slot (the nominal fire time), and the entry's last run becomes
that slot, so interval phase never drifts and a second dispatch of a slot is recognisable.
"""
import functools
import json
import logging
import time
from datetime import timedelta

from celery.beat import SchedulingError
from celery.signals import beat_init
from redbeat import RedBeatScheduler
from redbeat import schedulers as redbeat_schedulers
from redbeat.decoder import RedBeatJSONEncoder
from redbeat.schedulers import get_redis
from redis.exceptions import LockError

from beat import health
from beat.publisher import BulkPublisher
from promptbeat.runs import message_ids
from promptbeat.scheduling.entries import TaskEntry
from promptbeat.extensions import db
from promptbeat.models import Task
from promptbeat.scheduling.sync import reconcile

logger = logging.getLogger(__name__)

# Due entries are loaded, fired and saved this many at a time (one Redis round trip each way).
BATCH = 1000
# Logged for every message that left beat (operators and the failover tests read it).
SENT_LINE = "Scheduler: Sending due task %s slot %s%s"

# One call reads a whole batch of entries: a pipeline of HMGETs costs beat more CPU per entry
# (packing and parsing each command in Python) than everything else it does for a fire.
LOAD_ENTRIES = """
local rows = {}
for i, key in ipairs(KEYS) do
    local fields = redis.call('HMGET', key, 'definition', 'meta')
    rows[2 * i - 1] = fields[1]
    rows[2 * i] = fields[2]
end
return rows
"""

# And one call saves a batch's new phases (ARGV: one meta per key) and scores (a single ZADD).
SAVE_ENTRIES = """
local schedule_key = ARGV[1]
local count = #KEYS
for i, key in ipairs(KEYS) do
    redis.call('HSET', key, 'meta', ARGV[i + 1])
end
if #ARGV > count + 1 then
    redis.call('ZADD', schedule_key, unpack(ARGV, count + 2))
end
return count
"""


class LockLost(SystemExit):
    """Another beat took the lock while this one was stalled: stop, never fire beside it."""


class EntrySaves:
    """The new phases and scores of one batch, written to Redis in one call."""

    def __init__(self, schedule_key):
        self.schedule_key = schedule_key
        self.metas = {}
        self.scores = {}
        self.dropped = []
        self._encoded = {}

    def score(self, entry):
        self.scores[entry.key] = entry.score

    def last_run(self, entry, moment):
        # A burst shares a handful of slots: encode each one once.
        meta = self._encoded.get(moment)
        if meta is None:
            meta = self._encoded[moment] = json.dumps({"last_run_at": moment}, cls=RedBeatJSONEncoder)
        self.metas[entry.key] = meta

    def drop(self, key):
        self.dropped.append(key)

    def execute(self, script):
        scored = [value for key, score in self.scores.items() for value in (score, key)]
        if self.metas or scored:
            script(keys=list(self.metas), args=[self.schedule_key, *self.metas.values(), *scored])
        if self.dropped:
            script.registered_client.zrem(self.schedule_key, *self.dropped)


class PromptbeatScheduler(RedBeatScheduler):
    """Fires due task entries by slot; reconciles them from the database while holding the lock."""

    Entry = TaskEntry

    def __init__(self, app, **kwargs):
        self._next_reconcile = 0.0
        self.bulk = None
        self.unsent_lines = []
        super().__init__(app, **kwargs)

    def tick(self, min=min, **kwargs):
        # tick runs only after beat_init took the RedBeat lock, so a standby never writes.
        health.touch()
        self.keep_lock()
        if time.monotonic() >= self._next_reconcile:
            self.reconcile_now()
        return self.fire_due()

    def keep_lock(self):
        """Extend the lock; re-take it if Redis lost it; give up if another beat holds it."""
        if not self.lock_key or self.lock is None:
            return
        try:
            self.lock.extend(int(self.lock_timeout))
            return
        except LockError:
            pass
        client = get_redis(self.app)
        token = self.lock.local.token
        if client.set(self.lock_key, token, nx=True, px=int(self.lock_timeout * 1000)):
            logger.warning("beat: the lock had vanished (Redis flushed or restarted); took it again")
            self.redeclare_queues()
            self.reinstall_fixed_jobs()
            self._next_reconcile = 0.0  # the entries are likely gone too: restore them now
            return
        logger.error("beat: another beat holds the lock now; this one stops to avoid firing twice")
        self.lock = None
        raise LockLost(1)

    def redeclare_queues(self):
        """Declare the task queues again: a flush also drops the broker's routing, and messages would vanish."""
        try:
            with self.app.connection_for_write() as connection:
                channel = connection.default_channel
                for queue in self.app.amqp.queues.values():
                    queue.bind(channel).declare()
        except Exception:
            logger.exception("beat: could not declare the task queues again")

    def reinstall_fixed_jobs(self):
        """Write beat_schedule's fixed jobs (the lost-run sweep) again: a flush took them with it."""
        try:
            self.setup_schedule()
        except Exception:
            logger.exception("beat: could not reinstall the fixed jobs")

    def reconcile_now(self):
        """Rewrite entries from the database; a failure is logged and retried next tick."""
        settings = self.app.flask_app.config["PROMPTBEAT"]
        try:
            with self.app.flask_app.app_context():
                tasks = db.session.execute(db.select(Task).where(Task.enabled.is_(True))).scalars().all()
                result = reconcile(self.app, tasks)
                db.session.remove()
        except Exception:
            logger.exception("reconcile failed; retrying in 5 s")
            self._next_reconcile = time.monotonic() + 5
            return None
        self._next_reconcile = time.monotonic() + settings.reconcile_seconds
        if result.added or result.updated or result.removed:
            logger.info("reconcile: %s", result)
        return result

    def fire_due(self):
        """Fire every due entry in batches; returns seconds until the next one (at most max_interval)."""
        client = get_redis(self.app)
        schedule_key = self.app.redbeat_conf.schedule_key
        while True:
            now = self.app.now()
            keys = client.zrangebyscore(schedule_key, 0, now.timestamp(), start=0, num=BATCH)
            if not keys:
                break
            self.fire_batch(client, keys, now)
            if len(keys) < BATCH:
                break
        upcoming = client.zrangebyscore(schedule_key, "(%f" % self.app.now().timestamp(), "+inf",
                                        start=0, num=1, withscores=True)
        if not upcoming:
            return self.max_interval
        return max(0.0, min(upcoming[0][1] - time.time(), self.max_interval))

    def fire_batch(self, client, keys, now):
        """Load, decide, publish and save one batch of due entries."""
        loaded = client.register_script(LOAD_ENTRIES)(keys=keys)
        rows = zip(loaded[0::2], loaded[1::2])
        settings = self.app.flask_app.config["PROMPTBEAT"]
        grace = timedelta(seconds=settings.misfire_grace_seconds)
        channel = getattr(self.producer, "channel", None)
        self.bulk = BulkPublisher(self.app, channel) if BulkPublisher.supported(channel) else None
        self.unsent_lines = []
        saves = EntrySaves(self.app.redbeat_conf.schedule_key)
        for key, (definition, meta) in zip(keys, rows):
            if not definition:
                logger.warning("beat: entry %s vanished; dropping it from the schedule", key)
                saves.drop(key)
                continue
            try:
                entry = self.load_entry(key, definition, meta)
                self.fire_entry(entry, now, grace, saves)
            except Exception:
                # One unreadable entry must not stop the batch (and so every task) at each tick;
                # out of the schedule it stays out of the way until reconcile rewrites it from the database.
                logger.exception("beat: entry %s cannot be evaluated; dropping it from the schedule", key)
                saves.drop(key)
        # Messages go out before the entries' new phase is saved: a crash in between
        # re-sends slots (the database drops the copies) rather than losing them.
        if self.bulk is not None:
            # This beat may have stalled (SIGSTOP, a long GC pause) since the tick began and
            # lost the lock to a standby that fired these slots; check again just before sending.
            self.keep_lock()
            try:
                self.bulk.flush()
            except Exception:
                logger.exception("beat: could not publish a batch; its slots stay due and are retried")
                return
            for sent in self.unsent_lines:
                logger.info(SENT_LINE, *sent)
        saves.execute(client.register_script(SAVE_ENTRIES))

    def load_entry(self, key, definition, meta):
        fields = TaskEntry.decode_definition(definition)
        last_run_at = self.decode_last_run(meta)
        entry = TaskEntry(app=self.app, **fields)
        entry.last_run_at = last_run_at
        return entry

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def decode_last_run(meta):
        # Entries fired together share their last run: decode each distinct one once.
        return TaskEntry.decode_meta(meta)["last_run_at"] if meta else None

    def fire_entry(self, entry, now, grace, saves):
        """Fire the entry's newest due slot, or skip it if it is past the catch-up window."""
        schedule = entry.schedule
        if not entry.enabled:
            return
        if not hasattr(schedule, "newest_slot"):
            self.fire_fixed_job(entry, now, saves)
            return
        slot = schedule.newest_slot(entry.last_run_at, now) if entry.last_run_at else now.replace(microsecond=0)
        if slot is None:
            # Not due after all (the score was stale): just fix the score.
            saves.score(entry)
            return
        late = now - slot
        if late > schedule.catchup_window(slot):
            logger.warning("beat: %s missed slot %s by %s, beyond its catch-up window; waiting for the next slot",
                           entry.name, slot.isoformat(), late)
        elif not self.publish(entry, slot, catch_up=late > grace):
            return  # the broker failed: keep the entry due, so the next tick tries this slot again
        entry.last_run_at = slot
        saves.last_run(entry, slot)
        saves.score(entry)

    def fire_fixed_job(self, entry, now, saves):
        """Fire one of promptbeat's own fixed jobs (beat_schedule, e.g. the lost-run sweep): no slot, no catch-up."""
        due, _ = entry.is_due()
        if not due:
            saves.score(entry)
            return
        # At DEBUG: a fixed job fires every few seconds, and its line would bury the runs' lines.
        logger.debug("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            self.send_task(entry.task, entry.args, entry.kwargs, producer=self.producer,
                           headers={"celery_beat_task": True}, **entry.options)
        except Exception as exc:
            logger.exception("Scheduler: Message Error: %s", SchedulingError(f"{entry.name}: {exc}"))
            return
        entry.last_run_at = now
        saves.last_run(entry, now)
        saves.score(entry)

    def publish(self, entry, slot, catch_up):
        """Send the entry's task with its slot; returns False (and logs) on a broker error."""
        kwargs = {**(entry.kwargs or {}), "slot": slot.isoformat(), "catch_up": catch_up}
        sent = (entry.name, slot.isoformat(), " (catch-up)" if catch_up else "")
        # Named for Flower after the promptbeat task, with an id the web derives from the run's slot.
        task_id, shadow = message_ids.id_for_slot(entry.args[0], slot), message_ids.shadow_name(entry.args[0])
        try:
            if self.bulk is not None:
                self.bulk.add(entry.task, entry.args, kwargs, task_id=task_id, shadow=shadow)
                # Logged once the batch is out: a beat that loses the lock before pushing sends nothing.
                self.unsent_lines.append(sent)
                return True
            # Short reprs: Celery's safe repr of every argument costs more than the publish itself.
            self.send_task(entry.task, entry.args, kwargs, producer=self.producer, task_id=task_id, shadow=shadow,
                           headers={"celery_beat_task": True}, argsrepr=repr(entry.args),
                           kwargsrepr=repr(kwargs), **entry.options)
        except Exception as exc:
            logger.exception("Scheduler: Message Error: %s", SchedulingError(f"{entry.name}: {exc}"))
            return False
        logger.info(SENT_LINE, *sent)
        return True


def acquire_lock(sender=None, **kwargs):
    """RedBeat's wait for the lock at start, touching the heartbeat at every try: a waiting standby is alive."""
    scheduler = sender.scheduler
    if not scheduler.lock_key:
        return
    client = get_redis(scheduler.app)
    lock = client.lock(scheduler.lock_key, timeout=scheduler.lock_timeout, sleep=scheduler.max_interval)
    # RedBeat's extend script sets the timeout rather than adding to it, as its own handler does.
    lock.lua_extend = client.register_script(redbeat_schedulers.LUA_EXTEND_TO_SCRIPT)
    health.touch()
    while not lock.acquire(blocking=False):
        time.sleep(scheduler.max_interval)
        health.touch()
    logger.info("beat: Acquired lock")
    scheduler.lock = lock


# Replaces RedBeat's own handler, which waits in one blocking call that nothing can observe.
beat_init.disconnect(redbeat_schedulers.acquire_distributed_beat_lock)
beat_init.connect(acquire_lock)
