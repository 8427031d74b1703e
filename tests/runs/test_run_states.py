"""The run state machine: the store allows exactly the table's transitions, and every copy of the states agrees."""
from datetime import timedelta
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from sqlalchemy import update

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, utcnow
from promptbeat.runs import store
from promptbeat.runs.plan import Start
from promptbeat.runs.states import FINAL, PENDING, RETRYABLE, TRANSITIONS, RunStatus
from tests.web.test_ops import scrape
from web.i18n import RUN_STATUS_WORDS

PAIRS = [(source, target) for source in RunStatus for target in RunStatus]
CATALOGUE = Path(__file__).resolve().parents[2] / "web" / "translations" / "zh_Hans" / "LC_MESSAGES" / "messages.po"


def make_task():
    task = Task(name="States", prompt="Say hi", model="fake-model", schedule_type="crontab", cron="0 0 1 1 *",
                timezone="UTC", enabled=False)
    db.session.add(task)
    db.session.commit()
    return task.id


def run_in(task_id, status, **values):
    """A run put in status directly, as the store would have left it."""
    run_id = store.create(task_id, Trigger.MANUAL, "fake-model")
    db.session.execute(update(Execution).where(Execution.id == run_id).values(status=status, **values))
    db.session.commit()
    return run_id


def status_of(run_id):
    db.session.expire_all()
    return db.session.get(Execution, run_id).status


def test_every_state_has_its_row_in_the_table_and_only_final_states_end():
    assert set(TRANSITIONS) == set(RunStatus)
    assert FINAL == {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.LOST, RunStatus.CANCELLED}
    assert RETRYABLE <= FINAL


@pytest.mark.parametrize("source,target", PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_the_store_makes_exactly_the_allowed_transitions(app, source, target):
    with app.app_context():
        run_id = run_in(make_task(), source)
        moved = store.transition(run_id, target, error="moved")
        assert moved == (target in TRANSITIONS[source])
        assert status_of(run_id) == (target if moved else source)
        assert (db.session.get(Execution, run_id).error == "moved") == moved


def test_a_transition_of_a_run_that_is_gone_changes_nothing(app):
    with app.app_context():
        assert store.transition(2_000_000_000, RunStatus.CANCELLED) is False


def test_a_narrowed_transition_may_not_leave_the_table():
    with pytest.raises(ValueError):
        store.transition_statement(RunStatus.RUNNING, (), (RunStatus.SUCCESS,))


CLAIM = "w@h:1:ab/1"
START = Start(model="fake-model", started_at=utcnow(), deadline_at=utcnow() + timedelta(minutes=5), worker="w@h",
              prompt="Say hi", runner=CLAIM)


@pytest.mark.parametrize("source", list(RunStatus))
def test_a_claim_takes_only_a_queued_or_waiting_run_and_records_who_holds_it(app, source):
    with app.app_context():
        run_id = run_in(make_task(), source)
        assert store.claim(run_id, START) == (source in PENDING)
        claimed = db.session.get(Execution, run_id)
        assert (claimed.worker, claimed.runner) == (("w@h", CLAIM) if source in PENDING else (None, None))


@pytest.mark.parametrize("source", list(RunStatus))
def test_only_a_queued_or_waiting_run_waits_with_its_reason_and_moment(app, source):
    moment = utcnow().replace(microsecond=0) + timedelta(seconds=30)
    with app.app_context():
        run_id = run_in(make_task(), source)
        assert store.wait(run_id, "rate_limit", moment) == (source in PENDING)
        waiting = db.session.get(Execution, run_id)
        assert (waiting.status, waiting.wait_reason, waiting.not_before) == (
            (RunStatus.WAITING, "rate_limit", moment) if source in PENDING else (source, None, None))


@pytest.mark.parametrize("source", list(RunStatus))
def test_only_a_queued_or_waiting_run_is_skipped_and_only_a_running_one_finishes_under_its_claim(app, source):
    with app.app_context():
        task_id = make_task()
        skipped, finished = run_in(task_id, source), run_in(task_id, source, runner=CLAIM)
        assert store.skip(skipped, "because") == (source in PENDING)
        # Another claim (a worker thought dead, whose run was started again) writes nothing.
        assert store.finish(finished, {"output": "late"}, failed=False, counted=True, claim="other:2:cd/1") == (
            False, None)
        written, counters = store.finish(finished, {"output": "hi"}, failed=False, counted=True, claim=CLAIM)
        assert written == (source == RunStatus.RUNNING)
        assert (counters is not None) == written
        assert db.session.get(Task, task_id).run_count == (1 if written else 0)


@pytest.mark.parametrize("source", list(RunStatus))
def test_a_dead_runners_run_goes_back_to_the_queue_or_is_lost_only_under_its_claim(app, source):
    with app.app_context():
        task_id = make_task()
        requeued, lost = run_in(task_id, source, runner=CLAIM), run_in(task_id, source, runner=CLAIM)
        assert not store.requeue_dead(requeued, "other:2:cd/1")
        assert store.requeue_dead(requeued, CLAIM) == (source == RunStatus.RUNNING)
        again = db.session.get(Execution, requeued)
        assert (again.status, again.recoveries, again.runner) == (
            (RunStatus.QUEUED, 1, None) if source == RunStatus.RUNNING else (source, 0, CLAIM))
        assert store.lose_dead(lost, CLAIM, "gone", utcnow()) == (source == RunStatus.RUNNING)
        assert status_of(lost) == (RunStatus.LOST if source == RunStatus.RUNNING else source)


@pytest.mark.parametrize("source", list(RunStatus))
def test_a_queued_or_waiting_run_whose_message_was_lost_is_counted_once_or_lost(app, source):
    with app.app_context():
        task_id = make_task()
        resent, lost = run_in(task_id, source), run_in(task_id, source)
        assert store.count_resend(resent, 0) == (source in PENDING)
        # A second sweep that read the same count does not send it again.
        assert not store.count_resend(resent, 0)
        assert store.lose_queued(lost, 0, "message lost", utcnow()) == (source in PENDING)
        assert status_of(lost) == (RunStatus.LOST if source in PENDING else source)


@pytest.mark.parametrize("source", list(RunStatus))
def test_cancel_ends_a_queued_waiting_running_or_submitted_run_and_nothing_else(app, source):
    live = (*PENDING, RunStatus.RUNNING, RunStatus.SUBMITTED)
    with app.app_context():
        run_id = run_in(make_task(), source)
        assert store.cancel(run_id) == (source in live)
        assert status_of(run_id) == (RunStatus.CANCELLED if source in live else source)


@pytest.mark.parametrize("source", list(RunStatus))
def test_only_a_queued_or_waiting_run_is_collected_for_a_batch(app, source):
    with app.app_context():
        run_id = run_in(make_task(), source)
        moved = store.collect(run_id, {"prompt": "Say hi", "batch_request": {"model": "fake-model"}})
        assert moved == (source in PENDING)
        assert status_of(run_id) == (RunStatus.SUBMITTED if moved else source)


@pytest.mark.parametrize("source", list(RunStatus))
def test_only_a_submitted_run_finishes_or_is_lost_and_only_under_its_batch(app, source):
    with app.app_context():
        task_id = make_task()
        finished, lost, marked = (run_in(task_id, source, batch_id="batch_a") for _ in range(3))
        assert store.finish_submitted(finished, "batch_b", {"output": "late"}, failed=False, counted=True) == (
            False, None)
        written, counters = store.finish_submitted(finished, "batch_a", {"output": "hi"}, failed=False, counted=True)
        assert written == (source == RunStatus.SUBMITTED) == (counters is not None)
        assert db.session.get(Task, task_id).run_count == (1 if written else 0)
        assert not store.lose_submitted(lost, "batch_b", "gone", utcnow())
        assert store.lose_submitted(lost, "batch_a", "gone", utcnow()) == (source == RunStatus.SUBMITTED)
        assert status_of(lost) == (RunStatus.LOST if source == RunStatus.SUBMITTED else source)
        # Only a submitted run not yet sent is marked with the batch it was sent in.
        waiting = run_in(task_id, source)
        assert store.mark_batched([marked, waiting], "batch_c") == (1 if source == RunStatus.SUBMITTED else 0)
        assert db.session.get(Execution, marked).batch_id == "batch_a"


@pytest.mark.parametrize("source", list(RunStatus))
def test_a_retry_is_a_new_queued_manual_run_linked_to_a_failed_lost_or_cancelled_one(app, source):
    with app.app_context():
        task_id = make_task()
        retried = run_in(task_id, source)
        retry_id = store.create_retry(retried)
        if source not in RETRYABLE:
            assert retry_id is None
            assert db.session.execute(db.select(db.func.count()).select_from(Execution)).scalar() == 1
            return
        retry = db.session.get(Execution, retry_id)
        assert (retry.task_id, retry.status, retry.trigger, retry.retry_of, retry.model) == (
            task_id, RunStatus.QUEUED, Trigger.MANUAL, retried, "fake-model")


def test_deleting_the_retried_run_keeps_the_retry(app):
    with app.app_context():
        retried = run_in(make_task(), RunStatus.FAILED)
        retry_id = store.create_retry(retried)
        db.session.delete(db.session.get(Execution, retried))
        db.session.commit()
        db.session.expire_all()
        assert db.session.get(Execution, retry_id).retry_of is None


def test_the_sweep_marks_only_running_runs_past_the_cutoff_lost(app):
    now = utcnow()
    with app.app_context():
        task_id = make_task()
        past = now - timedelta(minutes=1)
        dead = {status: run_in(task_id, status, deadline_at=past) for status in RunStatus}
        alive = run_in(task_id, RunStatus.RUNNING, deadline_at=now + timedelta(minutes=1))
        assert store.mark_lost(now, now) == [(dead[RunStatus.RUNNING], task_id)]
        assert {status: status_of(run_id) for status, run_id in dead.items()} == {
            **{status: status for status in RunStatus}, RunStatus.RUNNING: RunStatus.LOST}
        assert status_of(alive) == RunStatus.RUNNING


# Every copy of the states is derived from RunStatus or checked against it here.


def test_the_openapi_status_enum_is_run_status(client):
    components = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    reference = components["ExecutionBrief"]["properties"]["status"]["$ref"].rsplit("/", 1)[1]
    assert set(components[reference]["enum"]) == set(RunStatus)


def test_every_status_has_a_word_and_a_chinese_translation():
    assert set(RUN_STATUS_WORDS) == set(RunStatus)
    assert {str(word._args[0]) for word in RUN_STATUS_WORDS.values()} == set(RunStatus)
    with open(CATALOGUE, "rb") as po_file:
        translated = {m.id: m.string for m in read_po(po_file) if m.id and m.string}
    assert set(RunStatus) <= set(translated)


def test_every_status_shows_in_its_language_on_the_task_page(app, signed_in):
    with app.app_context():
        task_id = make_task()
        for status in RunStatus:
            run_in(task_id, status)
    page = signed_in.get(f"/tasks/{task_id}", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    with open(CATALOGUE, "rb") as po_file:
        chinese = {m.id: m.string for m in read_po(po_file) if m.id}
    for status in RunStatus:
        assert f'<span class="status {status}">{chinese[status]}</span>' in page


def test_metrics_have_a_series_for_every_status(client):
    statuses = {dict(labels)["status"] for name, labels in scrape(client) if name == "promptbeat_runs"}
    assert statuses == set(RunStatus)
