"""The dashboard's queries: one page of tasks, and each one's recent runs, without scanning all runs."""
import functools
import zlib
from dataclasses import dataclass, field

from sqlalchemy import Integer, column, func, true, values

from promptbeat.extensions import db
from promptbeat.models import Execution, ExecutionStatus, ScheduleType, Task

PER_PAGE = 25
RECENT_RUNS = 20
SORTS = {
    "name": (Task.name, Task.id),
    "newest": (Task.id.desc(),),
    "updated": (Task.updated_at.desc(), Task.id.desc()),
}
STATUSES = ("enabled", "disabled")
RUN_COLUMNS = (Execution.id, Execution.task_id, Execution.status, Execution.trigger, Execution.created_at,
               Execution.finished_at, Execution.duration_ms, Execution.total_tokens)


@dataclass
class TaskStats:
    """What a dashboard row shows about a task's recent runs (newest first)."""

    runs: list = field(default_factory=list)

    # Cached: a row reads these several times, and the runs are complete before rendering starts.
    @functools.cached_property
    def last(self):
        return self.runs[0] if self.runs else None

    @functools.cached_property
    def finished(self):
        return [r for r in self.runs if r.status in (ExecutionStatus.SUCCESS, ExecutionStatus.FAILED)]

    @functools.cached_property
    def success_rate(self):
        """Share of recent finished runs that succeeded, 0-100, or None before any finished."""
        finished = self.finished
        if not finished:
            return None
        return round(100 * sum(r.status == ExecutionStatus.SUCCESS for r in finished) / len(finished))

    def series(self, attribute):
        """Oldest-first values of one attribute over recent successful runs, for sparklines."""
        return [getattr(r, attribute) for r in reversed(self.runs)
                if r.status == ExecutionStatus.SUCCESS and getattr(r, attribute) is not None]


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
        return cls(
            search=args.get("q", "").strip()[:200],
            status=status if status in STATUSES else "",
            schedule_type=kind if kind in set(ScheduleType) else "",
            sort=sort if sort in SORTS else "name",
            page=max(args.get("page", 1, type=int) or 1, 1),
        )

    def args(self, **changes):
        """Query-string arguments for a link that keeps the other filters."""
        current = {"q": self.search, "status": self.status, "type": self.schedule_type, "sort": self.sort,
                   "page": self.page}
        current.update(changes)
        return {key: value for key, value in current.items() if value and not (key == "page" and value == 1)}


def task_page(filters, per_page=PER_PAGE):
    """One page of tasks matching the filters."""
    query = db.select(Task)
    if filters.search:
        escaped = filters.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Task.name.ilike(f"%{escaped}%", escape="\\"))
    if filters.status:
        query = query.where(Task.enabled.is_(filters.status == "enabled"))
    if filters.schedule_type:
        query = query.where(Task.schedule_type == filters.schedule_type)
    query = query.order_by(*SORTS[filters.sort])
    return db.paginate(query, page=filters.page, per_page=per_page, error_out=False, max_per_page=100)


def recent_runs(task_ids, limit=RECENT_RUNS):
    """The newest `limit` runs of each task, {task_id: TaskStats}, reading only those rows by index."""
    stats = {task_id: TaskStats() for task_id in task_ids}
    if not task_ids:
        return stats
    if db.engine.dialect.name == "postgresql":
        # A LATERAL join walks ix_executions_task_id_id backwards, `limit` rows per task.
        ids = values(column("tid", Integer), name="page_ids").data([(task_id,) for task_id in task_ids])
        newest = (db.select(*RUN_COLUMNS).where(Execution.task_id == ids.c.tid)
                  .order_by(Execution.id.desc()).limit(limit).lateral("newest"))
        query = db.select(newest).select_from(ids).join(newest, true())
    else:
        rank = func.row_number().over(partition_by=Execution.task_id, order_by=Execution.id.desc()).label("rank")
        ranked = db.select(*RUN_COLUMNS, rank).where(Execution.task_id.in_(task_ids)).subquery()
        query = db.select(*(c for c in ranked.c if c.name != "rank")).where(ranked.c.rank <= limit)
    for row in db.session.execute(query):
        stats[row.task_id].runs.append(row)
    for item in stats.values():
        item.runs.sort(key=lambda r: r.id, reverse=True)
    return stats


def signature(tasks, stats):
    """A short fingerprint of what the page shows, so live polling can answer 204 when nothing changed."""
    parts = []
    for task in tasks:
        last = stats[task.id].last
        parts.append(f"{task.id}:{task.updated_at.timestamp():.0f}:{last.id if last else 0}:{last.status if last else ''}")
    return format(zlib.crc32("|".join(parts).encode()), "x")
