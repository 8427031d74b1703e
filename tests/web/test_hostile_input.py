"""A corpus of hostile values sent in every field of every API body and form: never a 5xx, never a half-saved change.

Each answer is one of two, decided per kind of field and class of value (see `Kind` and `Hostile`):
- refused: a 4xx naming the field (the API's `fields[<field>]`, or the form shown again with a message at the
  field) and the database exactly as before; a body over the size limit may instead be turned away whole (413);
- accepted: the value stored exactly as sent (less surrounding blanks) and shown escaped on the pages.
The rules: text of any script, markup and format strings are accepted by text fields and shown escaped; NUL,
1 MB and, outside multi-line text, line breaks and other control characters are refused everywhere; a value of
the wrong JSON type is refused, null included where the field is required (elsewhere null means "not set");
calendar edges a datetime cannot hold, and schedules that would never fire, are refused.
Fields come from the code (validation.FIELDS, connections.FIELDS, the rendered forms), so a new one cannot be
forgotten: it fails here until it is given a kind.
"""
import enum
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
import redis as redis_lib
from markupsafe import escape
from werkzeug.security import generate_password_hash

from promptbeat import validation
from promptbeat.llm import connections
from promptbeat.notify import channels
from promptbeat.scheduling.schedules import known_zone
from promptbeat.extensions import db
from promptbeat.models import ApiToken, Channel, Connection, Role, Task, User
from tests.conftest import csrf_token

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "correct horse battery"


class Kind(enum.Enum):
    """What a field holds; it decides which hostile values the field may accept."""

    LINE = "single-line text"  # names, models: any printable text on one line, shown escaped
    TEXT = "multi-line text"  # pause notes: line breaks too
    TEMPLATE = "prompt template"  # multi-line text that must compile as a template
    SECRET = "key sent in a header"  # printable ASCII on one line; never shown back
    HEADERS = "object of header values"  # each value a SECRET
    HEADER_LINES = "header lines of a form"  # "Name: value" a line; text without a colon is no header
    NUMBER = "number in a range"
    CHOICE = "one of a fixed set"
    FLAG = "JSON boolean"
    CHECKBOX = "HTML checkbox"  # a browser sends any value for ticked: any submitted text means true
    START = "first or only fire time"  # must lead to a run within the schedule horizon
    END = "end of a schedule"  # any moment a datetime holds in UTC
    CLOCK = "HH:MM"
    CRON = "cron expression"
    ZONE = "IANA time zone"
    URL = "http(s) URL"
    CREDENTIAL = "sign-in credential"  # never matches: the sign-in fails with a message
    REDIRECT = "page to return to"  # followed only to a path of this site
    SCHEMA = "JSON Schema object"  # an object the metaschema accepts; the form's text must be one as JSON
    PATTERNS = "list of regular expressions"  # each one line that RE2 compiles
    PATTERN_LINES = "regular expressions, one a line"  # the form's textarea of PATTERNS
    RULES = "list of notify rules"  # [] means never; anything but known rules is refused
    IDS = "list of channel ids"  # [] means none; an id that is no channel's is refused
    FALLBACKS = "list of fallback models"  # [] means none; each item an object {model, connection_id}
    FALLBACK_LINES = "fallback models, one a line"  # the form's textarea of FALLBACKS: each line a model
    SIGNING_SECRET = "whsec_ and base64"  # nothing of the corpus; null or "" makes a new one
    ADDRESSES = "list of plain email addresses"  # nothing of the corpus: each address is a bare user@host
    BROWSER_ZONE = "zone the browser sends with the sign-in"  # taken if known, else ignored: the sign-in goes on


PRINTABLE = frozenset({Kind.LINE, Kind.TEXT, Kind.TEMPLATE, Kind.SECRET})
UNICODE = frozenset({Kind.LINE, Kind.TEXT, Kind.TEMPLATE})  # not SECRET: a header value is ASCII
# Text that RE2 compiles, line by line: a pattern field takes it (and stores it as a list of lines); so does a
# field of fallback models, each line a model name.
AS_PATTERNS = frozenset({Kind.PATTERN_LINES, Kind.FALLBACK_LINES})
MARKUP = "<script>alert(1)</script><b>bold</b>"


@dataclass(frozen=True)
class Hostile:
    """One value of the corpus and the kinds of field that store it as sent (every other kind refuses it).

    A value with `only_for` is one more of its class for the kinds it is aimed at (numbers for a number field,
    calendar edges for a moment); every field still gets the first value of each class.
    """

    label: str
    value: object
    accepted_by: frozenset = frozenset()
    only_for: frozenset = frozenset()

    @property
    def oversized(self):
        # A body this large may be turned away as a whole (413) before any field is read.
        return isinstance(self.value, str) and len(self.value) > 500_000

    def applies_to(self, kind):
        return not self.only_for or kind in self.only_for


NUMBERS = frozenset({Kind.NUMBER})
MOMENTS = frozenset({Kind.START, Kind.END})
TEXTS = [
    Hostile("nul", "before\x00after"),
    Hostile("crlf", "line one\r\nline two", frozenset({Kind.TEXT, Kind.TEMPLATE}) | AS_PATTERNS),
    Hostile("1mb", "x" * 2**20),
    Hostile("crlf-in-url", "https://hooks.example.com/a\r\nX-Forged: 1", only_for=frozenset({Kind.URL})),
    Hostile("rtl-emoji", "Report \u202egnp.exe\u202c 🚀 👩‍👩‍👧", UNICODE | AS_PATTERNS),
    Hostile("markup", MARKUP, PRINTABLE | AS_PATTERNS),
    Hostile("printf", "%d %s %(name)s {0} %%", PRINTABLE | AS_PATTERNS),
    Hostile("bad-template", "{{ }} {% endfor %}", frozenset({Kind.LINE, Kind.TEXT, Kind.SECRET}) | AS_PATTERNS),
    # Calendar edges: past the last moment a datetime holds in UTC, before the first, a day that does not
    # exist, and a moment so far ahead that a schedule starting then never fires within any horizon.
    # "9999-12-31T23: 59:59-05:00" is also a header line: a header name, a colon, a printable value.
    Hostile("past-9999", "9999-12-31T23:59:59-05:00", PRINTABLE | AS_PATTERNS | {Kind.HEADER_LINES}),
    Hostile("before-0001", "0001-01-01T00:00+01:00", PRINTABLE, only_for=MOMENTS),
    Hostile("feb-30", "2025-02-30T09:00", PRINTABLE, only_for=MOMENTS),
    Hostile("year-9999", "9999-12-30T00:00+00:00", PRINTABLE | {Kind.END}, only_for=MOMENTS),
    # Text where a number is expected.
    Hostile("nan-text", "NaN", PRINTABLE | AS_PATTERNS),
    Hostile("1e308-text", "1e308", PRINTABLE, only_for=NUMBERS),
    Hostile("99-digits", "9" * 99, PRINTABLE, only_for=NUMBERS),
]
# Values whose display can go wrong: an accepted one is looked for on the pages.
SHOWN = {"crlf", "rtl-emoji", "markup", "printf", "bad-template"}
# JSON only: values of the wrong type, or numbers no field holds.
JSON_ONLY = [
    Hostile("list", ["a"], frozenset({Kind.PATTERNS})),
    Hostile("empty-list", [], frozenset({Kind.PATTERNS, Kind.RULES, Kind.IDS, Kind.FALLBACKS})),
    Hostile("hostile-items", ["every", "a\r\nBcc: x@evil.example", "<b>", "\x00"]),
    Hostile("huge-list", ["ops@example.com"] * 10_000),
    # Unknown keywords are allowed in a JSON Schema: {"a": 1} is one that any value conforms to.
    Hostile("object", {"a": 1}, frozenset({Kind.SCHEMA})),
    Hostile("empty-object", {}, frozenset({Kind.HEADERS, Kind.SCHEMA})),
    Hostile("true", True, frozenset({Kind.FLAG})),
    Hostile("negative", -1),
    Hostile("big-int", 10**30, only_for=NUMBERS),
    Hostile("nan", math.nan, only_for=NUMBERS),
    Hostile("infinity", math.inf, only_for=NUMBERS),
]
# Null means "not set": a required field refuses it, an optional one may take its default or refuse it.
NULL = Hostile("null", None)
CORPUS = TEXTS + JSON_ONLY + [NULL]


def json_values(kind):
    values = [h for h in CORPUS if h.applies_to(kind)]
    if kind is not Kind.HEADERS:
        return values
    # Header values carry the text corpus inside the object a header field expects.
    return values + [Hostile(f"header-{h.label}", {"X-Test": h.value},
                             frozenset({Kind.HEADERS}) if Kind.SECRET in h.accepted_by else frozenset())
                     for h in TEXTS if h.applies_to(Kind.SECRET)]


class Verdict(enum.Enum):
    ACCEPT = "accepted"
    REFUSE = "refused"
    EITHER = "accepted as not set, or refused"


def verdict(kind, hostile, required=False):
    if hostile is NULL:
        return Verdict.REFUSE if required else Verdict.EITHER
    if kind in (Kind.CHECKBOX, Kind.REDIRECT):
        # A ticked box whatever its value; a redirect, checked to stay on this site.
        return Verdict.ACCEPT
    if kind is Kind.BROWSER_ZONE:
        # Ignored unless it is a known zone; control characters refuse the whole request, as in every form.
        return Verdict.EITHER
    if kind is Kind.CREDENTIAL:
        return Verdict.REFUSE
    return Verdict.ACCEPT if kind in hostile.accepted_by else Verdict.REFUSE


TASK_KINDS = {
    "name": Kind.LINE, "prompt": Kind.TEMPLATE, "system_prompt": Kind.TEMPLATE, "model": Kind.LINE,
    "temperature": Kind.NUMBER, "max_tokens": Kind.NUMBER, "schedule_type": Kind.CHOICE,
    "interval_minutes": Kind.NUMBER, "interval_seconds": Kind.NUMBER, "time": Kind.CLOCK, "cron": Kind.CRON,
    "timezone": Kind.ZONE, "enabled": Kind.FLAG, "run_at": Kind.START, "start_at": Kind.START, "end_at": Kind.END,
    "max_runs": Kind.NUMBER, "overlap_policy": Kind.CHOICE, "catchup_seconds": Kind.NUMBER,
    "auto_pause_after": Kind.NUMBER, "pause_note": Kind.TEXT, "connection_id": Kind.NUMBER,
    "max_attempts": Kind.NUMBER, "request_timeout_seconds": Kind.NUMBER, "max_run_seconds": Kind.NUMBER,
    "output_schema": Kind.SCHEMA, "ignore_patterns": Kind.PATTERNS, "notify_on": Kind.RULES, "channel_ids": Kind.IDS,
    "fallbacks": Kind.FALLBACKS,
    "batch": Kind.FLAG,
    "budget_usd_day": Kind.NUMBER, "budget_usd_month": Kind.NUMBER, "budget_tokens_day": Kind.NUMBER,
    "budget_tokens_month": Kind.NUMBER, "pause_on_budget": Kind.FLAG,
    "jitter_seconds": Kind.NUMBER, "first_run_delay_seconds": Kind.NUMBER,
}
TASK_REQUIRED = {"name", "prompt"}
CHANNEL_KINDS = {"name": Kind.LINE, "kind": Kind.CHOICE, "url": Kind.URL, "secret": Kind.SIGNING_SECRET,
                 "to": Kind.ADDRESSES}
CONNECTION_KINDS = {"name": Kind.LINE, "base_url": Kind.URL, "api_key": Kind.SECRET, "default_model": Kind.LINE,
                    "extra_headers": Kind.HEADERS, "fallbacks": Kind.FALLBACKS, "rpm_limit": Kind.NUMBER,
                    "tpm_limit": Kind.NUMBER, "max_concurrency": Kind.NUMBER}
FORM_KINDS = {
    "task": {**TASK_KINDS, "enabled": Kind.CHECKBOX, "batch": Kind.CHECKBOX, "pause_on_budget": Kind.CHECKBOX,
             "ignore_patterns": Kind.PATTERN_LINES, "fallbacks": Kind.FALLBACK_LINES},
    "connection": {**CONNECTION_KINDS, "extra_headers": Kind.HEADER_LINES, "fallbacks": Kind.FALLBACK_LINES},
    "channel": CHANNEL_KINDS,
    "token": {"name": Kind.LINE},
    "language": {"language": Kind.CHOICE, "next": Kind.REDIRECT},
    "login": {"email": Kind.CREDENTIAL, "password": Kind.CREDENTIAL, "timezone": Kind.BROWSER_ZONE},
}
# The operations with a request body, each tested below; the document lists them.
BODY_OPERATIONS = {
    ("post", "/tasks"), ("patch", "/tasks/{task_id}"), ("post", "/tasks/{task_id}/disable"),
    ("post", "/tasks/{task_id}/pause"), ("post", "/tasks/{task_id}/run"), ("post", "/schedule/preview"),
    ("post", "/connections"), ("patch", "/connections/{connection_id}"), ("post", "/tasks/test"),
    ("post", "/channels"), ("patch", "/channels/{channel_id}"),
}


def in_a_month():
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)


def schedule_for(field):
    """A valid schedule in which the field counts (a clock time only counts for a daily schedule)."""
    if field == "time":
        return {"schedule_type": "fixed_time", "time": "09:00"}
    if field == "cron":
        return {"schedule_type": "crontab", "cron": "0 9 * * *"}
    if field == "run_at":
        return {"schedule_type": "once", "run_at": in_a_month().isoformat()}
    if field == "interval_seconds":
        return {"schedule_type": "interval", "interval_seconds": 600}
    return {"schedule_type": "interval", "interval_minutes": 30}


def test_every_field_has_a_kind():
    assert set(TASK_KINDS) == set(validation.FIELDS)
    assert set(CONNECTION_KINDS) == set(connections.FIELDS)
    assert set(CHANNEL_KINDS) == set(channels.FIELDS)
    assert set(validation.SCHEDULE_INPUTS) <= set(TASK_KINDS)


def test_every_operation_with_a_body_is_covered(client):
    document = client.get("/api/openapi.json").get_json()
    with_body = {(method, path.removeprefix("/api")) for path, operations in document["paths"].items()
                 for method, operation in operations.items() if "requestBody" in operation}
    assert with_body == BODY_OPERATIONS


# --- the database before and after -------------------------------------------------------------------------------

def snapshot(app):
    """Every row of every table as stored, except when a token was last used (a request may touch it)."""
    with app.app_context(), db.engine.connect() as connection:
        # Plain SQL: the rows as stored, without the per-value conversions of the models (many times faster).
        return {table.name: connection.exec_driver_sql(query).all() for table, query in _snapshot_queries()}


def _snapshot_queries():
    for table in db.metadata.sorted_tables:
        columns = ", ".join(c.name for c in table.columns if (table.name, c.name) != ("api_tokens", "last_used_at"))
        order = ", ".join(c.name for c in table.primary_key.columns)
        yield table, f"SELECT {columns} FROM {table.name} ORDER BY {order}"


def row(app, model, row_id):
    with app.app_context():
        found = db.session.get(model, row_id)
        db.session.expunge_all()
        return found


class Case:
    """One (field, value) sent; remembers the database before, to check a refusal changed nothing."""

    def __init__(self, app, field, kind, hostile, required=False):
        self.app, self.field, self.kind, self.hostile = app, field, kind, hostile
        self.verdict = verdict(kind, hostile, required)
        self.before = snapshot(app)

    def refused(self, response, refusal):
        """Whether the answer is a refusal; a refusal must have left the database as it was."""
        refused = (response.status_code == 413 and self.hostile.oversized) or refusal(response.status_code)
        if refused:
            assert snapshot(self.app) == self.before, "a refused request changed the database"
        return refused

    def expect(self, response, refused_well, accepted_well, refusal=lambda status: 400 <= status < 500):
        status = response.status_code
        assert status < 500, f"{status}: {response.get_data(as_text=True)[:300]}"
        if self.refused(response, refusal):
            assert self.verdict is not Verdict.ACCEPT, f"refused ({status}): {response.get_data(as_text=True)[:300]}"
            if status != 413:
                refused_well(response)
        else:
            assert self.verdict is not Verdict.REFUSE, f"accepted ({status})"
            accepted_well(response)

    def stored(self, value):
        """The stored value is the one sent (text less surrounding blanks)."""
        sent = self.hostile.value
        if self.verdict is not Verdict.ACCEPT:
            return
        if self.kind in PRINTABLE and isinstance(sent, str):
            assert value == sent.strip()
        elif self.kind is Kind.END:
            assert value is not None
        elif self.kind is Kind.HEADERS:
            assert (value or {}) == sent
        elif self.kind is Kind.HEADER_LINES:
            name, _, text = sent.partition(":")
            assert value == {name.strip(): text.strip()}
        elif self.kind in (Kind.FLAG, Kind.CHECKBOX):
            assert value is True
        elif self.kind is Kind.FALLBACK_LINES:
            assert [entry["model"] for entry in value] == [line.strip() for line in sent.splitlines()]


def api_refusal(field):
    def check(response):
        assert response.status_code == 422, response.get_data(as_text=True)[:300]
        body = response.get_json()
        assert body["error"] == "validation_failed"
        assert body["fields"].get(field), body
    return check


def shown_escaped(page, value):
    """Text a page shows appears escaped, never as markup."""
    if isinstance(value, str) and "<" in value:
        assert value.strip() not in page
    if isinstance(value, str):
        assert str(escape(value.strip())) in page


def case_id(field, hostile):
    return f"{field}={hostile.label}"


@pytest.fixture
def api_token(app):
    """An admin with an API token; its password is hashed with one round, as the corpus signs in many times."""
    with app.app_context():
        user = User(email=ADMIN_EMAIL, role=Role.ADMIN,
                    password_hash=generate_password_hash(ADMIN_PASSWORD, method="pbkdf2:sha256:1"))
        token, plaintext = ApiToken.issue(user)
        db.session.add_all([user, token])
        db.session.commit()
    return plaintext


# --- the API -----------------------------------------------------------------------------------------------------

def task_body(field, value):
    return {"name": "Hostile base", "prompt": "Summarise", "enabled": False, **schedule_for(field), field: value}


def api_task(api, field="name"):
    response = api.post("/tasks", json=task_body(field, "Hostile base"))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


SHOWN_ON_TASK_PAGE = {"name", "prompt", "system_prompt", "model", "pause_note"}


def check_task_pages(signed_in, task_id, field, hostile):
    """The task's own page and its form load, showing the value escaped."""
    if hostile.label not in SHOWN:
        return
    value = hostile.value
    for path in (f"/tasks/{task_id}", f"/tasks/{task_id}/edit"):
        response = signed_in.get(path)
        assert response.status_code == 200, path
        page = response.get_data(as_text=True)
        if isinstance(value, str) and "<" in value:
            assert value.strip() not in page, path
        if field in SHOWN_ON_TASK_PAGE and isinstance(value, str) and "/edit" not in path:
            shown_escaped(page, value)


def check_task_list(signed_in):
    """The dashboard, with every task the corpus left behind, loads and shows no markup."""
    response = signed_in.get("/")
    assert response.status_code == 200
    assert MARKUP not in response.get_data(as_text=True)


def cases(kinds, fields=None):
    """(field, kind, hostile value) for every field given and every value of the corpus for its kind."""
    for field in fields or kinds:
        for hostile in json_values(kinds[field]):
            yield field, kinds[field], hostile


def test_create_task(app, api, signed_in, subtests):
    api.get("/tasks")  # the token's first use is recorded now, not during a case
    for field, kind, hostile in cases(TASK_KINDS, validation.FIELDS):
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile, required=field in TASK_REQUIRED)
            response = api.post("/tasks", json=task_body(field, hostile.value))

            def accepted(response):
                assert response.status_code == 201
                task = response.get_json()
                case.stored(task[case.field])
                check_task_pages(signed_in, task["id"], case.field, case.hostile)

            case.expect(response, api_refusal(field), accepted)
    check_task_list(signed_in)


def test_test_run(app, api, subtests):
    """A test run takes what create takes; an accepted one answers 200 and, like a refused one, writes nothing."""
    api.get("/tasks")
    for field, kind, hostile in cases(TASK_KINDS, validation.FIELDS):
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile, required=field in TASK_REQUIRED)
            response = api.post("/tasks/test", json=task_body(field, hostile.value))

            def accepted(response):
                assert response.status_code == 200
                assert set(response.get_json()) == {"output", "parsed_output", "error", "usage"}
                assert snapshot(app) == case.before, "a test run changed the database"

            case.expect(response, api_refusal(field), accepted)


def test_update_task(app, api, signed_in, subtests):
    task_ids = {}
    for field, kind, hostile in cases(TASK_KINDS, validation.FIELDS):
        # A task of its own per field: an accepted value of one field (enabled) must not decide another's case.
        task_id = task_ids.get(field) or task_ids.setdefault(field, api_task(api)["id"])
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile, required=field in TASK_REQUIRED)
            response = api.patch(f"/tasks/{task_id}", json={**schedule_for(field), field: hostile.value})

            def accepted(response):
                assert response.status_code == 200
                case.stored(response.get_json()[case.field])
                check_task_pages(signed_in, task_id, case.field, case.hostile)

            case.expect(response, api_refusal(field), accepted)
    check_task_list(signed_in)


def test_pause_note(app, api, signed_in, subtests):
    task_id = api_task(api)["id"]
    for action, kind, hostile in cases({"pause": Kind.TEXT, "disable": Kind.TEXT}):
        with subtests.test(f"{action}: {case_id('note', hostile)}"):
            case = Case(app, "note", kind, hostile)
            response = api.post(f"/tasks/{task_id}/{action}", json={"note": hostile.value})

            def accepted(response):
                assert response.status_code == 200
                case.stored(response.get_json()["pause_note"])
                check_task_pages(signed_in, task_id, "pause_note", case.hostile)

            case.expect(response, api_refusal("note"), accepted)


def test_run_now(app, api, subtests):
    task_id = api_task(api)["id"]
    for field, kind, hostile in cases({"allow_overlap": Kind.FLAG}):
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile)
            response = api.post(f"/tasks/{task_id}/run", json={field: hostile.value})

            def accepted(response):
                assert response.status_code == 202
                assert response.get_json()["execution"]["status"] in ("queued", "failed")

            case.expect(response, api_refusal(field), accepted)


def test_schedule_preview(app, api, subtests):
    for field, kind, hostile in cases(TASK_KINDS, validation.SCHEDULE_INPUTS):
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile)
            response = api.post("/schedule/preview", json={**schedule_for(field), field: hostile.value})

            def accepted(response):
                assert response.status_code == 200
                assert response.get_json()["next_runs"], "an accepted schedule fires"

            case.expect(response, api_refusal(field), accepted)


def connection_body(field, value, serial):
    return {"name": f"Hostile base {serial}", "base_url": "http://127.0.0.1:9/v1", field: value}


def check_connection(app, signed_in, case, connection_id):
    connection = row(app, Connection, connection_id)
    if case.field == "api_key":
        assert connection.has_api_key or case.verdict is Verdict.EITHER
    elif case.field == "extra_headers":
        # Header values are stored encrypted: what a call would send is what was given.
        with app.app_context():
            sent = dict(connections.endpoint_of(connection, app.config["PROMPTBEAT"]).headers)
        case.stored(sent)
    else:
        case.stored(getattr(connection, case.field))
    if case.hostile.label not in SHOWN:
        return
    response = signed_in.get("/connections/")
    assert response.status_code == 200
    if case.field in ("name", "default_model"):
        shown_escaped(response.get_data(as_text=True), case.hostile.value)


def test_create_connection(app, api, signed_in, subtests):
    api.get("/connections")
    for serial, (field, kind, hostile) in enumerate(cases(CONNECTION_KINDS, connections.FIELDS)):
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile, required=field == "name")
            response = api.post("/connections", json=connection_body(field, hostile.value, serial))

            def accepted(response):
                assert response.status_code == 201
                check_connection(app, signed_in, case, response.get_json()["id"])

            case.expect(response, api_refusal(field), accepted)


def test_update_connection(app, api, signed_in, subtests):
    created = api.post("/connections", json=connection_body("name", "Hostile base", 0))
    assert created.status_code == 201, created.get_json()
    connection_id = created.get_json()["id"]
    for field, kind, hostile in cases(CONNECTION_KINDS, connections.FIELDS):
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile, required=field == "name")
            response = api.patch(f"/connections/{connection_id}", json={field: hostile.value})

            def accepted(response):
                assert response.status_code == 200
                check_connection(app, signed_in, case, connection_id)

            case.expect(response, api_refusal(field), accepted)


def channel_body(field, value, serial):
    """A valid channel of the kind the field belongs to, with the field set to value."""
    base = ({"kind": "email", "to": ["ops@example.com"]} if field == "to"
            else {"kind": "webhook", "url": "http://127.0.0.1:9/hook"})
    return {"name": f"Hostile channel {serial}", **base, field: value}


def check_channel(app, signed_in, case, channel_id):
    channel = row(app, Channel, channel_id)
    if case.field not in ("secret", "kind", "to", "url"):
        case.stored(getattr(channel, case.field))
    if case.hostile.label not in SHOWN:
        return
    response = signed_in.get("/channels/")
    assert response.status_code == 200
    if case.field == "name":
        shown_escaped(response.get_data(as_text=True), case.hostile.value)


def test_create_channel(app, api, signed_in, subtests):
    api.get("/channels")
    for serial, (field, kind, hostile) in enumerate(cases(CHANNEL_KINDS, channels.FIELDS)):
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile, required=field in ("name", "kind", "url", "to"))
            response = api.post("/channels", json=channel_body(field, hostile.value, serial))

            def accepted(response):
                assert response.status_code == 201
                check_channel(app, signed_in, case, response.get_json()["id"])

            case.expect(response, api_refusal(field), accepted)


def test_update_channel(app, api, signed_in, subtests):
    made = {kind: api.post("/channels", json=channel_body("to" if kind == "email" else "name", ["ops@example.com"]
                                                          if kind == "email" else f"Base {kind}", kind)).get_json()
            for kind in ("webhook", "email")}
    for field, kind, hostile in cases(CHANNEL_KINDS, channels.FIELDS):
        channel_id = made["email" if field == "to" else "webhook"]["id"]
        with subtests.test(case_id(field, hostile)):
            case = Case(app, field, kind, hostile, required=field in ("name", "url", "to"))
            response = api.patch(f"/channels/{channel_id}", json={field: hostile.value})

            def accepted(response):
                assert response.status_code == 200
                check_channel(app, signed_in, case, channel_id)

            case.expect(response, api_refusal(field), accepted)


# --- the forms ---------------------------------------------------------------------------------------------------

class Forms(HTMLParser):
    """The forms of a page and what a browser would submit from each, untouched: [(action, names, values)]."""

    def __init__(self, page):
        super().__init__(convert_charrefs=True)
        self.forms, self._select, self._textarea = [], None, None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append((attrs.get("action", ""), set(), {}))
            return
        if not self.forms or "name" not in attrs:
            if tag == "option" and self._select:
                self._option(attrs)
            return
        _, names, values = self.forms[-1]
        name = attrs["name"]
        names.add(name)
        if tag == "input":
            if attrs.get("type") in ("checkbox", "radio"):
                if "checked" in attrs:
                    values[name] = attrs.get("value", "on")
            else:
                values[name] = attrs.get("value", "")
        elif tag == "textarea":
            self._textarea = name
            values[name] = ""
        elif tag == "select":
            self._select = name

    def _option(self, attrs):
        values = self.forms[-1][2]
        if self._select not in values or "selected" in attrs:
            values[self._select] = attrs.get("value", "")

    def handle_data(self, data):
        if self._textarea:
            self.forms[-1][2][self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None


def form_on(page, action):
    """(names, default values) of the page's form posting to action."""
    for form_action, names, values in Forms(page).forms:
        if form_action == action:
            names.discard("csrf_token")
            # Textareas start with a newline the browser drops.
            return names, {k: (v[1:] if v.startswith("\n") else v) for k, v in values.items()}
    raise AssertionError(f"no form posting to {action}")


def field_error_at(page, field):
    """The message the task form shows at a field (inside its label), or None."""
    match = re.search(rf'<label class="field invalid" data-field="{field}">(.*?)</label>', page, re.S)
    message = match and re.search(r'<small class="field-error">(.+?)</small>', match.group(1), re.S)
    # A group of choices (the schedule type) has its message after the group.
    message = message or re.search(rf'<small class="field-error" data-for="{field}">(.+?)</small>', page, re.S)
    return message.group(1) if message else None


def connection_error_at(page, field):
    """The message the connection form shows inside the field's label, or None."""
    match = re.search(rf'<label class="field[^"]* invalid"><span>[^<]*</span>\s*<(?:input|textarea) name="{field}"'
                      r'(.*?)</label>', page, re.S)
    message = match and re.search(r'<span class="field-error">(.+?)</span>', match.group(1), re.S)
    return message.group(1) if message else None


def flash_error(page):
    match = re.search(r'<p class="flash error"[^>]*>(.+?)</p>', page, re.S)
    return match.group(1) if match else None


def no_markup(page, value):
    if isinstance(value, str) and "<" in value:
        assert value not in page, "the page shows the value as markup"


def run_form(app, client, subtests, form, path, base, refused_well, accepted_well, action=None, required=(),
             refusal=lambda status: 400 <= status < 500):
    """Every field of the form at path, each sent with every text of the corpus over base."""
    page = client.get(path).get_data(as_text=True)
    names, defaults = form_on(page, action or "")
    kinds = FORM_KINDS[form]
    assert names <= set(kinds), f"fields without a kind: {sorted(names - set(kinds))}"
    token = csrf_token(page)
    for field in sorted(names):
        kind = kinds[field]
        for hostile in (h for h in TEXTS if h.applies_to(kind)):
            with subtests.test(case_id(field, hostile)):
                case = Case(app, field, kind, hostile, required=field in required)
                data = {**defaults, **base(field), field: hostile.value, "csrf_token": token}
                # None stands for a field the browser leaves out, as it does an unticked box.
                response = client.post(action or path, data={k: str(v) for k, v in data.items() if v is not None})
                no_markup(response.get_data(as_text=True), hostile.value)
                case.expect(response, lambda r: refused_well(r, case), lambda r: accepted_well(r, case), refusal)


def task_form_base(field):
    schedule = schedule_for(field)
    if "run_at" in schedule:
        schedule["run_at"] = in_a_month().strftime("%Y-%m-%d %H:%M")
    # Unticked: the task neither registers with beat nor runs.
    return {"name": "Hostile base", "prompt": "Summarise", "enabled": None, **schedule}


@pytest.mark.parametrize("edit", [False, True], ids=["create", "edit"])
def test_task_form(app, api, signed_in, subtests, edit):
    path = f"/tasks/{api_task(api)['id']}/edit" if edit else "/tasks/new"

    def refused(response, case):
        assert response.status_code == 422
        assert field_error_at(response.get_data(as_text=True), case.field), "no message at the field"

    def accepted(response, case):
        assert response.status_code == 302
        saved_id = int(re.fullmatch(r"/tasks/(\d+)", response.headers["Location"]).group(1))
        case.stored(getattr(row(app, Task, saved_id), case.field))
        check_task_pages(signed_in, saved_id, case.field, case.hostile)

    run_form(app, signed_in, subtests, "task", path, task_form_base, refused, accepted, required=TASK_REQUIRED)
    check_task_list(signed_in)


def test_connection_form(app, signed_in, subtests):
    serial = iter(range(10**6))

    def base(field):
        return {"name": f"Hostile base {next(serial)}", "base_url": "http://127.0.0.1:9/v1"}

    def refused(response, case):
        assert response.status_code == 422
        assert connection_error_at(response.get_data(as_text=True), case.field), "no message at the field"

    def accepted(response, case):
        assert response.status_code == 302
        with app.app_context():
            newest = db.session.execute(db.select(Connection.id).order_by(Connection.id.desc())).scalar()
        check_connection(app, signed_in, case, newest)

    run_form(app, signed_in, subtests, "connection", "/connections/", base, refused, accepted,
             action="/connections/", required={"name"})


def channel_error_at(page, field):
    """The message the channel form shows after a field's label, or None."""
    match = re.search(rf'name="{field}"(?:(?!<label).)*?</label>\s*<p class="field-error">(.+?)</p>', page, re.S)
    return match.group(1) if match else None


def test_channel_form(app, signed_in, subtests):
    serial = iter(range(10**6))

    def base(field):
        kind = {"kind": "email", "to": "ops@example.com"} if field == "to" else {"kind": "webhook",
                                                                                "url": "http://127.0.0.1:9/hook"}
        return {"name": f"Hostile channel {next(serial)}", **kind}

    def refused(response, case):
        assert response.status_code == 422
        assert channel_error_at(response.get_data(as_text=True), case.field), "no message at the field"

    def accepted(response, case):
        # A new webhook's page shows its generated secret once instead of redirecting.
        assert response.status_code in (200, 302)
        with app.app_context():
            newest = db.session.execute(db.select(Channel.id).order_by(Channel.id.desc())).scalar()
        check_channel(app, signed_in, case, newest)

    run_form(app, signed_in, subtests, "channel", "/channels/", base, refused, accepted, action="/channels/",
             required={"name", "kind"})


def test_token_form(app, signed_in, subtests):
    def refused(response, case):
        # The form has this one field, so the message is the page's.
        assert response.status_code == 422
        assert flash_error(response.get_data(as_text=True)), "no message"

    def accepted(response, case):
        assert response.status_code == 200
        with app.app_context():
            name = db.session.execute(db.select(ApiToken.name).order_by(ApiToken.id.desc())).scalar()
        case.stored(name)
        if case.hostile.label in SHOWN:
            shown_escaped(signed_in.get("/account").get_data(as_text=True), case.hostile.value)

    run_form(app, signed_in, subtests, "token", "/account", lambda field: {}, refused, accepted,
             action="/account/tokens", required={"name"})


def test_language_form(app, signed_in, subtests):
    def refused(response, case):
        assert case.field == "language"

    def accepted(response, case):
        # Back to a path of this site, with nothing a browser would read as another host.
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        assert not re.search(r"[\x00-\x20\\]", location), location
        with app.app_context():
            assert db.session.execute(db.select(User.language).filter_by(email=ADMIN_EMAIL)).scalar() == "en"

    run_form(app, signed_in, subtests, "language", "/account", lambda field: {"language": "en"}, refused,
             accepted, action="/account/language")


def test_login_form(app, client, api_token, subtests):
    settings = app.config["PROMPTBEAT"]
    limits = redis_lib.Redis.from_url(settings.redis_url)

    def refused(response, case):
        # A failed sign-in counts against the address; these are not the attempts the limit is for.
        for key in limits.scan_iter(match=f"{settings.redbeat_key_prefix}signin:*"):
            limits.delete(key)
        page = response.get_data(as_text=True)
        assert flash_error(page) or field_error_at(page, case.field), "no message"
        assert client.get("/account").status_code == 302, "signed in with a hostile credential"

    def accepted(response, case):
        # Only the browser's zone is accepted: signed in, with no zone kept unless it is a known one.
        assert response.status_code == 302 and client.get("/account").status_code == 200
        with app.app_context():
            user = db.session.execute(db.select(User).filter_by(email=ADMIN_EMAIL)).scalar_one()
            assert user.timezone is None or known_zone(user.timezone), user.timezone
            user.timezone = None
            db.session.commit()
        # Signed out again, into a session whose CSRF secret still matches the token the form was read with.
        with client.session_transaction() as session:
            session.clear()
            session["csrf_token"] = csrf_secret

    client.get("/login")
    with client.session_transaction() as session:
        csrf_secret = session["csrf_token"]

    try:
        run_form(app, client, subtests, "login", "/login",
                 lambda field: {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, refused, accepted,
                 refusal=lambda status: status in (200, 400, 422))
    finally:
        limits.close()
