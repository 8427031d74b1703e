"""Batch mode end to end: a real worker collects runs, real beat's fixed jobs send them through the fake
server's Batch API with the official SDK, poll, and finish them from the results."""
import json
from decimal import Decimal

import openai
import pytest
from sqlalchemy import select

from promptbeat.extensions import db
from promptbeat.fakellm import BATCH_EXPIRED_MESSAGE
from promptbeat.models import Spend
from tests import services
from tests.conftest import TEST_API_KEY
from tests.receivers import Receiver
from tests.services import wait_for

pytestmark = pytest.mark.slow
# Beat submits and polls every second, so a test waits seconds, not minutes.
BATCH_ENV = {"PROMPTBEAT_BATCH_SECONDS": "1"}
# As role_environ's price table says for fake-model (USD per million tokens), and the default discount.
PRICES, DISCOUNT = (1.0, 2.0), 0.5


@pytest.fixture(scope="module")
def roles_env(role_environ):
    return services.role_env({**role_environ, **BATCH_ENV})


@pytest.fixture(scope="module")
def worker(roles_env, app, tmp_path_factory):
    role = services.start_worker(roles_env, tmp_path_factory.mktemp("batch-logs") / "worker.log")
    yield role
    role.stop()


@pytest.fixture
def live(app, worker, roles_env, fake_llm, tmp_path):
    """A real worker and a real beat; beat starts after the test's clean slate, which empties its schedule
    (its fixed jobs with it), so that its submit and poll jobs are in place. No batch scripts or batches
    are left from an earlier test."""
    fake_llm.reset()
    beat = services.start_beat(roles_env, tmp_path / "beat.log")
    yield
    beat.stop()


@pytest.fixture
def receiver():
    hook = Receiver()
    yield hook
    hook.stop()


def batch_task(api, name, prompt, **fields):
    body = {"name": name, "prompt": prompt, "schedule_type": "crontab", "cron": "0 9 * * *", "enabled": False,
            "batch": True, **fields}
    response = api.post("/tasks", json=body)
    assert response.status_code == 201, response.get_json()
    task = response.get_json()
    assert task["batch"] is True
    return task


def run_now(api, task):
    return api.post(f"/tasks/{task['id']}/run").get_json()["execution"]["id"]


def run_of(api, task, run_id):
    return next(e for e in api.get(f"/tasks/{task['id']}/executions").get_json()["executions"] if e["id"] == run_id)


def ended(api, runs):
    def check():
        found = {run_id: run_of(api, task, run_id) for task, run_id in runs}
        return found if all(run["status"] not in ("queued", "running", "submitted") for run in found.values()) else None
    return check


def test_runs_are_submitted_polled_and_finished_at_the_batch_discount(app, api, signed_in, fake_llm, receiver, live):
    # Every batch stays in progress for a few seconds, so its runs are seen submitted with its id.
    assert fake_llm.script_batches([{"seconds": 6}] * 3)[0] == 200
    hook = api.post("/channels", json={"name": "Batch hook", "kind": "webhook", "url": receiver.url}).get_json()
    tasks = [batch_task(api, f"Nightly {n}", f"Summarise item {n}", channel_ids=[hook["id"]]) for n in range(3)]
    runs = [(task, run_now(api, task)) for task in tasks]

    def all_submitted():
        found = [run_of(api, task, run_id) for task, run_id in runs]
        return found if all(run["status"] == "submitted" and run["batch_id"] for run in found) else None

    submitted = wait_for(all_submitted, 60, "the runs submitted with their batch id")
    batch_ids = {run["batch_id"] for run in submitted}
    assert batch_ids <= set(fake_llm.batches)
    # Nothing was asked before the batch ended: no chat request of these prompts yet.
    assert not any("Summarise item" in str(r["messages"]) for r in fake_llm.requests)

    finished = wait_for(ended(api, runs), 60, "the batch's runs finished")
    for n, (task, run_id) in enumerate(runs):
        run = finished[run_id]
        assert run["status"] == "success", run
        assert run["batch_id"] in batch_ids
        full = run_of(api, task, run_id)
        assert full["output"] == f"echo: Summarise item {n}"
        assert (run["prompt_tokens"], run["completion_tokens"]) == (3, 4)
        full_price = (3 * PRICES[0] + 4 * PRICES[1]) / 1e6
        assert run["cost_usd"] == pytest.approx(full_price * (1 - DISCOUNT))
    assert all(fake_llm.batches[batch_id]["status"] == "completed" for batch_id in batch_ids)
    # Each finished run is delivered to its task's channel, as a called run is.
    delivered = wait_for(lambda: len(receiver.requests) == 3 and receiver.requests, 30, "three deliveries")
    assert sorted(json.loads(r.body)["output"] for r in delivered) == [f"echo: Summarise item {n}" for n in range(3)]
    # The task's page shows the run's batch id.
    page = signed_in.get(f"/tasks/{tasks[0]['id']}").get_data(as_text=True)
    assert f"<code>{finished[runs[0][1]]['batch_id']}</code>" in page


def test_an_expired_batch_fails_its_runs_with_the_providers_message(app, api, fake_llm, live):
    fake_llm.script_batches([{"outcome": "expired"}] * 2)
    tasks = [batch_task(api, f"Expiring {n}", f"Slow question {n}") for n in range(2)]
    runs = [(task, run_now(api, task)) for task in tasks]
    finished = wait_for(ended(api, runs), 60, "the expired batch's runs failed")
    for run in finished.values():
        assert (run["status"], run["error_class"], run["error"]) == ("failed", "BatchExpired", BATCH_EXPIRED_MESSAGE)
        assert run["batch_id"] and run["cost_usd"] is None


def test_a_line_that_fails_fails_only_its_own_run(app, api, fake_llm, live):
    good = batch_task(api, "Good line", "A fine question")
    bad = batch_task(api, "Bad line", "[[fail:400]] A refused question")
    runs = [(good, run_now(api, good)), (bad, run_now(api, bad))]
    finished = wait_for(ended(api, runs), 60, "both runs finished")
    good_run, bad_run = finished[runs[0][1]], finished[runs[1][1]]
    assert good_run["status"] == "success"
    assert (bad_run["status"], bad_run["error_class"], bad_run["error"]) == (
        "failed", "BadRequestError", "BadRequestError (HTTP 400): Invalid request.")


def test_a_batch_the_provider_no_longer_knows_marks_its_runs_lost(app, api, fake_llm, live):
    fake_llm.script_batches([{"seconds": 600}] * 2)
    task = batch_task(api, "Forgotten", "Remember me")
    run_id = run_now(api, task)
    wait_for(lambda: run_of(api, task, run_id)["batch_id"], 60, "the run submitted")
    fake_llm.reset()  # the provider forgets the batch: it answers 404 from now on
    finished = wait_for(ended(api, [(task, run_id)]), 60, "the run given up")[run_id]
    assert (finished["status"], finished["error_class"]) == ("lost", "BatchLost")
    assert "no longer knows batch" in finished["error"]


def day_spend(app, task_id):
    """The task's spend today in the ledger: (usd, tokens)."""
    with app.app_context():
        row = db.session.execute(select(Spend).where(Spend.scope == task_id, Spend.period == "day")).scalar_one()
        return row.usd, row.tokens


def batch_lines(fake_llm, batch_id):
    """The custom_ids of a batch's input file, read back through the SDK as any client of the provider would."""
    with openai.OpenAI(base_url=fake_llm.url, api_key=TEST_API_KEY, max_retries=0) as client:
        file_id = client.batches.retrieve(batch_id).input_file_id
        return [json.loads(line)["custom_id"] for line in client.files.content(file_id).text.splitlines()]


# "Summarise item 0" is 16 characters (4 tokens) and the answer at most 10: 14 tokens a run.
ESTIMATE_TOKENS = 14


def test_a_budget_lets_only_the_runs_it_has_room_for_into_a_batch(app, api, fake_llm, live):
    # The batches stay in progress until every run was collected, so no settlement makes room meanwhile.
    fake_llm.script_batches([{"seconds": 8}] * 2)
    task = batch_task(api, "Budgeted batch", "Summarise item 0", max_tokens=10, budget_tokens_day=2 * ESTIMATE_TOKENS)
    run_ids = [run_now(api, task) for _ in range(3)]

    def collected():
        found = {run_id: run_of(api, task, run_id) for run_id in run_ids}
        return found if all(run["status"] != "queued" for run in found.values()) else None

    statuses = {run_id: run["status"] for run_id, run in wait_for(collected, 60, "the runs collected").items()}
    assert sorted(statuses.values()) == ["skipped", "submitted", "submitted"]
    (skipped,) = [run_id for run_id, status in statuses.items() if status == "skipped"]
    assert run_of(api, task, skipped)["error_class"] == "budget_exceeded"
    sent = [run_id for run_id in run_ids if run_id != skipped]
    finished = wait_for(ended(api, [(task, run_id) for run_id in sent]), 60, "the batch's runs finished")
    answered = [finished[run_id] for run_id in sent]
    assert [run["status"] for run in answered] == ["success", "success"]
    # The skipped run never reached the provider's batch files; the provider answered only the two lines.
    lines = [line for batch_id in {run["batch_id"] for run in answered} for line in batch_lines(fake_llm, batch_id)]
    assert sorted(lines) == sorted(f"run-{run_id}" for run_id in sent)
    assert len(fake_llm.requests) == 2
    # The ledger holds what the answered runs really cost: their tokens, at the discounted price.
    usd, tokens = day_spend(app, task["id"])
    assert tokens == sum(run["prompt_tokens"] + run["completion_tokens"] for run in answered) == 14
    assert usd == sum(Decimal(str(run["cost_usd"])) for run in answered) == Decimal("0.00001100")


def test_an_expired_batch_gives_its_runs_estimates_back(app, api, fake_llm, live):
    fake_llm.script_batches([{"outcome": "expired"}] * 2)
    task = batch_task(api, "Budgeted expiry", "Summarise item 0", max_tokens=10, budget_tokens_day=10 * ESTIMATE_TOKENS,
                      budget_usd_day=1.0)
    runs = [(task, run_now(api, task)) for _ in range(2)]
    finished = wait_for(ended(api, runs), 60, "the expired batch's runs failed")
    assert {run["error_class"] for run in finished.values()} == {"BatchExpired"}
    assert day_spend(app, task["id"]) == (0, 0)
