"""Budgets of batch-mode runs in-process: charged at collection at the batch discount, kept on the run, settled
by its result, given back when it cannot be asked or is cancelled, kept when it is lost."""
from decimal import Decimal

from sqlalchemy import select, update

from promptbeat.batches import results
from promptbeat.extensions import db
from promptbeat.models import GLOBAL_SCOPE, Connection, Execution, Spend, Task, Trigger, utcnow
from promptbeat.runs import budget, store
from promptbeat.runs.states import RunStatus
from tests.runner import run_and_reload

# "Say hi" is 6 characters (2 tokens) and the answer at most 10: 12 tokens, $22 per million at the price
# table's (1.0, 2.0) for fake-model, half of it at the default batch discount.
ESTIMATE_TOKENS = 12
ESTIMATE_USD = Decimal("0.00001100")


def batch_task(**fields):
    task = Task(name="Batch budget", prompt="Say hi", model="fake-model", schedule_type="crontab", cron="0 9 * * *",
                timezone="UTC", enabled=False, batch=True, max_tokens=10, **fields)
    db.session.add(task)
    db.session.commit()
    return task.id


def ledger():
    db.session.expire_all()
    return {(row.scope, row.period): (row.usd, row.tokens) for row in db.session.execute(select(Spend)).scalars()}


def day_spend(task_id):
    return ledger()[(task_id, "day")]


def result_line():
    """A line of a batch's output file: 10 prompt and 20 completion tokens."""
    return {"custom_id": "run-1", "error": None, "response": {"status_code": 200, "body": {
        "choices": [{"message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}}}


def test_a_collected_run_is_charged_its_discounted_estimate_and_keeps_its_hold(app, fake_llm):
    fake_llm.reset()
    with app.app_context():
        task_id = batch_task(budget_tokens_day=10 * ESTIMATE_TOKENS)
        run = run_and_reload(task_id, trigger=Trigger.MANUAL)
        assert run.status == RunStatus.SUBMITTED
        assert day_spend(task_id) == (ESTIMATE_USD, ESTIMATE_TOKENS)
        hold = budget.from_record(run.budget_hold)
        assert hold.estimate == budget.Estimate(usd=ESTIMATE_USD, tokens=ESTIMATE_TOKENS)
        assert {key[:2] for key in hold.keys} == {(task_id, "day"), (task_id, "month")}
        assert budget.from_record(budget.to_record(hold)) == hold
    assert fake_llm.requests == []


def test_a_result_settles_the_hold_at_the_discounted_price_once(app):
    settings = app.config["PROMPTBEAT"]
    with app.app_context():
        task_id = batch_task(budget_usd_day=1.0)
        run = run_and_reload(task_id, trigger=Trigger.MANUAL)
        db.session.execute(update(Execution).where(Execution.id == run.id).values(batch_id="batch_b"))
        db.session.commit()
        task = db.session.get(Task, task_id)
        hold = budget.from_record(run.budget_hold)
        result = results.from_line(result_line(), settings, "fake-model", 5)
        assert results.finish(task, run.id, "batch_b", Trigger.MANUAL, result, settings, hold, "fake-model")
        # (10 * 1.0 + 20 * 2.0) / 1e6, half off: what the run's own cost says.
        assert day_spend(task_id) == (Decimal("0.00002500"), 30)
        assert db.session.get(Execution, run.id).cost_usd == 0.000025
        # A second result for the finished run writes nothing and settles nothing.
        assert not results.finish(task, run.id, "batch_b", Trigger.MANUAL, result, settings, hold, "fake-model")
        assert day_spend(task_id) == (Decimal("0.00002500"), 30)


def test_a_run_over_its_budget_is_skipped_at_collection_and_may_pause_its_task(app, fake_llm):
    fake_llm.reset()
    with app.app_context():
        task_id = batch_task(budget_tokens_day=ESTIMATE_TOKENS - 1, pause_on_budget=True)
        db.session.execute(update(Task).where(Task.id == task_id).values(enabled=True))
        db.session.commit()
        run = run_and_reload(task_id, trigger=Trigger.MANUAL)
        assert (run.status, run.error_class) == (RunStatus.SKIPPED, budget.ERROR_CLASS)
        assert f"this run's estimate {ESTIMATE_TOKENS} > limit {ESTIMATE_TOKENS - 1}" in run.error
        assert run.batch_request is None and run.budget_hold is None and run.started_at is None
        task = db.session.get(Task, task_id)
        assert not task.enabled and task.pause_note.startswith("Paused automatically: Budget exceeded")
        assert day_spend(task_id) == (0, 0)
    assert fake_llm.requests == []


def test_a_run_that_cannot_be_asked_gives_its_estimate_back(app, fake_llm):
    with app.app_context():
        broken = Connection(name="Unreadable key", base_url=fake_llm.url, api_key_encrypted="not-a-fernet-token")
        db.session.add(broken)
        db.session.commit()
        task_id = batch_task(connection_id=broken.id, budget_tokens_day=10 * ESTIMATE_TOKENS)
        run = run_and_reload(task_id, trigger=Trigger.MANUAL)
        assert (run.status, run.error_class) == (RunStatus.FAILED, "CryptoError")
        assert day_spend(task_id) == (0, 0)


def test_a_cancelled_submitted_run_gives_its_estimate_back_and_a_lost_one_keeps_it(app):
    with app.app_context():
        task_id = batch_task(budget_tokens_day=10 * ESTIMATE_TOKENS)
        holds = {}
        for _ in range(2):
            run = run_and_reload(task_id, trigger=Trigger.MANUAL)
            holds[run.id] = budget.from_record(run.budget_hold)
        cancelled, lost = holds
        assert day_spend(task_id) == (2 * ESTIMATE_USD, 2 * ESTIMATE_TOKENS)
        assert store.cancel(cancelled)
        assert day_spend(task_id) == (ESTIMATE_USD, ESTIMATE_TOKENS)
        # Cancelling it again changes nothing, nor does a result that arrives for it.
        assert not store.cancel(cancelled)
        assert store.lose_submitted(lost, None, "gone", utcnow())
        # Its request may have been answered, and paid for, by the provider.
        assert day_spend(task_id) == (ESTIMATE_USD, ESTIMATE_TOKENS)
        settings = app.config["PROMPTBEAT"]
        task = db.session.get(Task, task_id)
        result = results.from_line(result_line(), settings, "fake-model", 5)
        for run_id, hold in holds.items():
            assert not results.finish(task, run_id, None, Trigger.MANUAL, result, settings, hold, "fake-model")
        assert day_spend(task_id) == (ESTIMATE_USD, ESTIMATE_TOKENS)


def test_a_deleted_task_gives_its_submitted_runs_estimates_back_to_the_global_budget(app, api, swap_settings):
    swap_settings(budget_tokens_day=10 * ESTIMATE_TOKENS)
    with app.app_context():
        task_id = batch_task()
        run_and_reload(task_id, trigger=Trigger.MANUAL)
        assert ledger()[(GLOBAL_SCOPE, "day")] == (ESTIMATE_USD, ESTIMATE_TOKENS)
    assert api.delete(f"/tasks/{task_id}").status_code == 204
    with app.app_context():
        assert ledger()[(GLOBAL_SCOPE, "day")] == (0, 0)
