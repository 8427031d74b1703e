"""Two languages, English and Simplified Chinese, from the user's setting or the browser."""
from datetime import datetime, timezone

from flask import g, request, session
from flask_babel import Babel, format_timedelta, get_locale, get_translations
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from promptbeat.models import DeliveryStatus
from promptbeat.ratelimits.limits import WaitReason
from promptbeat.runs.states import RunStatus

LANGUAGES = {"en": "English", "zh_Hans": "简体中文"}
# Browser tags we accept, mapped to our locales; any other Chinese tag reads Simplified best.
BROWSER_TAGS = {"en": "en", "zh-CN": "zh_Hans", "zh-Hans": "zh_Hans", "zh-SG": "zh_Hans", "zh": "zh_Hans"}
babel = Babel()


def select_locale():
    """The user's chosen language, else the best match for Accept-Language, else English."""
    # Without the database the user's setting cannot be read; the browser's language still can.
    if g.get("database_unavailable"):
        return _browser_locale()
    if current_user and current_user.is_authenticated and current_user.language in LANGUAGES:
        return current_user.language
    # Chosen on the sign-in page, before there was a user to keep it.
    if session.get("language") in LANGUAGES:
        return session["language"]
    return _browser_locale()


def _browser_locale():
    tag = request.accept_languages.best_match(list(BROWSER_TAGS))
    if tag is None and any(lang.lower().startswith("zh") for lang, _ in request.accept_languages):
        tag = "zh"
    return BROWSER_TAGS.get(tag, "en")


def relative_time(moment, now=None):
    """'3 minutes ago' or 'in 2 hours', in the page's language."""
    if moment is None:
        return "—"
    now = now or datetime.now(timezone.utc)
    return format_timedelta(moment - now, add_direction=True, threshold=1.0)


def translate_message(text):
    """Runtime text (an error, a status word) in the page's language, as plain text for escaping.

    A known message comes back translated, anything else unchanged. Unlike `_()` in a template,
    the result is never marked safe and never used as a format string, so markup, `%` and `{{` in
    it reach the page as the characters they are.
    """
    if text is None:
        return ""
    return str(get_translations().gettext(str(text)))


def html_lang():
    """The lang attribute for <html>: zh-Hans or en."""
    return str(get_locale()).replace("_", "-")


def status_words():
    """Each run status's word in the page's language, keyed by its value."""
    return {str(status): str(word) for status, word in RUN_STATUS_WORDS.items()}


def wait_words():
    """Each wait reason's words in the page's language, keyed by its value."""
    return {str(reason): str(words) for reason, words in WAIT_REASON_WORDS.items()}


def delivery_words():
    """Each delivery status's word in the page's language, keyed by its value."""
    return {str(status): str(word) for status, word in DELIVERY_STATUS_WORDS.items()}


def init_app(app):
    babel.init_app(app, locale_selector=select_locale, default_translation_directories="translations")
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, html_lang=html_lang, status_words=status_words,
                                 delivery_words=delivery_words, wait_words=wait_words)
    app.jinja_env.filters["ago"] = relative_time
    app.jinja_env.filters["message"] = translate_message


# The word of every run status (promptbeat.runs.states.RunStatus), spelt out so extraction finds it;
# tests/runs/test_run_states.py fails if a status has no word here or no translation.
RUN_STATUS_WORDS = {
    RunStatus.QUEUED: _l("queued"), RunStatus.WAITING: _l("waiting"), RunStatus.RUNNING: _l("running"),
    RunStatus.SUBMITTED: _l("submitted"), RunStatus.SUCCESS: _l("success"),
    RunStatus.FAILED: _l("failed"), RunStatus.SKIPPED: _l("skipped"), RunStatus.LOST: _l("lost"),
    RunStatus.CANCELLED: _l("cancelled"),
}
# Why a run waits (promptbeat.ratelimits.limits.WaitReason), shown beside its status.
WAIT_REASON_WORDS = {
    WaitReason.RATE_LIMIT: _l("its connection's rate limit"),
    WaitReason.PROVIDER: _l("the provider asked to slow down"),
    WaitReason.JITTER: _l("the task's jitter"), WaitReason.SPREAD: _l("spreading a burst of runs"),
    WaitReason.FIRST_RUN_DELAY: _l("the first-run delay"),
}
DELIVERY_STATUS_WORDS = {
    DeliveryStatus.DELIVERED: _l("delivered"), DeliveryStatus.RETRYING: _l("retrying"),
    DeliveryStatus.FAILED: _l("delivery failed"),
}
# Words that reach templates as data (trigger, role, messages); listed so extraction finds them.
DATA_WORDS = (
    _l("immediate"), _l("scheduled"), _l("manual"), _l("admin"), _l("viewer"),
    _l("This field is required."), _l("Must be a number."), _l("Must be a whole number."),
    _l("Must be true or false."), _l("Must be one line, without control characters."),
    _l("Must not contain control characters other than line breaks and tabs."), _l("Use HH:MM in 24-hour time, for example 09:30."),
    _l("Use a 5-field cron expression: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5'."),
    _l("Give the interval: interval_minutes (or interval_seconds)."), _l("Not a valid choice."),
    _l("Give a date and time, for example 2030-01-31T09:00."), _l("The end must come after the start."),
    _l("Use an ISO 8601 date and time, for example 2030-01-31T09:00 or 2030-01-31T09:00+01:00."),
    _l("Must be one of: skip, allow."), _l("active"), _l("paused"), _l("completed"),
    _l("The search cannot contain NUL characters."),
)
# Channel and notify-rule messages from promptbeat.notify.channels and promptbeat.validation that pages show.
CHANNEL_WORDS = (
    _l("A channel with this name exists."), _l("Use an http(s) URL such as https://hooks.example.com/promptbeat."),
    _l("Give a list of one or more email addresses."),
    _l("Each address must be a plain address such as ops@example.com (no name, comma or line break)."),
    _l("Must be one of: webhook, slack, email."),
    _l("Must be a list of: every, change, failure, recovery, auto_pause, budget."),
)
# Connection messages from promptbeat.llm.connections and promptbeat.llm.crypto that the connections page shows.
CONNECTION_WORDS = (
    _l("A connection with this name exists."), _l("Use an http(s) URL such as https://api.openai.com/v1."),
    _l("PROMPTBEAT_FERNET_KEYS is not set, so API keys cannot be stored encrypted. Set it to one or "
       "more comma-separated keys from `python -c \"from cryptography.fernet import Fernet; "
       "print(Fernet.generate_key().decode())\"` (newest first)."),
    _l("PROMPTBEAT_FERNET_KEYS holds a malformed key: each must be 32 url-safe base64 bytes."),
    _l("A stored API key cannot be decrypted with PROMPTBEAT_FERNET_KEYS: was the key that "
       "encrypted it removed from the list?"),
    _l("Must not contain control characters (such as NUL or a line break)."),
    _l("Must be printable ASCII, without line breaks or control characters."),
    _l("Put credentials in the API key or a header, not in the URL."),
    _l("The URL now points to another server: give its API key again, or remove the stored one."),
    _l("The URL now points to another server: give the header values again, or remove them."),
    _l("Must be a whole number, or empty for no limit."),
)
# Messages from promptbeat.accounts.users (and the forms around it) that the account and users pages show.
ACCOUNT_WORDS = (
    _l("The password must be at least %(count)d characters."), _l("The password must be at most %(count)d characters."),
    _l("Give an email address such as name@example.com."), _l("A user with this email address exists."),
    _l("The current password is not right."), _l("The two new passwords differ."),
    _l("The last active admin cannot become a viewer."), _l("The last active admin cannot be disabled."),
    _l("Write one header a line, as Name: value, each name once."),
    _l("The password must not contain control characters or line breaks."),
)
