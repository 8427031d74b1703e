"""Validation of task input, shared by the form and the API so both accept the same things."""
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from promptbeat.outputs import patterns, schema
from promptbeat.scheduling import schedules
from promptbeat.runs import fallbacks, prompts
from promptbeat.extensions import db
from promptbeat.models import Channel, Connection, NotifyOn, OverlapPolicy, ScheduleType, Task
from promptbeat.scheduling.schedules import TIME_OF_DAY

FIELDS = (
    "name", "prompt", "system_prompt", "model", "temperature", "max_tokens", "schedule_type",
    "interval_minutes", "interval_seconds", "time", "cron", "timezone", "enabled",
    "run_at", "start_at", "end_at", "max_runs", "overlap_policy", "catchup_seconds", "auto_pause_after",
    "pause_note",
    "connection_id", "max_attempts", "request_timeout_seconds", "max_run_seconds", "notify_on", "channel_ids",
    "output_schema", "ignore_patterns", "fallbacks", "batch", "budget_usd_day", "budget_usd_month",
    "budget_tokens_day", "budget_tokens_month", "pause_on_budget", "jitter_seconds", "first_run_delay_seconds",
)
# Jitter and a first-run delay wait as waiting runs (promptbeat.runs.waiting); an hour is plenty to spread load.
MAX_DELAY_SECONDS = 3600
SCHEDULE_INPUTS = ("schedule_type", "interval_minutes", "interval_seconds", "time", "cron", "timezone",
                   "run_at", "start_at", "end_at", "max_runs", "catchup_seconds")
# What makes a saved schedule start afresh (and so be checked for a fire time again).
SCHEDULE_FIELDS = ("schedule_type", "interval_seconds", "fixed_time", "cron", "timezone", "run_at", "start_at",
                   "end_at")
MAX_ATTEMPTS = 10
# Control characters have no place in text a person types; line breaks and tabs only in multi-line text.
# A line break in a name would also forge lines wherever the name is logged.
CONTROL_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_TEMPERATURE = 2.0
MAX_TOKENS = 1_000_000
MAX_TASK_CHANNELS = 20
NOTIFY_MESSAGE = "Must be a list of: every, change, failure, recovery, auto_pause, budget."
# Budgets (promptbeat.runs.budget): far above any real one, low enough to stay exact in a float and the ledger.
MAX_BUDGET_USD = 1_000_000_000
MAX_BUDGET_TOKENS = 10**15
BUDGETS = (("budget_usd_day", float, MAX_BUDGET_USD), ("budget_usd_month", float, MAX_BUDGET_USD),
           ("budget_tokens_day", int, MAX_BUDGET_TOKENS), ("budget_tokens_month", int, MAX_BUDGET_TOKENS))


class TaskInputError(ValueError):
    """Input that cannot be saved, with a message per field."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def task_values(task):
    """A task's current values in input form, as the base for a partial update."""
    values = {
        "name": task.name, "prompt": task.prompt, "system_prompt": task.system_prompt,
        "model": task.model, "temperature": task.temperature, "max_tokens": task.max_tokens,
        "schedule_type": task.schedule_type, "time": task.fixed_time, "cron": task.cron,
        "timezone": task.timezone, "enabled": task.enabled, "run_at": task.run_at,
        "start_at": task.start_at, "end_at": task.end_at, "max_runs": task.max_runs,
        "overlap_policy": task.overlap_policy, "catchup_seconds": task.catchup_seconds,
        "auto_pause_after": task.auto_pause_after, "pause_note": task.pause_note,
        "connection_id": task.connection_id,
        "max_attempts": task.max_attempts, "request_timeout_seconds": task.request_timeout_seconds,
        "max_run_seconds": task.max_run_seconds, "notify_on": list(task.notify_on or []),
        "channel_ids": [channel.id for channel in task.channels], "output_schema": task.output_schema,
        "ignore_patterns": task.ignore_patterns, "fallbacks": task.fallbacks, "batch": task.batch,
        "budget_usd_day": task.budget_usd_day,
        "budget_usd_month": task.budget_usd_month, "budget_tokens_day": task.budget_tokens_day,
        "budget_tokens_month": task.budget_tokens_month, "pause_on_budget": task.pause_on_budget,
        "jitter_seconds": task.jitter_seconds, "first_run_delay_seconds": task.first_run_delay_seconds,
    }
    if task.interval_seconds is not None:
        values["interval_seconds"] = task.interval_seconds
    return values


def validate_task(data, settings, base=None):
    """Check input (merged over base for updates); returns model attributes or raises TaskInputError."""
    errors = {}
    unknown = sorted(set(data) - set(FIELDS))
    for field in unknown:
        errors[field] = "Unknown field."
    merged = dict(base or {})
    if base and ("interval_minutes" in data or "interval_seconds" in data):
        merged.pop("interval_seconds", None)
    merged.update({k: v for k, v in data.items() if k in FIELDS})

    clean = {}
    clean["name"] = _text(merged, "name", errors, required=True, limit=200)
    clean["prompt"] = _text(merged, "prompt", errors, required=True, limit=settings.max_prompt_chars, multiline=True)
    clean["system_prompt"] = _text(merged, "system_prompt", errors, limit=settings.max_prompt_chars,
                                   multiline=True) or None
    clean["model"] = _text(merged, "model", errors, limit=200) or settings.default_model
    clean["temperature"] = _number(merged, "temperature", errors, float, 0.0, MAX_TEMPERATURE, default=0.7)
    clean["max_tokens"] = _number(merged, "max_tokens", errors, int, 1, MAX_TOKENS, default=None)
    clean["enabled"] = _boolean(merged, "enabled", errors, default=True)
    # Runs go through the provider's Batch API (promptbeat.batches); a test run still asks at once.
    clean["batch"] = _boolean(merged, "batch", errors, default=False)
    clean["pause_note"] = _text(merged, "pause_note", errors, limit=1000, multiline=True) or None
    clean["auto_pause_after"] = _number(merged, "auto_pause_after", errors, int, 1, 1000, default=None)
    clean["overlap_policy"] = _choice(merged, "overlap_policy", errors, OverlapPolicy, OverlapPolicy.SKIP,
                                      "Must be one of: skip, allow.")
    clean.update(schedule_values(merged, settings, errors, base))
    clean.update(_execution_options(merged, settings, errors))
    clean.update(_output_options(merged, errors))
    clean["fallbacks"] = _fallbacks(merged, clean, errors)
    clean.update(_budgets(merged, errors))
    # Tried with sample values, so that a template past the render budget or the size limit is refused now
    # rather than failing every run.
    limits = prompts.Limits.from_settings(settings)
    for field in ("prompt", "system_prompt"):
        if clean.get(field) and field not in errors:
            try:
                prompts.check(clean[field], limits, task_name=clean["name"] or "")
            except prompts.PromptTemplateError as exc:
                errors[field] = str(exc)
    if errors:
        raise TaskInputError(errors)
    return clean


def validate_pause_note(note):
    """A pause note as stored (None when empty); raises TaskInputError. Pausing checks nothing else."""
    errors = {}
    value = _text({"pause_note": note}, "pause_note", errors, limit=1000, multiline=True) or None
    if errors:
        raise TaskInputError(errors)
    return value


def validate_schedule(data, settings):
    """Check only the schedule fields (for the live preview); returns model attributes or raises."""
    errors = {}
    values = schedule_values({k: v for k, v in data.items() if k in SCHEDULE_INPUTS}, settings, errors)
    if errors:
        raise TaskInputError(errors)
    return values


def schedule_values(merged, settings, errors, base=None):
    """The schedule attributes: type and its value, zone, bounds and catch-up window.

    A new schedule, a changed one, or one being enabled must have a next fire time within
    schedules.HORIZON; an unchanged one is left as it is (a finished one-off stays editable).
    """
    clean = _schedule_fields(merged, settings, errors)
    if any(field in errors for field in SCHEDULE_INPUTS) or not _starts_afresh(clean, merged, settings, base):
        return clean
    try:
        schedules.first_run(Task(**clean))
    except schedules.ScheduleError as exc:
        errors[_input_field(exc.field, merged)] = exc.message
    return clean


def _schedule_fields(merged, settings, errors):
    clean = {"timezone": _zone(merged, errors)}
    zone = ZoneInfo(clean["timezone"])
    clean.update(_schedule(merged, settings, errors, zone))
    clean["start_at"] = _moment(merged, "start_at", errors, zone)
    clean["end_at"] = _moment(merged, "end_at", errors, zone)
    if clean["start_at"] and clean["end_at"] and clean["end_at"] <= clean["start_at"]:
        errors["end_at"] = "The end must come after the start."
    clean["max_runs"] = _number(merged, "max_runs", errors, int, 1, 10_000_000, default=None)
    clean["catchup_seconds"] = _number(merged, "catchup_seconds", errors, int, 0, 7 * 86400, default=None)
    return clean


def _starts_afresh(clean, merged, settings, base):
    # As the service decides it: a new task, a changed schedule, or a disabled task being enabled.
    if base is None:
        return True
    before = _schedule_fields(base, settings, {})
    if any(clean.get(field) != before.get(field) for field in SCHEDULE_FIELDS):
        return True
    return _boolean(merged, "enabled", {}, default=True) and not base.get("enabled")


def _input_field(field, data):
    # The interval came in as minutes or seconds: blame the one that was given.
    if field == "interval_seconds" and data.get("interval_seconds") in (None, ""):
        return "interval_minutes"
    return field


def _moment(data, field, errors, zone, required=False):
    """An ISO 8601 date and time; without an offset it is read in the task's time zone."""
    value = data.get(field)
    if value in (None, ""):
        if required:
            errors[field] = "Give a date and time, for example 2030-01-31T09:00."
        return None
    try:
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc)
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        errors[field] = "Use an ISO 8601 date and time, for example 2030-01-31T09:00 or 2030-01-31T09:00+01:00."
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:59-05:00 is in the year 10000 in UTC
        errors[field] = "Use a date and time between the years 1 and 9999 in UTC."
        return None


def _text(data, field, errors, required=False, limit=None, multiline=False):
    """Text less surrounding blanks; one line unless multiline."""
    value = data.get(field)
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[field] = "Must be text."
        return None
    value = value.strip()
    if "\x00" in value:
        # PostgreSQL cannot store NUL in text; say so instead of failing at commit.
        errors[field] = "Must not contain NUL characters."
    elif multiline and CONTROL_IN_TEXT.search(value):
        errors[field] = "Must not contain control characters other than line breaks and tabs."
    elif not multiline and CONTROL_IN_LINE.search(value):
        errors[field] = "Must be one line, without control characters."
    elif required and not value:
        errors[field] = "This field is required."
    elif limit and len(value) > limit:
        errors[field] = f"Must be at most {limit} characters (got {len(value)})."
    return value


def _number(data, field, errors, kind, low, high, default):
    value = data.get(field)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        errors[field] = "Must be a number."
        return None
    try:
        number = kind(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        errors[field] = "Must be a whole number." if kind is int else "Must be a number."
        return None
    if not low <= number <= high:
        errors[field] = f"Must be between {_plain(low)} and {_plain(high)}."
        return None
    return number


def _plain(number):
    # "2" rather than "2.0", and "1000000" rather than "1e+06".
    return f"{number:g}" if isinstance(number, float) else str(number)


def _choice(data, field, errors, choices, default, message):
    """One of an enum's values; absent or empty means the default, and a value of any other type is refused."""
    value = data.get(field)
    if value is None or value == "":
        return default
    # Checked as text first: a list or an object cannot be looked up in a set, and [] must not read as "not set".
    if not isinstance(value, str) or value not in set(choices):
        errors[field] = message
        return default
    return value


def _boolean(data, field, errors, default):
    value = data.get(field, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on", "y"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "0", "no", "off", "n", ""}:
        return False
    errors[field] = "Must be true or false."
    return default


def _zone(data, errors):
    name = data.get("timezone")
    if name in (None, ""):
        name = "UTC"
    if not isinstance(name, str) or not schedules.known_zone(name):
        # Never echoes the input: the message reaches pages.
        errors["timezone"] = "Unknown time zone; use an IANA name such as Europe/Berlin."
        return "UTC"
    return name


def _schedule(data, settings, errors, zone):
    kind = _choice(data, "schedule_type", errors, ScheduleType, ScheduleType.INTERVAL,
                   "Must be one of: interval, fixed_time, crontab, once.")
    if "schedule_type" in errors:
        return {}
    schedule = {"schedule_type": kind, "interval_seconds": None, "fixed_time": None, "cron": None, "run_at": None}
    if kind == ScheduleType.ONCE:
        schedule["run_at"] = _moment(data, "run_at", errors, zone, required=True)
    elif kind == ScheduleType.INTERVAL:
        schedule["interval_seconds"] = _interval(data, settings, errors)
    elif kind == ScheduleType.FIXED_TIME:
        value = data.get("time")
        match = TIME_OF_DAY.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            errors["time"] = "Use HH:MM in 24-hour time, for example 09:30."
        else:
            # Stored as HH:MM, the one form beat and the pages read.
            schedule["fixed_time"] = f"{int(match[1]):02d}:{match[2]}"
    else:
        value = data.get("cron")
        expression = " ".join(value.split()) if isinstance(value, str) else ""
        if not schedules.valid_cron(expression):
            errors["cron"] = "Use a 5-field cron expression: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5'."
        else:
            schedule["cron"] = expression
    return schedule


def _interval(data, settings, errors):
    minimum = settings.min_interval_seconds
    if data.get("interval_seconds") not in (None, ""):
        seconds = _number(data, "interval_seconds", errors, int, minimum, 366 * 86400, default=None)
        field = "interval_seconds"
    elif data.get("interval_minutes") not in (None, ""):
        minutes = _number(data, "interval_minutes", errors, int, 1, 366 * 1440, default=None)
        seconds = minutes * 60 if minutes is not None else None
        field = "interval_minutes"
    else:
        # The message goes to the field the input named, so a client sees which one it left empty.
        field = "interval_seconds" if "interval_seconds" in data and "interval_minutes" not in data else "interval_minutes"
        errors[field] = "Give the interval: interval_minutes (or interval_seconds)."
        return None
    if seconds is not None and seconds < minimum:
        errors[field] = f"The interval must be at least {minimum} seconds."
        return None
    return seconds


def _execution_options(data, settings, errors):
    """Connection, retry bounds, timeouts, notify rules and channels: the per-task knobs of a run."""
    options = {
        "max_attempts": _number(data, "max_attempts", errors, int, 1, MAX_ATTEMPTS, default=None),
        "request_timeout_seconds": _number(data, "request_timeout_seconds", errors, float, 1, 3600, default=None),
        # Bounded by the setting, which itself stays under the broker's visibility timeout.
        "max_run_seconds": _number(data, "max_run_seconds", errors, int, 5, settings.max_run_seconds, default=None),
        "connection_id": _number(data, "connection_id", errors, int, 1, 2**31 - 1, default=None),
        "jitter_seconds": _number(data, "jitter_seconds", errors, int, 0, MAX_DELAY_SECONDS, default=0),
        "first_run_delay_seconds": _number(data, "first_run_delay_seconds", errors, int, 0, MAX_DELAY_SECONDS,
                                           default=0),
    }
    if options["connection_id"] and db.session.get(Connection, options["connection_id"]) is None:
        errors["connection_id"] = f"No connection with id {options['connection_id']}."
    options["notify_on"] = _notify_on(data, errors)
    options["channels"] = _channels(data, errors)
    return options


def _output_options(data, errors):
    """The output schema and the ignore patterns of change detection (promptbeat.outputs)."""
    options = {"output_schema": None, "ignore_patterns": None}
    try:
        options["output_schema"] = schema.check(data.get("output_schema"))
    except schema.SchemaError as exc:
        errors["output_schema"] = str(exc)
    value = data.get("ignore_patterns")
    if isinstance(value, str):
        value = value.splitlines()  # the form's textarea: one pattern a line
    try:
        options["ignore_patterns"] = patterns.check_list(value)
    except patterns.PatternError as exc:
        errors["ignore_patterns"] = str(exc)
    return options


def _fallbacks(data, clean, errors):
    """The models tried after the task's own (promptbeat.runs.fallbacks); None for none."""
    value = data.get("fallbacks")
    try:
        if isinstance(value, str):
            value = fallbacks.from_lines(value)  # the form's textarea: one fallback a line
        return fallbacks.check(value, clean.get("connection_id"), clean.get("model"))
    except fallbacks.FallbackError as exc:
        errors["fallbacks"] = str(exc)
        return None


def _budgets(data, errors):
    """The task's budgets (None: no limit) and whether a budget stop pauses it."""
    values = {field: _number(data, field, errors, kind, 0, high, default=None) for field, kind, high in BUDGETS}
    # null, as for the budgets, means the default.
    values["pause_on_budget"] = (data.get("pause_on_budget") is not None
                                 and _boolean(data, "pause_on_budget", errors, default=False))
    return values


def _notify_on(data, errors):
    """When the task's channels are told: a list of NotifyOn values, each once; absent means every run."""
    value = data.get("notify_on")
    if value is None:
        return [NotifyOn.EVERY]
    if not isinstance(value, list) or len(value) > len(NotifyOn) or not all(
            isinstance(rule, str) and rule in set(NotifyOn) for rule in value):
        errors["notify_on"] = NOTIFY_MESSAGE
        return [NotifyOn.EVERY]
    return list(dict.fromkeys(NotifyOn(rule) for rule in value))


def _channels(data, errors):
    """The channels a list of ids names; every id must be a channel's."""
    value = data.get("channel_ids")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TASK_CHANNELS or not all(
            isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= 2**31 - 1 for i in value):
        errors["channel_ids"] = f"Must be a list of at most {MAX_TASK_CHANNELS} channel ids."
        return []
    ids = list(dict.fromkeys(value))
    found = {channel.id: channel for channel in
             db.session.execute(db.select(Channel).where(Channel.id.in_(ids))).scalars()} if ids else {}
    missing = [i for i in ids if i not in found]
    if missing:
        errors["channel_ids"] = f"No channel with id {missing[0]}."
        return []
    return [found[i] for i in ids]
