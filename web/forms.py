"""The task form: WTForms for rendering and CSRF, the shared validator for the rules."""
import json
import math
from zoneinfo import ZoneInfo

from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (BooleanField, RadioField, SelectChoice, SelectField, SelectMultipleField, StringField,
                     TextAreaField, widgets)

from promptbeat.extensions import db
from promptbeat.models import Channel, Connection
from promptbeat.runs import fallbacks
from promptbeat.validation import TaskInputError, validate_task

SCHEDULE_CHOICES = [
    SelectChoice("interval", _l("Every N minutes")),
    SelectChoice("fixed_time", _l("Every day at")),
    SelectChoice("crontab", _l("Cron expression")),
    SelectChoice("once", _l("Once, at")),
]
OVERLAP_CHOICES = [
    SelectChoice("skip", _l("Skip a run while the previous one is still running")),
    SelectChoice("allow", _l("Allow runs to overlap")),
]
NOTIFY_CHOICES = [
    SelectChoice("every", _l("Every run")),
    SelectChoice("change", _l("The output changed (not the first run)")),
    SelectChoice("failure", _l("A run failed")),
    SelectChoice("recovery", _l("The first success after a failure")),
    SelectChoice("auto_pause", _l("The task was paused automatically")),
    SelectChoice("budget", _l("A budget stopped a run")),
]
# Optional inputs passed to the validator as typed (blank means "not set").
OPTIONAL_INPUTS = ("run_at", "start_at", "end_at", "max_runs", "catchup_seconds", "auto_pause_after", "jitter_seconds",
                   "first_run_delay_seconds")
BUDGET_INPUTS = ("budget_usd_day", "budget_usd_month", "budget_tokens_day", "budget_tokens_month")
# Form field names that differ from the shared validator's.
FIELD_FOR_INPUT = {"interval_seconds": "interval_minutes"}


class TaskForm(FlaskForm):
    name = StringField(_l("Name"))
    prompt = TextAreaField(_l("Prompt"))
    system_prompt = TextAreaField(_l("System prompt (optional)"))
    model = StringField(_l("Model"))
    temperature = StringField(_l("Temperature"), default="0.7")
    max_tokens = StringField(_l("Max tokens (optional)"))
    schedule_type = RadioField(_l("Schedule"), choices=SCHEDULE_CHOICES, default="interval")
    interval_minutes = StringField(_l("Every (minutes)"), default="30")
    time = StringField(_l("At (HH:MM)"))
    cron = StringField(_l("Cron expression"))
    timezone = StringField(_l("Time zone"), default="UTC")
    run_at = StringField(_l("Run at (YYYY-MM-DD HH:MM, in the time zone)"))
    start_at = StringField(_l("Start (optional)"))
    end_at = StringField(_l("End (optional)"))
    max_runs = StringField(_l("Maximum runs (optional)"))
    overlap_policy = SelectField(_l("Overlap"), choices=OVERLAP_CHOICES, default="skip")
    catchup_seconds = StringField(_l("Catch-up window in seconds (optional)"))
    auto_pause_after = StringField(_l("Pause after N consecutive failures (optional)"))
    enabled = BooleanField(_l("Enabled"), default=True)
    batch = BooleanField(_l("Batch mode: send runs through the provider's Batch API at its discount; answers may "
                            "take up to 24 hours"), default=False)
    budget_usd_day = StringField(_l("USD per day (optional)"))
    budget_usd_month = StringField(_l("USD per month (optional)"))
    budget_tokens_day = StringField(_l("Tokens per day (optional)"))
    budget_tokens_month = StringField(_l("Tokens per month (optional)"))
    pause_on_budget = BooleanField(_l("Pause the task when a budget stops a run"), default=False)
    connection_id = SelectField(_l("Connection"), default="")
    max_attempts = StringField(_l("Attempts at most (optional)"))
    jitter_seconds = StringField(_l("Jitter in seconds (optional)"))
    first_run_delay_seconds = StringField(_l("Delay of the first run in seconds (optional)"))
    output_schema = TextAreaField(_l("Output schema (optional JSON Schema)"))
    ignore_patterns = TextAreaField(_l("Ignore lines matching (optional, one regular expression a line)"))
    fallbacks = TextAreaField(_l("Fallback models (optional, one a line)"))
    # Checkboxes, so that several can be picked; validate_choice is off: the shared validator decides.
    notify_on = SelectMultipleField(_l("Notify when"), choices=NOTIFY_CHOICES, default=["every"],
                                    widget=widgets.ListWidget(prefix_label=False),
                                    option_widget=widgets.CheckboxInput(), validate_choice=False)
    channel_ids = SelectMultipleField(_l("Channels"), widget=widgets.ListWidget(prefix_label=False),
                                      option_widget=widgets.CheckboxInput(), validate_choice=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = db.session.execute(db.select(Connection.id, Connection.name).order_by(Connection.name)).all()
        self.connection_id.choices = [SelectChoice("", _l("Default (OPENAI_BASE_URL)"))] + [
            SelectChoice(str(i), name) for i, name in names]
        channels = db.session.execute(db.select(Channel.id, Channel.name).order_by(Channel.name)).all()
        self.channel_ids.choices = [SelectChoice(str(i), name) for i, name in channels]

    def input_data(self):
        """The submitted values, shaped as the shared validator expects."""
        data = {name: getattr(self, name).data for name in (
            "name", "prompt", "system_prompt", "model", "temperature", "max_tokens",
            "schedule_type", "time", "cron", "timezone", "enabled", "overlap_policy", "connection_id",
            "max_attempts", "notify_on", "output_schema", "ignore_patterns", "fallbacks", "batch", "pause_on_budget",
        )}
        # A channel id that is not a number is passed on as typed, for the validator to refuse.
        data["channel_ids"] = [int(v) if v.isdigit() and len(v) < 11 else v for v in self.channel_ids.data or []]
        for name in OPTIONAL_INPUTS + BUDGET_INPUTS:
            data[name] = (getattr(self, name).data or "").strip() or None
        if self.schedule_type.data == "interval":
            data["interval_minutes"] = self.interval_minutes.data
            try:
                minutes = float(self.interval_minutes.data)
            except (TypeError, ValueError):
                minutes = None
            # An interval set through the API in seconds shows as a fraction of a minute. "NaN" and "inf"
            # are no fraction: they go to the validator as typed, which refuses them.
            if minutes is not None and math.isfinite(minutes) and not minutes.is_integer():
                data["interval_seconds"] = round(minutes * 60)
                del data["interval_minutes"]
        return data

    def validated(self, settings, base=None):
        """Validated values, or None with the messages attached to their fields."""
        if not self.validate_on_submit():
            return None
        try:
            return validate_task(self.input_data(), settings, base=base)
        except TaskInputError as exc:
            self.attach_errors(exc.errors)
            return None

    def attach_errors(self, errors):
        """Show the shared validator's messages next to the right fields."""
        for field_name, message in errors.items():
            field = getattr(self, FIELD_FOR_INPUT.get(field_name, field_name), None)
            if field is not None:
                # The shared validator speaks English; fixed messages have translations.
                field.errors = list(field.errors) + [gettext(message)]

    @classmethod
    def for_task(cls, task):
        """A form filled with a task's current values."""
        form = cls(obj=None)
        if not form.is_submitted():
            form.name.data = task.name
            form.prompt.data = task.prompt
            form.system_prompt.data = task.system_prompt or ""
            form.model.data = task.model
            form.temperature.data = str(task.temperature)
            form.max_tokens.data = str(task.max_tokens or "")
            form.schedule_type.data = task.schedule_type
            if task.interval_seconds:
                minutes = task.interval_seconds / 60
                form.interval_minutes.data = str(int(minutes)) if minutes.is_integer() else f"{minutes:g}"
            form.time.data = task.fixed_time or ""
            form.cron.data = task.cron or ""
            form.timezone.data = task.timezone
            zone = ZoneInfo(task.timezone or "UTC")
            for name in ("run_at", "start_at", "end_at"):
                moment = getattr(task, name)
                getattr(form, name).data = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else ""
            for name in ("max_runs", "catchup_seconds", "auto_pause_after") + BUDGET_INPUTS:
                value = getattr(task, name)
                getattr(form, name).data = "" if value is None else str(value)
            for name in ("jitter_seconds", "first_run_delay_seconds"):
                getattr(form, name).data = str(getattr(task, name) or "")
            form.overlap_policy.data = task.overlap_policy
            form.enabled.data = task.enabled
            form.batch.data = task.batch
            form.pause_on_budget.data = task.pause_on_budget
            form.connection_id.data = str(task.connection_id or "")
            form.max_attempts.data = str(task.max_attempts or "")
            form.output_schema.data = json.dumps(task.output_schema, indent=2) if task.output_schema else ""
            form.ignore_patterns.data = "\n".join(task.ignore_patterns or [])
            form.fallbacks.data = fallbacks.as_lines(task.fallbacks)
            form.notify_on.data = list(task.notify_on or [])
            form.channel_ids.data = [str(channel.id) for channel in task.channels]
        return form
