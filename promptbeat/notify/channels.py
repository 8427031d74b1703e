"""Channels: where runs are delivered. Validation, saving with the secret encrypted, and the API's view of one."""
import base64
import binascii
import logging
import re
import secrets

from flask import current_app

from promptbeat.extensions import db
from promptbeat.fields import one_line
from promptbeat.llm import crypto, netguard
from promptbeat.models import Channel, ChannelKind

logger = logging.getLogger(__name__)

FIELDS = ("name", "kind", "url", "secret", "to")
URL_EXAMPLE = "https://hooks.example.com/promptbeat"
URL_SETTING = "PROMPTBEAT_WEBHOOK_ALLOW_PRIVATE"
MAX_RECIPIENTS = 20
# The Standard Webhooks specification: "whsec_" and the base64 of 24 to 64 random bytes.
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# An address with nothing but what SMTP needs: no display name, comments, quotes, commas, CR/LF or
# other characters that could add a recipient or a header.
ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
                     r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
MAX_ADDRESS_CHARS = 254
KINDS = "webhook, slack, email"


class ChannelInputError(ValueError):
    """Channel input that cannot be saved, with a message per field."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def new_secret():
    """A fresh signing secret as the Standard Webhooks specification has it."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def save_channel(data, channel=None):
    """Create or (partially) update a channel; returns (channel, revealed secret or None).

    A webhook created without a secret gets a generated one, and so does one updated with "secret": "";
    that secret is returned this once and never again. Nothing changes unless every field is valid.
    """
    values, revealed = channel_values(data, channel)
    channel = channel or Channel()
    for name, value in values.items():
        setattr(channel, name, value)
    db.session.add(channel)
    db.session.commit()
    logger.info("saved channel %s (%s)", channel.id, channel.kind)
    return channel, revealed


def channel_values(data, channel=None):
    """The columns a (partial) input would set and the secret to reveal, or ChannelInputError."""
    settings = current_app.config["PROMPTBEAT"]
    errors = {f: "Unknown field." for f in sorted(set(data) - set(FIELDS))}
    values = {}
    if channel is None or "name" in data:
        values["name"] = one_line(data.get("name"), "name", errors, 100, required=True)
    kind = channel.kind if channel is not None else _kind(data.get("kind"), errors)
    if channel is not None and "kind" in data and data["kind"] != channel.kind:
        errors["kind"] = "A channel's kind cannot change; create another channel."
    if kind in (ChannelKind.WEBHOOK, ChannelKind.SLACK):
        if channel is None or "url" in data:
            values["url"] = _url(data.get("url"), errors, settings)
        if data.get("to") is not None:
            errors["to"] = "Only email channels have recipients."
    elif kind == ChannelKind.EMAIL:
        if channel is None or "to" in data:
            values["recipients"] = _addresses(data.get("to"), errors)
        for field in ("url", "secret"):
            if data.get(field) is not None:
                errors[field] = "Email channels have no " + ("URL." if field == "url" else "signing secret.")
    revealed = None
    if kind == ChannelKind.WEBHOOK or (kind == ChannelKind.SLACK and data.get("secret")):
        secret = _secret(data, channel, errors)
        if secret is not None and not errors:
            try:
                values["secret_encrypted"] = crypto.encrypt(settings, secret)
            except crypto.CryptoError as exc:
                errors["secret"] = str(exc)
            if "secret" not in data or data["secret"] == "":
                revealed = secret
    elif kind == ChannelKind.SLACK and data.get("secret") == "":
        values["secret_encrypted"] = None
    if kind is not None:
        values["kind"] = kind
    if values.get("name") and "name" not in errors:
        clash = db.session.execute(db.select(Channel).filter_by(name=values["name"])).scalar()
        if clash is not None and clash is not channel:
            errors["name"] = "A channel with this name exists."
    if errors:
        raise ChannelInputError(errors)
    return values, revealed


def _kind(value, errors):
    if not isinstance(value, str) or value not in set(ChannelKind):
        errors["kind"] = f"Must be one of: {KINDS}."
        return None
    return ChannelKind(value)


def _url(value, errors, settings):
    """A webhook URL: http(s), one line, and unless private targets are allowed, a public address."""
    value = one_line(value, "url", errors, 2000, required=True)
    if not value or "url" in errors:
        return None
    try:
        check_target(value, settings.webhook_allow_private)
    except netguard.AddressRefused as exc:
        errors["url"] = str(exc)
        return None
    return value


def check_target(url, allow_private):
    """Refuse URLs that are not http(s) and, unless private targets are allowed, hosts that resolve to any
    non-public address (promptbeat.llm.netguard); the host is resolved, so a public-looking name that
    points inside the network is refused too."""
    parts = netguard.http_url(url, URL_EXAMPLE)
    if not allow_private:
        netguard.checked_addresses(parts, allow_private=False, setting=URL_SETTING)


def _addresses(value, errors):
    """A list of 1 to MAX_RECIPIENTS plain addresses (user@example.com), without duplicates."""
    if not isinstance(value, list) or not value:
        errors["to"] = "Give a list of one or more email addresses."
        return None
    if len(value) > MAX_RECIPIENTS:
        errors["to"] = f"At most {MAX_RECIPIENTS} addresses."
        return None
    clean = []
    for address in value:
        if not isinstance(address, str) or len(address.strip()) > MAX_ADDRESS_CHARS \
                or not ADDRESS.match(address.strip()):
            errors["to"] = "Each address must be a plain address such as ops@example.com (no name, comma or line break)."
            return None
        if address.strip().lower() not in {a.lower() for a in clean}:
            clean.append(address.strip())
    return clean


def _secret(data, channel, errors):
    """The secret to store: the one given, a new one when absent on create or given as "", else None (keep)."""
    if "secret" not in data:
        return new_secret() if channel is None else None
    value = data["secret"]
    if value in (None, ""):
        return new_secret()
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        errors["secret"] = f"Must start with {SECRET_PREFIX} followed by base64 (or leave it out to have one made)."
        return None
    try:
        raw = base64.b64decode(value[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        errors["secret"] = f"Must start with {SECRET_PREFIX} followed by base64 (or leave it out to have one made)."
        return None
    if not 24 <= len(raw) <= 64:
        errors["secret"] = "Must encode between 24 and 64 random bytes."
        return None
    return value


def secret_of(channel, settings):
    """The channel's signing secret decrypted, or None; raises crypto.CryptoError if it cannot be."""
    return crypto.decrypt(settings, channel.secret_encrypted) if channel.secret_encrypted else None


def rotate_secrets():
    """Re-encrypt every channel's signing secret under the first PROMPTBEAT_FERNET_KEYS key; returns how many."""
    settings = current_app.config["PROMPTBEAT"]
    count = 0
    for channel in db.session.execute(db.select(Channel).where(Channel.secret_encrypted.is_not(None))).scalars():
        channel.secret_encrypted = crypto.rotate(settings, channel.secret_encrypted)
        count += 1
    db.session.commit()
    return count


def channel_json(channel, revealed=None):
    """A channel as the API returns it: whether it has a secret, never the secret, except the one revealed now."""
    data = {
        "id": channel.id,
        "name": channel.name,
        "kind": channel.kind,
        "url": channel.url,
        "to": list(channel.recipients or []),
        "has_secret": bool(channel.secret_encrypted),
    }
    if revealed is not None:
        data["secret"] = revealed
    return data
