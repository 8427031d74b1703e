"""The dashboard's queries: one page of tasks, and each one's recent runs, without scanning all runs."""
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import defer

from promptbeat.extensions import db
from promptbeat.models import SCHEDULE_TYPES, Task, UTCDateTime

PER_PAGE = 25
# Far beyond any real list, and small enough that its row offset fits every database's integers.
MAX_PAGE = 1_000_000
RECENT_RUNS = 20
SORTS = {
    "name": (Task.name, Task.id),
    "newest": (Task.id.desc(),),
    "updated": (Task.updated_at.desc(), Task.id.desc()),
}
# "failing": the task's last scheduled run failed (its run of consecutive failures is not zero).
STATUSES = ("enabled", "disabled", "failing")


class LastRun(NamedTuple):
    """The newest run of a task, as its dashboard row shows it."""

    id: int
    status: str
    created_at: object
    finished_at: object


@dataclass
class TaskStats:
    """What a dashboard row shows about a task's recent runs."""

    last: LastRun | None = None
    finished: int = 0
    succeeded: int = 0
    # Oldest first, over recent successful runs: the sparklines.
    durations: list = field(default_factory=list)
    tokens: list = field(default_factory=list)

    @property
    def success_rate(self):
        """Share of recent finished runs that succeeded, 0-100, or None before any finished."""
        return round(100 * self.succeeded / self.finished) if self.finished else None

    def series(self, attribute):
        """Oldest-first values over recent successful runs, for sparklines."""
        return {"duration_ms": self.durations, "total_tokens": self.tokens}[attribute]


class InvalidFilter(ValueError):
    """A query string the dashboard cannot search with; `message` says why, in English."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def page_number(args):
    """The `page` argument as a page number from 1 to MAX_PAGE; anything else reads as the nearest of those."""
    return min(max(args.get("page", 1, type=int) or 1, 1), MAX_PAGE)


@dataclass(frozen=True)
class Filters:
    """The dashboard's search box, filters and sort, read from the query string."""

    search: str = ""
    status: str = ""
    schedule_type: str = ""
    sort: str = "name"
    page: int = 1

    @classmethod
    def from_args(cls, args):
        status = args.get("status", "")
        kind = args.get("type", "")
        sort = args.get("sort", "name")
        search = args.get("q", "").strip()[:200]
        if "\x00" in search:
            # No name holds a NUL character, and PostgreSQL refuses one in a query.
            raise InvalidFilter("The search cannot contain NUL characters.")
        return cls(
            search=search,
            status=status if status in STATUSES else "",
            schedule_type=kind if kind in SCHEDULE_TYPES else "",
            sort=sort if sort in SORTS else "name",
            page=page_number(args),
        )

    def args(self, **changes):
        """Query-string arguments for a link that keeps the other filters."""
        current = {"q": self.search, "status": self.status, "type": self.schedule_type, "sort": self.sort,
                   "page": self.page}
        current.update(changes)
        return {key: value for key, value in current.items() if value and not (key == "page" and value == 1)}


def task_page(filters, per_page=PER_PAGE):
    """One page of tasks matching the filters."""
    # Prompts can be long and no row shows them; raiseload makes a template that starts to read them fail loudly.
    query = db.select(Task).options(defer(Task.prompt, raiseload=True), defer(Task.system_prompt, raiseload=True))
    if filters.search:
        escaped = filters.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Task.name.ilike(f"%{escaped}%", escape="\\"))
    if filters.status == "failing":
        query = query.where(Task.consecutive_failures > 0)
    elif filters.status:
        query = query.where(Task.enabled.is_(filters.status == "enabled"))
    if filters.schedule_type:
        query = query.where(Task.schedule_type == filters.schedule_type)
    query = query.order_by(*SORTS[filters.sort])
    return db.paginate(query, page=filters.page, per_page=per_page, error_out=False, max_per_page=100)


def recent_runs(task_ids, limit=RECENT_RUNS):
    """Each task's stats over its newest `limit` runs, {task_id: TaskStats}, reading only those rows by index."""
    if not task_ids:
        return {}
    # PostgreSQL sums each task's runs itself: one row per task instead of `limit`.
    rows = db.session.execute(RECENT_STATS, {"ids": list(task_ids), "limit": limit})
    # An aggregate without GROUP BY always gives one row: a task without runs gets NULLs and zero counts.
    return {row.task_id: TaskStats(
        last=LastRun(row.last_id, row.last_status, row.last_created_at, row.last_finished_at)
        if row.last_id else None,
        finished=row.finished, succeeded=row.succeeded, durations=row.durations or [], tokens=row.tokens or [],
    ) for row in rows}


# The LATERAL subquery walks ix_executions_task_id_id backwards, `limit` rows per task; the page's
# task ids are one array parameter, so the statement is the same text on every page.
RECENT_STATS = text("""
SELECT page.tid AS task_id, recent.*
FROM unnest(CAST(:ids AS integer[])) AS page(tid)
CROSS JOIN LATERAL (
    SELECT (array_agg(r.id ORDER BY r.id DESC))[1] AS last_id,
           (array_agg(r.status ORDER BY r.id DESC))[1] AS last_status,
           (array_agg(r.created_at ORDER BY r.id DESC))[1] AS last_created_at,
           (array_agg(r.finished_at ORDER BY r.id DESC))[1] AS last_finished_at,
           count(*) FILTER (WHERE r.status IN ('success', 'failed')) AS finished,
           count(*) FILTER (WHERE r.status = 'success') AS succeeded,
           array_agg(r.duration_ms ORDER BY r.id) FILTER (WHERE r.status = 'success' AND r.duration_ms IS NOT NULL)
               AS durations,
           array_agg(r.total_tokens ORDER BY r.id) FILTER (WHERE r.status = 'success' AND r.total_tokens IS NOT NULL)
               AS tokens
    FROM (SELECT id, status, created_at, finished_at, duration_ms, total_tokens
          FROM executions WHERE task_id = page.tid ORDER BY id DESC LIMIT :limit) AS r
) AS recent
""").columns(last_created_at=UTCDateTime(), last_finished_at=UTCDateTime())


def signature(tasks, stats):
    """A short fingerprint of what the page shows, so live polling can answer 204 when nothing changed."""
    parts = []
    for task in tasks:
        last = stats[task.id].last
        parts.append(f"{task.id}:{task.updated_at.timestamp():.0f}:{last.id if last else 0}:{last.status if last else ''}")
    return format(zlib.crc32("|".join(parts).encode()), "x")
