"""Prompt variables, rendered in a sandboxed Jinja environment: {{ now }}, {{ task.name }}, ..."""
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Sandboxed and immutable: a prompt cannot reach Python internals or change what it is given.
# StrictUndefined makes a misspelt variable an error instead of silently empty text.
_environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
VARIABLES = ("now", "today", "task", "run_count", "last_output")


class PromptTemplateError(ValueError):
    """A prompt that does not compile or render; the message says where and why."""


def check(text):
    """Raise PromptTemplateError if text does not compile as a template."""
    try:
        _environment.parse(text)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise PromptTemplateError(f"Template error{f' on line {line}' if line else ''}: {exc.message}") from None


def render(text, *, task_name, timezone, run_count, last_output, moment):
    """The prompt as sent: now/today in the task's time zone, the task's name, its count of runs and last output."""
    if "{" not in text:
        return text  # nothing to render: keep the common case free
    local = moment.astimezone(ZoneInfo(timezone))
    context = {
        "now": local.isoformat(timespec="seconds"),
        "today": local.date().isoformat(),
        "task": {"name": task_name},
        "run_count": run_count,
        "last_output": last_output or "",
    }
    try:
        return _environment.from_string(text).render(context)
    except TemplateError as exc:
        raise PromptTemplateError(f"Template error: {exc.message}") from None
    except Exception as exc:  # e.g. a ZeroDivisionError in an expression
        raise PromptTemplateError(f"Template error: {type(exc).__name__}: {exc}") from None
