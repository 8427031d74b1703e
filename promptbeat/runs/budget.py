"""Budgets: a run's estimate is checked against, and charged to, its task's and the global spend before its call.

The spend ledger (models.Spend) keeps one row per scope (a task, or the global scope), period (day or
month) and period start, so a check reads at most four rows instead of summing executions. A run
charges its estimate under row locks taken in one order, so concurrent runs cannot both slip past a
limit; its finish replaces the estimate with its usage (nothing, for a call that failed), in the
transaction that records its result; a run cancelled mid-call gives its estimate back. A run whose
worker dies keeps its estimate charged: its call may have been paid for, and the ledger errs towards
stopping runs rather than overspending.

A batch-mode run (promptbeat.batches) is charged when its worker collects it, and its answer arrives
hours later in another process: its hold is kept on its execution (to_record / from_record) and settled
at the batch discount when its result is recorded, or given back when it is cancelled.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert

from promptbeat.extensions import db
from promptbeat.models import GLOBAL_SCOPE, BudgetPeriod, Spend
from promptbeat.ratelimits.estimate import prompt_tokens

SPEND = Spend.__table__
BUDGET_FIELDS = ("budget_usd_day", "budget_usd_month", "budget_tokens_day", "budget_tokens_month")
ERROR_CLASS = "budget_exceeded"
_KEY = (SPEND.c.scope, SPEND.c.period, SPEND.c.period_start)
# The ledger keeps USD to 8 places, as the executions keep cost_usd.
_USD_PLACES = Decimal("0.00000001")


@dataclass(frozen=True)
class Limit:
    """One budget that applies to a run: whose, which period, and its limits (None: that unit is not limited)."""

    scope: int
    period: BudgetPeriod
    start: date
    usd: float | None
    tokens: int | None

    @property
    def key(self):
        return (self.scope, str(self.period), self.start)

    def describe(self):
        whose = "global" if self.scope == GLOBAL_SCOPE else "task's"
        span = "daily" if self.period == BudgetPeriod.DAY else "monthly"
        return f"the {whose} {span} budget (period from {self.start.isoformat()})"


@dataclass(frozen=True)
class Estimate:
    """What a run is expected to cost before its call: tokens, and USD (0 for a model without a price)."""

    usd: Decimal
    tokens: int


@dataclass(frozen=True)
class Hold:
    """An estimate charged to the ledger for one run, to be settled when the run ends."""

    keys: tuple
    estimate: Estimate


@dataclass(frozen=True)
class Stop:
    """A run that would pass a budget; message names the budget, its spend and its limit."""

    message: str


@dataclass(frozen=True)
class Usage:
    """Spend so far in the current day and month of one scope."""

    usd_day: float = 0.0
    usd_month: float = 0.0
    tokens_day: int = 0
    tokens_month: int = 0


def period_starts(zone_name, now):
    """The local dates the current day and month start on, in the zone."""
    today = now.astimezone(ZoneInfo(zone_name)).date()
    return {BudgetPeriod.DAY: today, BudgetPeriod.MONTH: today.replace(day=1)}


def limits(task, settings, now):
    """The budgets that apply to a run of task now: the task's own (in its zone), then the global ones."""
    found = []
    scopes = ((task.id, task.timezone or "UTC", task.budget_usd_day, task.budget_usd_month, task.budget_tokens_day,
               task.budget_tokens_month),
              (GLOBAL_SCOPE, settings.budget_timezone, settings.budget_usd_day, settings.budget_usd_month,
               settings.budget_tokens_day, settings.budget_tokens_month))
    for scope, zone, usd_day, usd_month, tokens_day, tokens_month in scopes:
        if (usd_day, usd_month, tokens_day, tokens_month) == (None,) * 4:
            continue
        # Both periods are counted once a scope has any budget, so each shows its spend next to the other.
        starts = period_starts(zone, now)
        found.append(Limit(scope, BudgetPeriod.DAY, starts[BudgetPeriod.DAY], usd_day, tokens_day))
        found.append(Limit(scope, BudgetPeriod.MONTH, starts[BudgetPeriod.MONTH], usd_month, tokens_month))
    return found


def estimate(plan, template, settings, discount=0.0):
    """The run's estimate, as its connection's rate limits count it (promptbeat.ratelimits.estimate): its
    prompts' tokens plus max_tokens or PROMPTBEAT_ESTIMATED_COMPLETION_TOKENS, priced from the price table
    (less discount, a fraction off: a batch's).

    A prompt rendered only after the claim is estimated from its template.
    """
    prompt = plan.prompt if plan.prompt is not None else template
    asked = prompt_tokens(prompt, plan.system_prompt)
    completion_tokens = plan.max_tokens or settings.estimated_completion_tokens
    return Estimate(usd=price(settings.prices, plan.model, asked, completion_tokens, discount),
                    tokens=asked + completion_tokens)


def price(prices, model, prompt_tokens, completion_tokens, discount=0.0):
    """USD for the tokens at the model's price (per million) less discount (a fraction off), 0 for a model
    without one."""
    pair = prices.get(model)
    if pair is None:
        return Decimal(0)
    cost = (Decimal(prompt_tokens or 0) * Decimal(str(pair[0])) + Decimal(completion_tokens or 0)
            * Decimal(str(pair[1]))) / Decimal(1_000_000)
    return (cost * (1 - Decimal(str(discount)))).quantize(_USD_PLACES)


def reserve(task, plan, settings, now, discount=0.0):
    """Charge the run's estimate (priced less discount) to every budget that applies; returns a Hold, a Stop,
    or None (no budget applies).

    All or nothing: the rows are locked in key order, checked, and charged only if every budget has room.
    """
    applicable = limits(task, settings, now)
    if not applicable:
        return None
    wanted = estimate(plan, task.prompt, settings, discount)
    keys = sorted({limit.key for limit in applicable})
    with transaction() as connection:
        connection.execute(insert(SPEND).values([dict(zip(("scope", "period", "period_start"), key))
                                                 for key in keys]).on_conflict_do_nothing())
        rows = {(row.scope, row.period, row.period_start): row for row in connection.execute(
            select(SPEND).where(tuple_(*_KEY).in_(keys)).order_by(*_KEY).with_for_update())}
        for limit in applicable:
            reason = _over(limit, rows[limit.key], wanted)
            if reason:
                return Stop(f"Budget exceeded: {limit.describe()} {reason}; the run did not call the model.")
        connection.execute(update(SPEND).where(tuple_(*_KEY).in_(keys))
                           .values(usd=SPEND.c.usd + wanted.usd, tokens=SPEND.c.tokens + wanted.tokens))
    return Hold(tuple(keys), wanted)


def _over(limit, row, wanted):
    """Why the estimate does not fit in the limit (spent so far plus estimate against limit), or None."""
    if limit.usd is not None and row.usd + wanted.usd > Decimal(str(limit.usd)):
        return (f"in USD: spent ${row.usd.normalize():f} + this run's estimate ${wanted.usd.normalize():f} "
                f"> limit ${limit.usd:g}")
    if limit.tokens is not None and row.tokens + wanted.tokens > limit.tokens:
        return f"in tokens: spent {row.tokens} + this run's estimate {wanted.tokens} > limit {limit.tokens}"
    return None


def settlement(hold, prices, model, result, discount=0.0):
    """What settles hold in the caller's transaction: a function of a connection (for promptbeat.runs.store.finish).

    The estimate is replaced with the usage the answer reported, priced less discount (a batch's); a call
    without usage costs nothing.
    """
    if hold is None:
        return None
    tokens = (result.prompt_tokens or 0) + (result.completion_tokens or 0)
    usd = price(prices, model, result.prompt_tokens, result.completion_tokens, discount)
    return lambda connection: _apply(connection, hold, usd - hold.estimate.usd, tokens - hold.estimate.tokens)


def release(hold):
    """Give back a hold's estimate (None: nothing held) for a run that will not reach its finish."""
    if hold is None:
        return
    with transaction() as connection:
        give_back(connection, hold)


def give_back(connection, hold):
    """Give back a hold's estimate in the caller's transaction (promptbeat.runs.store.cancel)."""
    _apply(connection, hold, -hold.estimate.usd, -hold.estimate.tokens)


def to_record(hold):
    """A hold as its execution keeps it (JSON), or None."""
    if hold is None:
        return None
    return {"keys": [[scope, period, start.isoformat()] for scope, period, start in hold.keys],
            "usd": str(hold.estimate.usd), "tokens": hold.estimate.tokens}


def from_record(record):
    """The Hold an execution keeps (to_record's output), or None."""
    if not record:
        return None
    keys = tuple((int(scope), str(BudgetPeriod(period)), date.fromisoformat(start))
                 for scope, period, start in record["keys"])
    return Hold(keys, Estimate(usd=Decimal(record["usd"]), tokens=int(record["tokens"])))


@contextmanager
def released_unless_finished(hold):
    """Give the hold back when its run leaves before its finish: cancelled or taken over mid-call
    (promptbeat.runs.liveness.RunCancelled), or an error. Its answer never arrived, so no usage is known."""
    try:
        yield
    except BaseException:
        release(hold)
        raise


def _apply(connection, hold, usd, tokens):
    # Locked in the order reserve locks them, so a settlement and a reservation never wait on each other in a cycle.
    keys = list(hold.keys)
    connection.execute(select(SPEND.c.scope).where(tuple_(*_KEY).in_(keys)).order_by(*_KEY).with_for_update())
    connection.execute(update(SPEND).where(tuple_(*_KEY).in_(keys))
                       .values(usd=SPEND.c.usd + usd, tokens=SPEND.c.tokens + tokens))


@contextmanager
def transaction():
    """A transaction that holds its row locks to its end, also on the worker's autocommit engine."""
    with db.engine.connect() as connection:
        connection.execution_options(isolation_level="READ COMMITTED")
        with connection.begin():
            yield connection


def usage(tasks, settings, now):
    """Spend in the current day and month: {task id: Usage} for those of tasks that have a budget (only those
    are counted), and the global Usage under GLOBAL_SCOPE; one query whatever the number of tasks."""
    zones = {task.id: task.timezone or "UTC" for task in tasks if _budgeted(task)}
    zones[GLOBAL_SCOPE] = settings.budget_timezone
    current = {}
    for scope, zone in zones.items():
        for period, start in period_starts(zone, now).items():
            current[(scope, str(period), start)] = scope
    found = {scope: {} for scope in zones}
    rows = db.session.execute(select(SPEND).where(tuple_(*_KEY).in_(list(current)))).all() if current else []
    for row in rows:
        found[row.scope][row.period] = row
    return {scope: _usage(periods) for scope, periods in found.items()}


def _budgeted(task):
    return any(getattr(task, name) is not None for name in BUDGET_FIELDS)


def _usage(periods):
    day, month = periods.get(BudgetPeriod.DAY), periods.get(BudgetPeriod.MONTH)
    return Usage(usd_day=float(day.usd) if day else 0.0, usd_month=float(month.usd) if month else 0.0,
                 tokens_day=int(day.tokens) if day else 0, tokens_month=int(month.tokens) if month else 0)


def forget(task_id):
    """Delete a task's ledger rows in the caller's Session, with the task."""
    db.session.execute(delete(SPEND).where(SPEND.c.scope == task_id))
