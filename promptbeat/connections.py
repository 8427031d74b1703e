"""Named OpenAI-compatible endpoints: validation, saving with the key encrypted, and testing."""
import logging
import re
from urllib.parse import urlsplit

from flask import current_app

from promptbeat import crypto, llm
from promptbeat.extensions import db
from promptbeat.models import Connection

logger = logging.getLogger(__name__)

FIELDS = ("name", "base_url", "api_key", "default_model", "extra_headers")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,100}$")
# Headers the client sets itself; a connection may not override the key through a header.
RESERVED_HEADERS = {"authorization", "content-type", "content-length", "host"}


class ConnectionInputError(ValueError):
    """Connection input that cannot be saved, with a message per field."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _settings():
    return current_app.config["PROMPTBEAT"]


def save_connection(data, connection=None):
    """Create or (partially) update a connection; an api_key of "" removes the stored key."""
    errors = {f: "Unknown field." for f in sorted(set(data) - set(FIELDS))}
    values = {}
    if connection is None or "name" in data:
        values["name"] = _text(data.get("name"), "name", errors, 100, required=True)
    if "base_url" in data or connection is None:
        values["base_url"] = _base_url(data.get("base_url"), errors)
    if "default_model" in data:
        values["default_model"] = _text(data.get("default_model"), "default_model", errors, 200) or None
    if "extra_headers" in data:
        values["extra_headers"] = _headers(data.get("extra_headers"), errors)
    if "name" in values and not errors.get("name"):
        clash = db.session.execute(db.select(Connection).filter_by(name=values["name"])).scalar()
        if clash is not None and clash is not connection:
            errors["name"] = "A connection with this name exists."
    if "api_key" in data:
        key = data.get("api_key")
        if key is not None and not isinstance(key, str):
            errors["api_key"] = "Must be text."
        elif key and key.strip():
            try:
                values["api_key_encrypted"] = crypto.encrypt(_settings(), key.strip())
            except crypto.CryptoError as exc:
                errors["api_key"] = str(exc)
        else:
            values["api_key_encrypted"] = None
    if errors:
        raise ConnectionInputError(errors)
    connection = connection or Connection()
    for name, value in values.items():
        setattr(connection, name, value)
    db.session.add(connection)
    db.session.commit()
    logger.info("saved connection %s (%s)", connection.id, connection.name)
    return connection


def _text(value, field, errors, limit, required=False):
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[field] = "Must be text."
        return None
    value = value.strip()
    if required and not value:
        errors[field] = "This field is required."
    elif len(value) > limit:
        errors[field] = f"Must be at most {limit} characters."
    return value


def _base_url(value, errors):
    value = _text(value, "base_url", errors, 2000)
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors["base_url"] = "Use an http(s) URL such as https://api.openai.com/v1."
    return value.rstrip("/")


def _headers(value, errors):
    if value in (None, "", {}):
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        errors["extra_headers"] = "Must be an object of header names to text values."
        return None
    for name in value:
        if not HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
            errors["extra_headers"] = f"{name!r} cannot be set as an extra header."
            return None
    return dict(value)


def endpoint_for(task, settings):
    """Where the task's calls go: its connection, else OPENAI_BASE_URL / OPENAI_API_KEY."""
    # The task may be a plain row (the worker's run path), so its connection is looked up by id.
    connection = db.session.get(Connection, task.connection_id) if task.connection_id else None
    if connection is None:
        return llm.Endpoint(base_url=settings.openai_base_url, api_key=settings.openai_api_key)
    return endpoint_of(connection, settings)


def endpoint_of(connection, settings):
    api_key = crypto.decrypt(settings, connection.api_key_encrypted) if connection.api_key_encrypted else None
    return llm.Endpoint(
        base_url=connection.base_url,
        api_key=api_key,
        headers=tuple(sorted((connection.extra_headers or {}).items())),
        name=connection.name,
    )


def test_connection(connection):
    """One cheap call (list the models); returns {"ok", "message", "models"}, never the key."""
    settings = _settings()
    try:
        models = llm.list_models(endpoint_of(connection, settings), timeout=min(15.0, settings.llm_timeout_seconds))
    except (llm.LLMError, crypto.CryptoError) as exc:
        return {"ok": False, "error_class": getattr(exc, "error_class", "CryptoError"), "message": str(exc)}
    wanted = connection.default_model
    missing = wanted if wanted and wanted not in models else None
    message = f"Reached {connection.base_url or 'the default endpoint'}: {len(models)} model(s) available."
    if missing:
        message += f" The default model {missing!r} is not among them."
    # Count and missing model as data too: models is cut to 50, and the web page words the outcome in its language.
    return {"ok": True, "message": message, "models": models[:50], "model_count": len(models),
            "missing_model": missing}


def rotate_keys():
    """Re-encrypt every stored key under the first PROMPTBEAT_FERNET_KEYS key; returns the count."""
    settings = _settings()
    rows = db.session.execute(db.select(Connection).where(Connection.api_key_encrypted.is_not(None))).scalars()
    count = 0
    for connection in rows:
        connection.api_key_encrypted = crypto.rotate(settings, connection.api_key_encrypted)
        count += 1
    db.session.commit()
    return count


def connection_json(connection):
    """A connection as the API returns it: whether it has a key, never the key."""
    return {
        "id": connection.id,
        "name": connection.name,
        "base_url": connection.base_url,
        "default_model": connection.default_model,
        "extra_headers": connection.extra_headers or {},
        "has_api_key": connection.has_api_key,
    }
