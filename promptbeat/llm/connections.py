"""Named OpenAI-compatible endpoints: validation, saving with the key encrypted, and testing."""
import logging
import re

from flask import current_app

from promptbeat.llm import crypto
from promptbeat.llm import client as llm
from promptbeat.llm import netguard
from promptbeat.extensions import db
from promptbeat.fields import one_line
from promptbeat.models import Connection
from promptbeat.ratelimits.limits import RateLimits
from promptbeat.runs import fallbacks

logger = logging.getLogger(__name__)

FIELDS = ("name", "base_url", "api_key", "default_model", "extra_headers", "fallbacks", "rpm_limit", "tpm_limit",
          "max_concurrency")
# The rate limits a connection may have (promptbeat.ratelimits): whole numbers from 1 to this, or null for none.
LIMIT_FIELDS = {"rpm_limit": 1_000_000, "tpm_limit": 1_000_000_000, "max_concurrency": 100_000}
URL_EXAMPLE = "https://api.openai.com/v1"
# The SDK's endpoint when a connection has no base URL: a key saved without one goes there.
DEFAULT_ORIGIN = ("https", "api.openai.com", 443)
MAX_KEY_CHARS = 4096
MAX_HEADERS = 20
MAX_HEADER_VALUE_CHARS = 4096
# An HTTP token (RFC 9110), bounded.
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
# Printable ASCII only: no CR/LF/NUL or other control character can split or end a header.
HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")
# Headers the client sets itself; a connection may not override the key through a header.
RESERVED_HEADERS = {"authorization", "content-type", "content-length", "host", "transfer-encoding", "connection"}
# What the API and pages show for a header value; sent back in an update, it keeps the stored value.
MASK = "••••"
SETTING = "PROMPTBEAT_CONNECTION_ALLOW_PRIVATE"


class ConnectionInputError(ValueError):
    """Connection input that cannot be saved, with a message per field."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _settings():
    return current_app.config["PROMPTBEAT"]


def save_connection(data, connection=None):
    """Create or (partially) update a connection; an api_key of "" removes the stored key.

    Nothing is changed unless every field is valid (see connection_values).
    """
    values = connection_values(data, connection)
    connection = connection or Connection()
    for name, value in values.items():
        setattr(connection, name, value)
    db.session.add(connection)
    db.session.commit()
    logger.info("saved connection %s (%s)", connection.id, connection.name)
    return connection


def connection_values(data, connection=None):
    """The columns a (partial) input would set, or ConnectionInputError with a message per field.

    Secrets (the key, header values) come back encrypted, and never follow a change of the URL's
    origin: a key entered for one server must be entered again, or removed, to move the connection
    to another (see origin_change_errors).
    """
    settings = _settings()
    errors = {f: "Unknown field." for f in sorted(set(data) - set(FIELDS))}
    values = {}
    if connection is None or "name" in data:
        values["name"] = one_line(data.get("name"), "name", errors, 100, required=True)
    if "base_url" in data or connection is None:
        values["base_url"] = _base_url(data.get("base_url"), errors, settings)
    if "default_model" in data:
        values["default_model"] = one_line(data.get("default_model"), "default_model", errors, 200) or None
    if "extra_headers" in data:
        stored = connection.extra_headers if connection is not None else None
        values["extra_headers"] = _headers(data.get("extra_headers"), errors, settings, stored or {})
    if "fallbacks" in data:
        value = data["fallbacks"]
        try:
            if isinstance(value, str):
                value = fallbacks.from_lines(value)  # the form's textarea: one fallback a line
            values["fallbacks"] = fallbacks.check(value, connection.id if connection is not None else None)
        except fallbacks.FallbackError as exc:
            errors["fallbacks"] = str(exc)
    for field, most in LIMIT_FIELDS.items():
        if field in data:
            values[field] = _limit(data[field], field, most, errors)
    if "name" in values and not errors.get("name"):
        clash = db.session.execute(db.select(Connection).filter_by(name=values["name"])).scalar()
        if clash is not None and clash is not connection:
            errors["name"] = "A connection with this name exists."
    if "api_key" in data:
        key = one_line(data.get("api_key"), "api_key", errors, MAX_KEY_CHARS)
        if key and "api_key" not in errors and not HEADER_VALUE.match(key):
            # The key travels in a header: anything but printable ASCII would fail every call.
            errors["api_key"] = "Must be printable ASCII, without line breaks or control characters."
        values["api_key_encrypted"] = (_encrypted(settings, key, "api_key", errors)
                                       if key and "api_key" not in errors else None)
    if connection is not None and "base_url" in values and not errors.get("base_url"):
        errors.update(origin_change_errors(connection, values["base_url"], data))
    if errors:
        raise ConnectionInputError(errors)
    return values


def origin_change_errors(connection, base_url, data):
    """Errors for a URL change that would send stored secrets to another server (scheme, host or port).

    Refused rather than the secrets cleared, so that no task silently loses its key: the one who
    moves the connection says what the new server gets (its key, or "" for none).
    """
    if _origin(connection.base_url) == _origin(base_url):
        return {}
    errors = {}
    if connection.api_key_encrypted and "api_key" not in data:
        errors["api_key"] = "The URL now points to another server: give its API key again, or remove the stored one."
    # Headers left out of the request are kept, as masked ones are.
    given = data.get("extra_headers", {"": MASK})
    if connection.extra_headers and isinstance(given, dict) and MASK in given.values():
        errors["extra_headers"] = "The URL now points to another server: give the header values again, or remove them."
    return errors


def _origin(url):
    if not url:
        return DEFAULT_ORIGIN
    try:
        parts = netguard.http_url(url)
    except netguard.AddressRefused:
        return None  # a URL saved before URLs were checked: any change of it counts as a move
    return parts.scheme.lower(), parts.hostname.lower(), parts.port or netguard.DEFAULT_PORTS[parts.scheme]


def _base_url(value, errors, settings):
    value = one_line(value, "base_url", errors, 2000)
    if not value or errors.get("base_url"):
        return None
    try:
        parts = netguard.http_url(value, URL_EXAMPLE)
        if parts.username is not None or parts.password is not None:
            # The URL is shown to every user; credentials go in the key or a header, which are not.
            raise netguard.AddressRefused("Put credentials in the API key or a header, not in the URL.")
        if not settings.connection_allow_private:
            netguard.checked_addresses(parts, allow_private=False, setting=SETTING)
    except netguard.AddressRefused as exc:
        errors["base_url"] = str(exc)
        return None
    return value.rstrip("/")


def _limit(value, field, most, errors):
    """A rate limit: a whole number from 1 to most (text from a form too), or None for no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        errors[field] = "Must be a whole number, or empty for no limit."
    elif not 1 <= value <= most:
        errors[field] = f"Must be between 1 and {most}, or empty for no limit."
    else:
        return value
    return None


def _headers(value, errors, settings, stored):
    """Validated headers, their values encrypted; a value of MASK keeps the stored one of that name."""
    if value in (None, "", {}):
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        errors["extra_headers"] = "Must be an object of header names to text values."
        return None
    if len(value) > MAX_HEADERS:
        errors["extra_headers"] = f"At most {MAX_HEADERS} headers."
        return None
    kept = {name.lower(): secret for name, secret in stored.items()}
    headers, seen = {}, set()
    for name, text in value.items():
        shown = repr(name) if len(name) <= 100 else "A header name"
        if not HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
            message = f"{shown} cannot be set as an extra header."
        elif name.lower() in seen:
            message = f"{shown} is given twice."
        elif text == MASK and name.lower() not in kept:
            message = f"{shown} has no stored value to keep; give its value."
        elif text != MASK and (len(text) > MAX_HEADER_VALUE_CHARS or not HEADER_VALUE.match(text)):
            message = (f"The value of {shown} must be printable ASCII (no line breaks or control characters) of "
                       f"at most {MAX_HEADER_VALUE_CHARS} characters.")
        else:
            seen.add(name.lower())
            headers[name] = kept[name.lower()] if text == MASK else _encrypted(settings, text.strip(),
                                                                                "extra_headers", errors)
            continue
        errors["extra_headers"] = message
        return None
    return headers


def _encrypted(settings, secret, field, errors):
    """A secret as stored: {"fernet": token}; a plain string is a header value saved before encryption."""
    try:
        token = crypto.encrypt(settings, secret)
    except crypto.CryptoError as exc:
        errors[field] = str(exc)
        return None
    return token if field == "api_key" else {"fernet": token}


def _header_value(settings, stored):
    return crypto.decrypt(settings, stored["fernet"]) if isinstance(stored, dict) else stored


def endpoint_for(task, settings):
    """Where the task's calls go: its connection, else OPENAI_BASE_URL / OPENAI_API_KEY."""
    # The task may be a plain row (the worker's run path), so its connection is looked up by id.
    connection = db.session.get(Connection, task.connection_id) if task.connection_id else None
    if connection is None:
        return llm.Endpoint(base_url=settings.openai_base_url, api_key=settings.openai_api_key)
    return endpoint_of(connection, settings)


def endpoint_of(connection, settings):
    """The connection's endpoint with its secrets decrypted; raises crypto.CryptoError if they cannot be."""
    api_key = crypto.decrypt(settings, connection.api_key_encrypted) if connection.api_key_encrypted else None
    headers = {name: _header_value(settings, stored) for name, stored in (connection.extra_headers or {}).items()}
    return llm.Endpoint(
        base_url=connection.base_url,
        api_key=api_key,
        headers=tuple(sorted(headers.items())),
        name=connection.name,
        allow_private=settings.connection_allow_private,
        limits=RateLimits.of_connection(connection),
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
    """Re-encrypt every stored key and header value under the first PROMPTBEAT_FERNET_KEYS key.

    Header values saved in plain text before they were encrypted are encrypted now. Returns the
    number of API keys.
    """
    settings = _settings()
    count = 0
    for connection in db.session.execute(db.select(Connection)).scalars():
        if connection.api_key_encrypted:
            connection.api_key_encrypted = crypto.rotate(settings, connection.api_key_encrypted)
            count += 1
        if connection.extra_headers:
            connection.extra_headers = {
                name: {"fernet": crypto.rotate(settings, stored["fernet"]) if isinstance(stored, dict)
                       else crypto.encrypt(settings, stored)}
                for name, stored in connection.extra_headers.items()}
    db.session.commit()
    return count


def connection_json(connection):
    """A connection as the API returns it: whether it has a key, never the key; header names, never values."""
    return {
        "id": connection.id,
        "name": connection.name,
        "base_url": connection.base_url,
        "default_model": connection.default_model,
        "extra_headers": masked_headers(connection),
        "has_api_key": connection.has_api_key,
        "fallbacks": connection.fallbacks or [],
        "rpm_limit": connection.rpm_limit,
        "tpm_limit": connection.tpm_limit,
        "max_concurrency": connection.max_concurrency,
    }


def masked_headers(connection):
    """The connection's header names, each with MASK for its value."""
    return {name: MASK for name in connection.extra_headers or {}}
