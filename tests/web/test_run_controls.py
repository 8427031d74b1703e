"""Operator controls: cancel a queued, waiting or running run, retry a failed, lost or cancelled one (API and task page)."""
import re
from datetime import timedelta

import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger, utcnow
from promptbeat.runs import overlap, store
from promptbeat.runs.plan import Start
from promptbeat.runs.states import RETRYABLE, RunStatus
from tests.conftest import csrf_token, issue_api_token
from tests.services import role_env, start_worker, wait_for
from tests.web.test_api import queued_messages

CANCELLABLE = (RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RUNNING, RunStatus.SUBMITTED)
NOT_RETRYABLE = sorted(set(RunStatus) - RETRYABLE)
VIEWER, VIEWER_PASSWORD = "viewer@example.com", "viewer password 1"


def make_task(app, **extra):
    with app.app_context():
        task = Task(name="Digest", prompt="Summarise", model="fake-model", schedule_type="crontab",
                    cron="0 9 * * *", timezone="UTC", enabled=False, anchor_at=utcnow(), **extra)
        db.session.add(task)
        db.session.commit()
        return task.id


def add_run(app, task_id, status):
    started = None if status == RunStatus.QUEUED else utcnow()
    finished = utcnow() if RunStatus(status).is_final else None
    with app.app_context():
        run = Execution(task_id=task_id, status=status, trigger=Trigger.SCHEDULED, model="fake-model",
                        started_at=started, finished_at=finished, worker=None if started is None else "w@h",
                        error="Boom." if status == RunStatus.FAILED else None)
        db.session.add(run)
        db.session.commit()
        return run.id


def rows(app, task_id):
    """(id, status, retry_of, trigger) of every run of the task, oldest first."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            db.select(Execution.id, Execution.status, Execution.retry_of, Execution.trigger)
            .filter_by(task_id=task_id).order_by(Execution.id)).all()]


def reload(app, run_id):
    with app.app_context():
        run = db.session.get(Execution, run_id)
        db.session.expunge(run)
        return run


# --- the API -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", CANCELLABLE)
def test_cancel_ends_a_queued_or_running_run_cancelled(app, api, status):
    task_id = make_task(app)
    run_id = add_run(app, task_id, status)
    response = api.post(f"/executions/{run_id}/cancel")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["id"], body["status"], body["error_class"]) == (run_id, "cancelled", "Cancelled")
    assert body["finished_at"] is not None
    assert reload(app, run_id).status == RunStatus.CANCELLED


def test_cancel_of_a_run_queued_by_run_now(app, api, redis_client):
    task_id = make_task(app)
    run_id = api.post(f"/tasks/{task_id}/run").get_json()["execution"]["id"]
    assert api.post(f"/executions/{run_id}/cancel").get_json()["status"] == "cancelled"
    assert rows(app, task_id) == [(run_id, "cancelled", None, "manual")]


@pytest.mark.parametrize("status", sorted(set(RunStatus) - set(CANCELLABLE)))
def test_cancel_of_a_finished_run_is_409_and_changes_nothing(app, api, status):
    task_id = make_task(app)
    run_id = add_run(app, task_id, status)
    before = reload(app, run_id)
    response = api.post(f"/executions/{run_id}/cancel")
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "conflict"
    assert f"already ended ({status})" in body["message"]
    assert "queued, waiting, running or submitted" in body["message"]
    after = reload(app, run_id)
    assert (after.status, after.finished_at, after.error) == (before.status, before.finished_at, before.error)


@pytest.mark.parametrize("action", ["cancel", "retry"])
@pytest.mark.parametrize("run_id", [424242, 2**31, 10**30])
def test_an_unknown_execution_is_404(api, action, run_id):
    response = api.post(f"/executions/{run_id}/{action}")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found", "message": f"No execution with id {run_id}."}


@pytest.mark.parametrize("status", sorted(RETRYABLE))
def test_retry_queues_a_new_manual_run_linked_to_the_old_one(app, api, redis_client, status):
    task_id = make_task(app)
    old_id = add_run(app, task_id, status)
    response = api.post(f"/executions/{old_id}/retry")
    assert response.status_code == 202, response.get_json()
    new = response.get_json()
    assert new["id"] != old_id
    assert (new["retry_of"], new["trigger"], new["status"], new["task_id"]) == (old_id, "manual", "queued", task_id)
    assert (new["model"], new["worker"], new["started_at"]) == ("fake-model", None, None)
    assert rows(app, task_id) == [(old_id, status, None, "scheduled"), (new["id"], "queued", old_id, "manual")]
    # Handed to a worker exactly as Run now hands its runs.
    assert queued_messages(redis_client) == [
        ("promptbeat.execute_task", [task_id],
         {"trigger": "manual", "execution_id": new["id"], "allow_overlap": False}),
    ]


@pytest.mark.parametrize("status", NOT_RETRYABLE)
def test_retry_of_a_run_that_did_not_fail_is_409_and_queues_nothing(app, api, redis_client, status):
    task_id = make_task(app)
    run_id = add_run(app, task_id, status)
    response = api.post(f"/executions/{run_id}/retry")
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "conflict" and "only a failed, lost or cancelled run" in body["message"]
    assert rows(app, task_id) == [(run_id, status, None, "scheduled")]
    assert queued_messages(redis_client) == []


def test_cancel_then_retry_from_the_api(app, api, redis_client):
    task_id = make_task(app)
    run_id = api.post(f"/tasks/{task_id}/run").get_json()["execution"]["id"]
    api.post(f"/executions/{run_id}/cancel")
    retry = api.post(f"/executions/{run_id}/retry").get_json()
    assert retry["retry_of"] == run_id
    listed = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
    assert [(e["id"], e["status"], e["retry_of"]) for e in listed] == [
        (retry["id"], "queued", run_id), (run_id, "cancelled", None)]


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_a_viewer_token_may_neither_cancel_nor_retry(app, client, action):
    token = issue_api_token(app, VIEWER, VIEWER_PASSWORD, role="viewer")
    task_id = make_task(app)
    # A run the action would really change, had the viewer been let through.
    run_id = add_run(app, task_id, RunStatus.QUEUED if action == "cancel" else RunStatus.FAILED)
    before = rows(app, task_id)
    response = client.post(f"/api/executions/{run_id}/{action}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"
    assert rows(app, task_id) == before


def test_cancelling_a_running_run_frees_the_overlap_lock_it_holds(app, api, redis_client):
    task_id = make_task(app)
    run_id = add_run(app, task_id, RunStatus.RUNNING)
    settings = app.config["PROMPTBEAT"]
    key = overlap.lock_key(settings, task_id)
    redis_client.set(key, f"{run_id}:token")
    api.post(f"/executions/{run_id}/cancel")
    # Its retry would otherwise be skipped as "still running" until the old worker lets go.
    assert redis_client.get(key) is None


def test_cancelling_leaves_another_runs_overlap_lock_alone(app, api, redis_client):
    task_id = make_task(app)
    queued = add_run(app, task_id, RunStatus.QUEUED)
    key = overlap.lock_key(app.config["PROMPTBEAT"], task_id)
    redis_client.set(key, f"{queued + 1000}:token")
    api.post(f"/executions/{queued}/cancel")
    assert redis_client.get(key) == f"{queued + 1000}:token"


# --- a worker meeting a cancelled run ----------------------------------------------------------------------------

def test_the_claim_refuses_a_cancelled_run(app, api):
    task_id = make_task(app)
    run_id = api.post(f"/tasks/{task_id}/run").get_json()["execution"]["id"]
    api.post(f"/executions/{run_id}/cancel")
    now = utcnow()
    start = Start(model="fake-model", started_at=now, deadline_at=now + timedelta(minutes=5), worker="w@h",
                  prompt="Summarise")
    with app.app_context():
        assert store.claim(run_id, start) is False
    run = reload(app, run_id)
    assert (run.status, run.started_at, run.worker) == (RunStatus.CANCELLED, None, None)


@pytest.mark.slow
def test_a_worker_does_not_run_a_run_cancelled_while_queued(app, api, redis_client, role_environ, fake_llm,
                                                            tmp_path):
    task_id = make_task(app)
    cancelled = api.post(f"/tasks/{task_id}/run").get_json()["execution"]["id"]
    assert api.post(f"/executions/{cancelled}/cancel").status_code == 202
    # A second run queued behind it shows the worker took the queue.
    ran = api.post(f"/tasks/{task_id}/run", json={"allow_overlap": True}).get_json()["execution"]["id"]
    fake_llm.reset()
    worker = start_worker(role_env(role_environ), tmp_path / "worker.log")
    try:
        wait_for(lambda: reload(app, ran).status == RunStatus.SUCCESS, 30, "the run queued behind the cancelled one")
        # Both messages taken and acknowledged: the cancelled run's message has been handled too.
        wait_for(lambda: not redis_client.llen("promptbeat") and not redis_client.hlen("unacked"), 30,
                 "the queue to drain")
    finally:
        worker.stop()
    run = reload(app, cancelled)
    assert (run.status, run.started_at, run.worker, run.output) == (RunStatus.CANCELLED, None, None, None)
    assert len(fake_llm.requests) == 1


# --- the task page -----------------------------------------------------------------------------------------------

def sign_in(client, email="admin@example.com", password="correct horse battery"):
    page = client.get("/login").get_data(as_text=True)
    assert client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": csrf_token(page)}).status_code == 302


def runs_table(page):
    """{run id: (the Cancel form's action or None, the Retry form's action or None)} from the task page."""
    found = {}
    for run_id, row in re.findall(r'<tr class="run" id="run-(\d+)"(.*?)</tr>', page, re.S):
        cancel = re.search(r'action="([^"]*/cancel)"', row)
        retry = re.search(r'action="([^"]*/retry)"', row)
        found[int(run_id)] = (cancel and cancel.group(1), retry and retry.group(1))
    return found


def test_admins_see_cancel_on_live_runs_and_retry_on_failed_ones(app, signed_in):
    task_id = make_task(app)
    ids = {status: add_run(app, task_id, status) for status in RunStatus}
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    table = runs_table(page)
    base = f"/tasks/{task_id}/runs"
    for status, run_id in ids.items():
        cancel = f"{base}/{run_id}/cancel" if status in CANCELLABLE else None
        retry = f"{base}/{run_id}/retry" if status in RETRYABLE else None
        assert table[run_id] == (cancel, retry), status
    assert f'aria-label="Cancel run #{ids[RunStatus.RUNNING]}"' in page


def test_viewers_see_no_cancel_or_retry_and_their_posts_are_refused(app, client):
    issue_api_token(app, VIEWER, VIEWER_PASSWORD, role="viewer")
    task_id = make_task(app)
    queued, failed = add_run(app, task_id, RunStatus.QUEUED), add_run(app, task_id, RunStatus.FAILED)
    sign_in(client, VIEWER, VIEWER_PASSWORD)
    page = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert runs_table(page) == {queued: (None, None), failed: (None, None)}
    assert ">Cancel<" not in page and ">Retry<" not in page
    token = csrf_token(client.get("/account").get_data(as_text=True))
    before = rows(app, task_id)
    assert client.post(f"/tasks/{task_id}/runs/{queued}/cancel", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/tasks/{task_id}/runs/{failed}/retry", data={"csrf_token": token}).status_code == 403
    assert rows(app, task_id) == before


def test_cancel_from_the_page_changes_the_status_and_says_so(app, signed_in):
    task_id = make_task(app)
    run_id = add_run(app, task_id, RunStatus.RUNNING)
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    action = runs_table(page)[run_id][0]
    response = signed_in.post(action, data={"csrf_token": csrf_token(page), "next": f"/tasks/{task_id}?page=1"})
    assert response.status_code == 302 and response.headers["Location"] == f"/tasks/{task_id}?page=1"
    after = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Run #{run_id} cancelled." in after
    assert f'id="run-{run_id}" data-status="cancelled"' in after
    # A cancelled run offers Retry in place of Cancel.
    assert runs_table(after)[run_id] == (None, f"/tasks/{task_id}/runs/{run_id}/retry")


def test_retry_from_the_page_queues_a_linked_run(app, signed_in, redis_client):
    task_id = make_task(app)
    run_id = add_run(app, task_id, RunStatus.FAILED)
    page = signed_in.get(f"/tasks/{task_id}").get_data(as_text=True)
    after = signed_in.post(runs_table(page)[run_id][1], data={"csrf_token": csrf_token(page)},
                           follow_redirects=True).get_data(as_text=True)
    (new_id, _, retry_of, trigger), = [row for row in rows(app, task_id) if row[0] != run_id]
    assert (retry_of, trigger) == (run_id, "manual")
    assert f"Run #{new_id} queued to retry run #{run_id}." in after
    assert f'<a class="retry-of" href="#run-{run_id}">retries run #{run_id}</a>' in after
    assert [kwargs["execution_id"] for _, _, kwargs in queued_messages(redis_client)] == [new_id]


def test_a_refused_action_on_the_page_flashes_why_and_changes_nothing(app, signed_in):
    task_id = make_task(app)
    done = add_run(app, task_id, RunStatus.SUCCESS)
    token = csrf_token(signed_in.get(f"/tasks/{task_id}").get_data(as_text=True))
    cancelled = signed_in.post(f"/tasks/{task_id}/runs/{done}/cancel", data={"csrf_token": token},
                               follow_redirects=True).get_data(as_text=True)
    assert f"Run #{done} has already ended (success); it was not cancelled." in cancelled
    retried = signed_in.post(f"/tasks/{task_id}/runs/{done}/retry", data={"csrf_token": token},
                             follow_redirects=True).get_data(as_text=True)
    assert f"Only a failed, lost or cancelled run can be retried; run #{done} is success." in retried
    assert rows(app, task_id) == [(done, "success", None, "scheduled")]


def test_a_run_of_another_task_is_404_on_the_page(app, signed_in):
    task_id, other = make_task(app), make_task(app)
    run_id = add_run(app, other, RunStatus.QUEUED)
    token = csrf_token(signed_in.get(f"/tasks/{task_id}").get_data(as_text=True))
    assert signed_in.post(f"/tasks/{task_id}/runs/{run_id}/cancel", data={"csrf_token": token}).status_code == 404
    assert signed_in.post(f"/tasks/{task_id}/runs/{2**31}/retry", data={"csrf_token": token}).status_code == 404
    assert rows(app, other) == [(run_id, "queued", None, "scheduled")]


def test_the_controls_read_in_chinese(app, signed_in):
    task_id = make_task(app)
    failed = add_run(app, task_id, RunStatus.FAILED)
    running = add_run(app, task_id, RunStatus.RUNNING)
    chinese = {"Accept-Language": "zh-CN"}
    page = signed_in.get(f"/tasks/{task_id}", headers=chinese).get_data(as_text=True)
    assert ">重试<" in page and ">取消<" in page and ">Retry<" not in page
    after = signed_in.post(f"/tasks/{task_id}/runs/{running}/cancel", headers=chinese, follow_redirects=True,
                           data={"csrf_token": csrf_token(page)}).get_data(as_text=True)
    assert f"运行 #{running} 已取消。" in after and "已取消" in after
    after = signed_in.post(f"/tasks/{task_id}/runs/{failed}/retry", headers=chinese, follow_redirects=True,
                           data={"csrf_token": csrf_token(page)}).get_data(as_text=True)
    assert f"用于重试运行 #{failed}" in after and f"重试运行 #{failed}</a>" in after
