"""RedBeat entries for tasks: deterministic names, and storage that keeps the whole TaskSchedule (zone, bounds)."""
import functools
import json
from datetime import timedelta

from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf, get_redis

from promptbeat.scheduling.schedules import TaskSchedule, task_schedule

EXECUTE_TASK = "promptbeat.execute_task"
ENTRY_PREFIX = "task:"


class TaskEntryEncoder(RedBeatJSONEncoder):
    """RedBeat's encoder, plus TaskSchedule, which RedBeat would store without its zone and bounds."""

    def default(self, obj):
        if isinstance(obj, TaskSchedule):
            return {"__type__": "task_schedule", **obj.spec()}
        return super().default(obj)


# One decoder for every entry: json.loads(cls=...) would build a new one per call.
_DECODER = RedBeatJSONDecoder()


@functools.lru_cache(maxsize=4096)
def _cached_schedule(spec_items):
    # Beat decodes thousands of entries a tick, most sharing a few schedules; a TaskSchedule
    # is never changed after it is built, so entries with the same spec can share one.
    return TaskSchedule.from_spec(dict(spec_items))


class TaskEntry(RedBeatSchedulerEntry):
    """A RedBeat entry whose schedule is a TaskSchedule, with an honest due time."""

    @staticmethod
    def decode_definition(definition):
        if isinstance(definition, bytes):
            definition = definition.decode()
        # Plain JSON first: a task's definition holds nothing RedBeat's decoder must revive
        # except its schedule, which is ours; anything else takes RedBeat's decoder.
        decoded = json.loads(definition)
        schedule = decoded.get("schedule")
        if isinstance(schedule, dict) and schedule.get("__type__") == "task_schedule":
            decoded["schedule"] = _cached_schedule(tuple(schedule.items()))
            return decoded
        return _DECODER.decode(definition)

    def encoded_definition(self):
        """The definition exactly as stored in Redis, for change detection."""
        definition = {
            "name": self.name,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }
        return json.dumps(definition, cls=TaskEntryEncoder, sort_keys=True)

    @property
    def due_at(self):
        # RedBeat adds the remaining time to last_run_at, which is only right at the
        # instant of a fire; counting from now keeps restored entries' scores true.
        if self.last_run_at is None:
            return self._default_now()
        remaining = self.schedule.remaining_estimate(self.last_run_at)
        if remaining is None:
            return None
        return self._default_now() + max(remaining, timedelta(0))

    @property
    def score(self):
        # RedBeat's whole-second scores would make beat wake up to a second late; keep the fraction.
        due_at = self.due_at
        return -1 if due_at is None else due_at.timestamp()

    def save(self, reset_phase=False):
        """Write definition and score; set last_run_at when reset_phase, else keep the stored one."""
        meta = json.dumps({"last_run_at": self.last_run_at}, cls=RedBeatJSONEncoder)
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", self.encoded_definition())
            if reset_phase:
                pipe.hset(self.key, "meta", meta)
            else:
                pipe.hsetnx(self.key, "meta", meta)
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self


def entry_name(task_id):
    """The deterministic RedBeat entry name of a task."""
    return f"{ENTRY_PREFIX}{task_id}"


def entry_key(celery_app, task_id):
    """The Redis key of a task's RedBeat entry."""
    ensure_conf(celery_app)
    return TaskEntry.generate_key(celery_app, entry_name(task_id))


def build_entry(celery_app, task, last_run_at=None):
    """The RedBeat entry that fires this task."""
    return TaskEntry(
        name=entry_name(task.id),
        task=EXECUTE_TASK,
        schedule=task_schedule(task),
        args=[task.id],
        kwargs={"trigger": "scheduled"},
        options={},
        last_run_at=last_run_at,
        app=celery_app,
    )
