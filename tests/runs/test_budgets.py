"""Budgets: a run that would pass one is skipped before its call; the ledger stays exact under concurrent runs."""
import threading
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select

from promptbeat.extensions import db
from promptbeat.models import GLOBAL_SCOPE, BudgetPeriod, Execution, Spend, Task, Trigger
from promptbeat.runs import budget, pipeline
from promptbeat.settings import Settings
from promptbeat.runs.plan import RunRequest
from tests.runner import run_and_reload

# "Hello there" is 11 characters (3 tokens); without max_tokens the answer is estimated at
# PROMPTBEAT_ESTIMATED_COMPLETION_TOKENS.
PROMPT = "Hello there"
ESTIMATE_TOKENS = 3 + Settings.estimated_completion_tokens


def make_task(app, **values):
    with app.app_context():
        task = Task(name="Budgeted", prompt=values.pop("prompt", PROMPT), model="fake-model", schedule_type="crontab",
                    cron="0 9 * * *", **values)
        db.session.add(task)
        db.session.commit()
        return task.id


def run(app, task_id, trigger=Trigger.MANUAL):
    with app.app_context():
        return run_and_reload(task_id, trigger=trigger, sleep=lambda seconds: None)


def ledger(app):
    with app.app_context():
        return {(row.scope, row.period, row.period_start): (row.usd, row.tokens)
                for row in db.session.execute(select(Spend)).scalars()}


def test_a_budget_stops_the_run_before_the_call(app, fake_llm):
    fake_llm.reset()
    task_id = make_task(app, budget_tokens_day=ESTIMATE_TOKENS - 1)
    execution = run(app, task_id)
    assert execution.status == "skipped" and execution.error_class == "budget_exceeded"
    assert execution.error.startswith("Budget exceeded: the task's daily budget")
    assert f"spent 0 + this run's estimate {ESTIMATE_TOKENS} > limit {ESTIMATE_TOKENS - 1}" in execution.error
    assert execution.started_at is None and execution.prompt_tokens is None
    assert fake_llm.requests == []  # the provider saw nothing


def test_a_run_within_budget_is_charged_its_usage_not_its_estimate(app, fake_llm):
    fake_llm.reset()
    task_id = make_task(app, budget_usd_day=1.0, budget_tokens_month=10 * ESTIMATE_TOKENS)
    execution = run(app, task_id)
    assert execution.status == "success" and len(fake_llm.requests) == 1
    today = budget.period_starts("UTC", execution.started_at)
    rows = ledger(app)
    # Both periods are counted once a task has any budget; the estimate is replaced with the answer's usage.
    assert rows[(task_id, "day", today[BudgetPeriod.DAY])] == (Decimal(str(execution.cost_usd)),
                                                              execution.total_tokens)
    assert rows[(task_id, "month", today[BudgetPeriod.MONTH])][1] == execution.total_tokens
    assert not any(scope == GLOBAL_SCOPE for scope, _, _ in rows)  # no global budget: no global row


def test_a_failed_call_gives_its_estimate_back(app, fake_llm):
    fake_llm.reset()
    task_id = make_task(app, prompt="Broken [[fail:400]]", budget_tokens_day=2 * ESTIMATE_TOKENS)
    execution = run(app, task_id)
    assert execution.status == "failed"
    assert {tokens for _, tokens in ledger(app).values()} == {0}


def test_usd_budgets_are_priced_from_the_price_table(app, fake_llm):
    fake_llm.reset()
    # fake-model costs $1 per million prompt tokens and $2 per million completion tokens.
    estimate = Decimal(3 * 1 + Settings.estimated_completion_tokens * 2) / 1_000_000
    task_id = make_task(app, budget_usd_month=float(estimate) / 2)
    execution = run(app, task_id)
    assert execution.error_class == "budget_exceeded" and "monthly budget" in execution.error
    assert f"this run's estimate ${estimate.normalize():f} > limit" in execution.error
    assert fake_llm.requests == []


def test_a_model_without_a_price_counts_tokens_only(app, fake_llm):
    fake_llm.reset()
    task_id = make_task(app, budget_usd_day=0.0)
    with app.app_context():
        db.session.get(Task, task_id).model = "gpt-unpriced"
        db.session.commit()
    assert run(app, task_id).status == "success"


def test_the_global_budget_stops_every_task(app, fake_llm, swap_settings):
    fake_llm.reset()
    # Room for one estimate; the first run's usage (a few tokens) leaves too little for a second.
    swap_settings(budget_tokens_day=ESTIMATE_TOKENS + 2, budget_timezone="Asia/Tokyo")
    first, second = make_task(app), make_task(app)
    assert run(app, first).status == "success"
    stopped = run(app, second)
    assert stopped.status == "skipped" and stopped.error_class == "budget_exceeded"
    assert stopped.error.startswith("Budget exceeded: the global daily budget")
    assert len(fake_llm.requests) == 1
    tokyo_today = budget.period_starts("Asia/Tokyo", stopped.created_at)[BudgetPeriod.DAY]
    assert (GLOBAL_SCOPE, "day", tokyo_today) in ledger(app)


@pytest.mark.parametrize(("moment", "zone", "day", "month"), [
    # Late on the last day of January in UTC is already February in Tokyo (UTC+9).
    (datetime(2027, 1, 31, 20, 0, tzinfo=timezone.utc), "Asia/Tokyo", date(2027, 2, 1), date(2027, 2, 1)),
    (datetime(2027, 1, 31, 20, 0, tzinfo=timezone.utc), "UTC", date(2027, 1, 31), date(2027, 1, 1)),
    # New Year's Eve in New York is already New Year's Day in UTC.
    (datetime(2027, 1, 1, 3, 0, tzinfo=timezone.utc), "America/New_York", date(2026, 12, 31), date(2026, 12, 1)),
    # The end of a leap February, in a zone fourteen hours ahead.
    (datetime(2028, 2, 29, 10, 0, tzinfo=timezone.utc), "Pacific/Kiritimati", date(2028, 3, 1), date(2028, 3, 1)),
])
def test_days_and_months_are_counted_in_the_zone(moment, zone, day, month):
    assert budget.period_starts(zone, moment) == {BudgetPeriod.DAY: day, BudgetPeriod.MONTH: month}


def test_yesterdays_spend_does_not_count_today_but_this_months_does(app, fake_llm):
    fake_llm.reset()
    zone = "Pacific/Kiritimati"
    task_id = make_task(app, timezone=zone, budget_tokens_day=2 * ESTIMATE_TOKENS,
                        budget_tokens_month=3 * ESTIMATE_TOKENS)
    with app.app_context():
        starts = budget.period_starts(zone, datetime.now(timezone.utc))
        yesterday = date.fromordinal(starts[BudgetPeriod.DAY].toordinal() - 1)
        db.session.add(Spend(scope=task_id, period="day", period_start=yesterday, usd=0, tokens=10**6))
        month = Spend(scope=task_id, period="month", period_start=starts[BudgetPeriod.MONTH], usd=0,
                      tokens=ESTIMATE_TOKENS)
        db.session.add(month)
        db.session.commit()
    assert run(app, task_id).status == "success"  # yesterday's spend is over, the month has room
    with app.app_context():
        db.session.execute(db.update(Spend).where(Spend.scope == task_id, Spend.period == "month")
                           .values(tokens=2 * ESTIMATE_TOKENS + 1))
        db.session.commit()
    stopped = run(app, task_id)
    assert stopped.error_class == "budget_exceeded" and "the task's monthly budget" in stopped.error
    assert f"period from {starts[BudgetPeriod.MONTH].isoformat()}" in stopped.error
    assert len(fake_llm.requests) == 1


def test_concurrent_runs_never_pass_the_budget_together(app, fake_llm):
    """Twelve runs at once, each estimated at 1,000+ tokens, against a budget with room for four estimates."""
    fake_llm.reset()
    prompt = "Slow [[sleep:0.5]]"  # 18 characters: 5 tokens; each call lasts long enough to overlap the others
    estimate = 5 + 1000
    task_id = make_task(app, prompt=prompt, max_tokens=1000, overlap_policy="allow",
                        budget_tokens_day=4 * estimate + estimate // 2)
    settings = app.config["PROMPTBEAT"]
    outcomes, start = [], threading.Barrier(12)

    def one():
        with app.app_context():
            start.wait()
            outcomes.append(pipeline.run(RunRequest(task_id, trigger=Trigger.MANUAL), settings,
                                         sleep=lambda seconds: None))
            db.session.remove()

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        runs = db.session.execute(select(Execution).where(Execution.task_id == task_id)).scalars().all()
        used = sum(run.total_tokens or 0 for run in runs)
    statuses = [run.status for run in runs]
    assert len(runs) == 12 and set(statuses) <= {"success", "skipped"}
    assert 1 <= statuses.count("success") and statuses.count("skipped") >= 1
    # The budget holds four estimates: no more than four calls were ever in flight at once.
    assert fake_llm.stats["peak_in_flight"] <= 4
    assert len(fake_llm.requests) == statuses.count("success")
    # Every hold was settled: the ledger has exactly the usage the answers reported.
    assert {tokens for _, tokens in ledger(app).values()} == {used}


def test_a_budget_stop_can_pause_the_task(app, fake_llm):
    fake_llm.reset()
    task_id = make_task(app, budget_tokens_day=10, pause_on_budget=True)
    execution = run(app, task_id)
    assert execution.error_class == "budget_exceeded"
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert not task.enabled and task.pause_note.startswith("Paused automatically: Budget exceeded")
    # Without the option the task stays enabled.
    other = make_task(app, budget_tokens_day=10)
    run(app, other)
    with app.app_context():
        assert db.session.get(Task, other).enabled


def test_a_deleted_task_takes_its_ledger_rows_with_it(app, api, fake_llm):
    task_id = api.post("/tasks", json={"name": "Gone", "prompt": PROMPT, "schedule_type": "crontab",
                                       "cron": "0 9 * * *", "budget_tokens_day": 5000}).get_json()["id"]
    run(app, task_id)
    assert ledger(app)
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    assert ledger(app) == {}
