"""Prompt variables, rendered in a bounded Jinja sandbox: {{ now }}, {{ task.name }}, {{ last_output }}, ..."""
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, TemplateError

from promptbeat.runs.metered import Budget, BudgetExceeded, MeteredEnvironment

# Sandboxed and immutable: a prompt cannot reach Python internals or change what it is given.
# StrictUndefined makes a misspelt variable an error instead of silently empty text.
_environment = MeteredEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
# English whatever the server's locale, so that a prompt reads the same on every machine.
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# What a template is tried with when it is saved.
SAMPLE_OUTPUT = "A sample answer from the model."


class PromptTemplateError(ValueError):
    """A prompt that does not compile or render; the message says where and why."""


class PromptLimitError(PromptTemplateError):
    """A prompt whose rendering ran out of steps or time, or came out longer than the limit."""


@dataclass(frozen=True)
class Limits:
    """What one render may spend: steps (promptbeat.runs.metered), seconds, and characters of output."""

    max_steps: int
    max_seconds: float
    max_chars: int

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.template_max_steps, settings.template_max_seconds, settings.max_prompt_chars)


def check(text, limits, *, task_name=""):
    """Raise PromptTemplateError if text does not compile, or PromptLimitError if a render with
    sample values passes the limits. Other failures depend on the values of a real run, and are left to it.
    """
    try:
        _environment.parse(text)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise PromptTemplateError(f"Template error{f' on line {line}' if line else ''}: {exc.message}") from None
    except RecursionError:
        raise PromptTemplateError("Template error: the template is nested too deeply.") from None
    try:
        now = datetime.now(dt_timezone.utc)
        render(text, limits, task_name=task_name, timezone="UTC", run_count=1, last_output=SAMPLE_OUTPUT,
               moment=now, last_changed_at=now)
    except PromptLimitError:
        raise
    except PromptTemplateError:
        pass


def render(text, limits, *, task_name, timezone, run_count, last_output, moment, last_changed_at=None):
    """The prompt as sent: now/today/time/weekday in the task's time zone, the task's name, its count of
    runs, its last output and when that output last changed (in the task's zone; "" before any).

    Rendering stops, with PromptLimitError, as soon as it passes limits.
    """
    if "{" not in text:
        _check_length(len(text), limits, exact=True)
        return text  # nothing to render: keep the common case free
    chunks, length = [], 0
    try:
        zone = ZoneInfo(timezone)
        local = moment.astimezone(zone)
        context = {
            "now": local.isoformat(timespec="seconds"),
            "today": local.date().isoformat(),
            "time": local.strftime("%H:%M"),
            "weekday": WEEKDAYS[local.weekday()],
            "task": {"name": task_name},
            "run_count": run_count,
            "last_output": last_output or "",
            "last_changed_at": (last_changed_at.astimezone(zone).isoformat(timespec="seconds")
                                if last_changed_at else ""),
        }
        with Budget(limits.max_steps, limits.max_seconds):
            # Chunk by chunk, so that the cap stops a long output as it grows.
            for chunk in _environment.compile_metered(text).generate(context):
                length += len(chunk)
                _check_length(length, limits, exact=False)
                chunks.append(chunk)
    except BudgetExceeded as exc:
        raise PromptLimitError(f"The prompt template took too long to render ({exc}).") from None
    except TemplateError as exc:
        raise PromptTemplateError(f"Template error: {exc.message}") from None
    except RecursionError:
        raise PromptTemplateError("Template error: the template is nested or recurses too deeply.") from None
    except PromptTemplateError:
        raise
    except Exception as exc:  # e.g. a ZeroDivisionError in an expression
        raise PromptTemplateError(f"Template error: {type(exc).__name__}: {exc}") from None
    return "".join(chunks)


def _check_length(length, limits, exact):
    if length > limits.max_chars:
        raise PromptLimitError(f"The rendered prompt is {'' if exact else 'at least '}{length} characters; "
                               f"the limit is {limits.max_chars} (PROMPTBEAT_MAX_PROMPT_CHARS).")
