"""Model fallback: the lists tasks and connections keep, and which errors move a run on to the next model."""
from promptbeat.extensions import db
from promptbeat.fields import one_line
from promptbeat.models import Connection
from promptbeat.runs import retry

MAX_FALLBACKS = 5
MAX_MODEL_CHARS = 200
KEYS = frozenset({"model", "connection_id"})
MAX_ID = 2**31 - 1
# A form's line: "model", or "model @ connection name" (a model's own "@", as in "name@version", stays).
SEPARATOR = " @ "
LIST_MESSAGE = "Must be a list of objects with a model and a connection_id (or null)."
TOO_MANY_MESSAGE = f"At most {MAX_FALLBACKS} fallbacks."


class FallbackError(ValueError):
    """A fallback list that cannot be saved; the message says which entry and why, without echoing it."""


def moves_on(error):
    """Whether another model may answer where this one failed (an llm.LLMError, its retries spent).

    Rate limits, exhausted quota, 5xx, timeouts, unreachable servers and a model the server does not
    have: yes. A request the server refuses as such (400, 422), a refused key or address: no, the
    next model would be sent the same request, or through the same wrong configuration.
    """
    return error.error_class == "InsufficientQuota" or error.status == 404 or retry.is_retryable(error)


def check(value, own_connection_id=None, primary_model=None):
    """The list as stored ([{"model", "connection_id"}]), None when empty; raises FallbackError.

    A connection_id of None means the list's own connection (the task's, or the connection whose list
    it is). No entry may repeat another, nor the primary model on the primary connection.
    """
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise FallbackError(LIST_MESSAGE)
    if len(value) > MAX_FALLBACKS:
        raise FallbackError(TOO_MANY_MESSAGE)
    entries, seen = [], {(primary_model, own_connection_id)} if primary_model else set()
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict) or not set(item) <= KEYS or "model" not in item:
            raise FallbackError(f"Fallback {number}: must be an object with a model and a connection_id (or null).")
        errors = {}
        model = one_line(item["model"], "model", errors, MAX_MODEL_CHARS, required=True)
        if errors:
            raise FallbackError(f"Fallback {number}, model: {errors['model']}")
        connection_id = item.get("connection_id")
        if connection_id is not None and (isinstance(connection_id, bool) or not isinstance(connection_id, int)
                                          or not 1 <= connection_id <= MAX_ID):
            raise FallbackError(f"Fallback {number}, connection_id: must be a connection's id or null.")
        key = (model, connection_id or own_connection_id)
        if key in seen:
            raise FallbackError(f"Fallback {number}: the same model on the same connection is already tried.")
        seen.add(key)
        entries.append({"model": model, "connection_id": connection_id})
    ids = {entry["connection_id"] for entry in entries} - {None}
    found = set(db.session.execute(db.select(Connection.id).where(Connection.id.in_(ids))).scalars()) if ids else set()
    for number, entry in enumerate(entries, 1):
        if entry["connection_id"] is not None and entry["connection_id"] not in found:
            raise FallbackError(f"Fallback {number}, connection_id: no connection with id {entry['connection_id']}.")
    return entries


def from_lines(text):
    """The list a form's text gives, one fallback a line; raises FallbackError for an unknown connection name."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_FALLBACKS:
        raise FallbackError(TOO_MANY_MESSAGE)  # before a name of each is looked up
    entries = []
    for number, line in enumerate(lines, 1):
        model, separator, name = line.rpartition(SEPARATOR)
        if not separator:
            entries.append({"model": line, "connection_id": None})
            continue
        connection_id = db.session.execute(db.select(Connection.id).filter_by(name=name.strip())).scalar()
        if connection_id is None:
            raise FallbackError(f"Fallback {number}: no connection has the name after {SEPARATOR.strip()!r}.")
        entries.append({"model": model, "connection_id": connection_id})
    return entries


def as_lines(entries):
    """A stored list as the form's text (from_lines reads it back).

    An entry whose connection was deleted is left out, as runs leave it out.
    """
    names = dict(db.session.execute(db.select(Connection.id, Connection.name).where(
        Connection.id.in_({entry["connection_id"] for entry in entries} - {None}))).all()) if entries else {}
    return "\n".join(entry["model"] + (f"{SEPARATOR}{names[entry['connection_id']]}" if entry["connection_id"] else "")
                     for entry in entries or () if entry["connection_id"] is None or entry["connection_id"] in names)
