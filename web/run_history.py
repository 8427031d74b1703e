"""How the task page tells a run's story: one error line, the endpoint it called, skipped runs as notes."""
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from flask import current_app

from promptbeat.extensions import db
from promptbeat.models import Connection
from promptbeat.runs import fallbacks
from promptbeat.runs.states import RunStatus

# An error message that starts with its own class ("APITimeoutError: ...", "RateLimitError (HTTP 429): ...").
_LEADING_CLASS = re.compile(r"^(?P<cls>[A-Za-z_][A-Za-z0-9_]*)(?P<status> \(HTTP \d{3}\))?:\s*")


@dataclass(frozen=True)
class ErrorLine:
    """A failed run's error as one line: its class once, the message, and where it was calling."""

    error_class: str | None
    message: str
    model: str | None
    endpoint: str | None


def error_line(run, endpoint):
    """The run's error without the class repeated in the message; endpoint is where the task calls."""
    error_class, message = split_class(run.error, run.error_class)
    return ErrorLine(error_class, message, run.model, endpoint)


def split_class(message, error_class=None):
    """(class, message without a leading "Class:" that repeats it); the HTTP status stays in the message."""
    message = message or ""
    match = _LEADING_CLASS.match(message)
    if match and (error_class is None or match["cls"] == error_class):
        return match["cls"], ((match["status"] or "").strip() + " " + message[match.end():]).strip()
    return error_class, message


def without_class(message, error_class):
    """The message alone, for a line that names the class already."""
    return split_class(message, error_class)[1]


def is_note(run):
    """Whether the run's error text is a reason it did not run (skipped, cancelled), not a failure."""
    return run.status in (RunStatus.SKIPPED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class AnsweredBy:
    """A fallback that answered a run: its model, and its connection's name when it went through another."""

    model: str
    connection: str | None


def answered_by(run):
    """Who answered the run when it was not the first model asked (a fallback); None otherwise."""
    if run.answered_model is None or not run.attempts:
        return None
    first = run.attempts[0]
    if (run.answered_model, run.answered_connection_id) == (first.get("model"), first.get("connection_id")):
        return None
    connection = None
    if run.answered_connection_id is not None and run.answered_connection_id != first.get("connection_id"):
        found = db.session.get(Connection, run.answered_connection_id)
        connection = found.name if found is not None else f"#{run.answered_connection_id}"
    return AnsweredBy(run.answered_model, connection)


def task_endpoint(task):
    """The base URL the task's runs call: its connection's, else OPENAI_BASE_URL; None when neither is set."""
    url = task.connection.base_url if task.connection is not None and task.connection.base_url else (
        current_app.config["PROMPTBEAT"].openai_base_url)
    return _without_credentials(url) if url else None


def _without_credentials(url):
    # Only the address: a user name, password or query in OPENAI_BASE_URL never reaches a page.
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return None
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def init_app(app):
    app.jinja_env.globals.update(error_line=error_line, is_note=is_note, answered_by=answered_by,
                                 fallback_lines=fallbacks.as_lines)
    app.jinja_env.filters["without_class"] = without_class
