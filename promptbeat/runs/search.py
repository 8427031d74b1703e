"""Finding old runs across all tasks: filters, full-text search over outputs, and keyset pages."""
import enum
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, literal_column, select

from promptbeat.models import Execution, Task, Trigger
from promptbeat.runs.search_vector import CJK, TS_CONFIG
from promptbeat.runs.states import RunStatus

MAX_QUERY_CHARS = 500
# How many of the newest runs a search reads row by row before it turns to the index (see _searched_rows).
SEARCH_WINDOW = 20_000
MAX_ID = 2**31 - 1
CJK_RUN = re.compile(f"(-?)([{CJK}]+)")


class Changed(enum.StrEnum):
    """The `changed` filter: the run's answer differed from the previous one, did not, or was the first."""

    YES = "yes"
    NO = "no"
    FIRST = "first"


class RunFilterError(ValueError):
    """A filter that cannot be searched with: `field` names it, `message` says why in English."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class RunFilters:
    """What the runs page and GET /api/runs search with; every field is optional."""

    q: str = ""
    task_id: int | None = None
    status: RunStatus | None = None
    changed: Changed | None = None
    trigger: Trigger | None = None
    since: datetime | None = None
    until: datetime | None = None

    def args(self):
        """The filters as query-string arguments (for links and exports that keep them)."""
        values = {"q": self.q, "task_id": self.task_id, "status": self.status, "changed": self.changed,
                  "trigger": self.trigger, "since": _moment_arg(self.since), "until": _moment_arg(self.until)}
        return {key: str(value) for key, value in values.items() if value not in (None, "")}


def _moment_arg(moment):
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _text(field, value):
    if not isinstance(value, str):
        raise RunFilterError(field, "Must be text.")
    if len(value) > MAX_QUERY_CHARS:
        raise RunFilterError(field, f"Must be at most {MAX_QUERY_CHARS} characters.")
    if any(not character.isprintable() for character in value):
        raise RunFilterError(field, "Must not contain control characters (NUL, line breaks, tabs).")
    return value.strip()


def _choice(field, value, kind):
    try:
        return kind(value)
    except ValueError:
        raise RunFilterError(field, f"Must be one of: {', '.join(kind)}.") from None


def _moment(field, value, end_of_day):
    """An ISO 8601 date or date and time; without an offset it is UTC. A bare `until` date includes that day."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.combine(date.fromisoformat(value), time.max if end_of_day else time(), timezone.utc)
        moment = datetime.fromisoformat(value)
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise RunFilterError(field, "Must be an ISO 8601 date or date and time between the years 1 and 9999, "
                                    "such as 2030-01-31 or 2030-01-31T09:00Z.") from None


def parse_filters(args):
    """RunFilters from query-string arguments (strings); raises RunFilterError for the first bad one."""
    values = {}
    for field in ("q", "task_id", "status", "changed", "trigger", "since", "until"):
        raw = _text(field, args.get(field, "") or "")
        if raw == "":
            continue
        if field == "q":
            if not any(character.isalnum() for character in raw):
                raise RunFilterError(field, "The search has no words to look for.")
            values[field] = raw
        elif field == "task_id":
            if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
                raise RunFilterError(field, f"Must be a task id, a whole number from 1 to {MAX_ID}.")
            values[field] = int(raw)
        elif field in ("since", "until"):
            values[field] = _moment(field, raw, end_of_day=field == "until")
        else:
            values[field] = _choice(field, raw, {"status": RunStatus, "changed": Changed, "trigger": Trigger}[field])
    filters = RunFilters(**values)
    if filters.since and filters.until and filters.since > filters.until:
        raise RunFilterError("until", "Must not come before since.")
    return filters


class Cursors:
    """Opaque, signed page cursors: a cursor names the last run a page showed; a changed one is refused."""

    def __init__(self, secret_key):
        self._serializer = URLSafeSerializer(secret_key, salt="promptbeat.runs.cursor")

    def dump(self, last_id):
        return self._serializer.dumps({"before": last_id})

    def load(self, cursor):
        """The id the next page comes before; raises RunFilterError when the cursor was not made here."""
        try:
            before = self._serializer.loads(cursor)["before"] if len(cursor) <= 200 else None
        except (BadSignature, TypeError, KeyError):
            before = None
        if not isinstance(before, int) or isinstance(before, bool) or not 1 <= before <= MAX_ID + 1:
            raise RunFilterError("cursor", "The cursor is not valid; start again from the first page.")
        return before


def text_query(q):
    """The tsquery for a user's search: websearch syntax for words, a character phrase per CJK run.

    User text is only ever passed to websearch_to_tsquery and phraseto_tsquery, which accept any input,
    so no character of it can make the query fail. A "-" before a CJK run leaves it out, as for words.
    """
    config = literal_column(f"'{TS_CONFIG}'::regconfig")
    rest = CJK_RUN.sub(" ", q)
    query = func.websearch_to_tsquery(config, rest) if any(c.isalnum() for c in rest) else None
    for negated, run in CJK_RUN.findall(q):
        phrase = func.phraseto_tsquery(config, " ".join(run))
        part = func.tsquery_not(phrase) if negated else phrase
        query = part if query is None else func.tsquery_and(query, part)
    return query


def runs_query(filters, before=None):
    """The filtered runs, newest first, from before (an id, exclusive) down: select columns, no LIMIT yet."""
    query = (select(*RECORD_COLUMNS).join(Task, Task.id == Execution.task_id)
             .order_by(Execution.id.desc()))
    conditions = []
    if before is not None:
        conditions.append(Execution.id < before)
    if filters.q:
        conditions.append(Execution.output_search.op("@@")(text_query(filters.q)))
    if filters.task_id is not None:
        conditions.append(Execution.task_id == filters.task_id)
    if filters.status is not None:
        conditions.append(Execution.status == filters.status)
    if filters.trigger is not None:
        conditions.append(Execution.trigger == filters.trigger)
    if filters.changed is Changed.FIRST:
        # The first successful run of a task has nothing to compare with.
        conditions.append(Execution.changed.is_(None) & (Execution.status == RunStatus.SUCCESS))
    elif filters.changed is not None:
        conditions.append(Execution.changed.is_(filters.changed is Changed.YES))
    if filters.since is not None:
        conditions.append(Execution.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(Execution.created_at <= filters.until)
    return query.where(*conditions)


# What a listed run shows; the prompt, attempts and search vector stay in the database.
RECORD_COLUMNS = (
    Execution.id, Execution.task_id, Task.name.label("task_name"), Execution.status, Execution.trigger,
    Execution.changed, Execution.model, Execution.created_at, Execution.started_at, Execution.finished_at,
    Execution.duration_ms, Execution.prompt_tokens, Execution.completion_tokens, Execution.total_tokens,
    Execution.cost_usd, Execution.error_class, Execution.error, Execution.output, Execution.parsed_output,
)
RECORD_FIELDS = tuple(column.key for column in RECORD_COLUMNS)


@dataclass(frozen=True)
class RunPage:
    """One page of runs and the cursor of the next one (None on the last page)."""

    rows: list
    next_before: int | None


def run_page(session, filters, before=None, limit=50):
    """One page: `limit` runs newest first, and whether more follow (fetched as one extra row)."""
    if filters.q:
        rows = _searched_rows(session, filters, before, limit + 1)
    else:
        rows = session.execute(runs_query(filters, before).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return RunPage(rows=rows, next_before=rows[-1].id if more else None)


def _searched_rows(session, filters, before, count):
    """Searched runs in two steps, so that neither a common nor a rare word reads most of the table.

    Left to itself, PostgreSQL walks the primary key newest first and tests each row whenever it
    expects matches to be common; for a word it misjudges as common (one it has no statistics for)
    that walk reads nearly every row. So the newest SEARCH_WINDOW runs are searched first, a bounded
    walk; only when they hold too few matches is the rest read through the GIN index, with the sort
    on an expression (id + 0) so that the planner cannot choose the walk there.
    """
    top = before if before is not None else (session.scalar(select(func.max(Execution.id))) or 0) + 1
    floor = top - SEARCH_WINDOW
    rows = session.execute(runs_query(filters, before).where(Execution.id >= floor).limit(count)).all()
    if len(rows) < count and floor > 1:
        older = runs_query(filters, floor).order_by(None).order_by((Execution.id + 0).desc())
        rows += session.execute(older.limit(count - len(rows))).all()
    return rows


def iterate_runs(session, filters, limit, batch=500):
    """The newest `limit` matching runs, read in keyset batches so that an export never holds them all."""
    before, sent = None, 0
    while sent < limit:
        page = run_page(session, filters, before, min(batch, limit - sent))
        yield from page.rows
        sent += len(page.rows)
        if page.next_before is None:
            return
        before = page.next_before
