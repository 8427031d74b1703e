"""The JSON API under /api, authenticated with bearer tokens; it behaves as the forms do."""
from datetime import timedelta
from importlib import metadata

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from sqlalchemy import func
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from promptbeat import service
from promptbeat.llm import connections
from promptbeat.extensions import db
from promptbeat.models import GLOBAL_SCOPE, Channel, Connection, Execution, Task, utcnow
from promptbeat.notify import channels, dispatch, ledger
from promptbeat.outputs import trial
from promptbeat.runs import budget, export, search
from promptbeat.validation import TaskInputError, task_values, validate_schedule, validate_task
from promptbeat.runs.states import RunStatus
from web import api_models as models
from web.api_spec import MAX_BODY_BYTES, ApiError, document, operation
from web.auth import token_required
from web.presenters import (budget_json, execution_json, latest_executions, preview_json, schedule_preview,
                            task_json)
from web.security import admin_required, audit

bp = Blueprint("api", __name__, url_prefix="/api")
TASK = "/tasks/<int:task_id>"
EXECUTION = "/executions/<int:execution_id>"
CONNECTION = "/connections/<int:connection_id>"
CHANNEL = "/channels/<int:channel_id>"


@bp.before_request
def limit_body_size():
    """Bodies over the limit are refused (413) before they are read; the pages keep Flask's own limits."""
    request.max_content_length = MAX_BODY_BYTES


@bp.errorhandler(ApiError)
def api_error(exc):
    body = {"error": exc.error, "message": exc.message}
    if exc.fields:
        body["fields"] = exc.fields
    return jsonify(body), exc.status


@bp.errorhandler(TaskInputError)
def invalid_input(exc):
    return jsonify(error="validation_failed", message="Some fields are invalid.", fields=exc.errors), 422


@bp.errorhandler(connections.ConnectionInputError)
def invalid_connection(exc):
    return jsonify(error="validation_failed", message="Some fields are invalid.", fields=exc.errors), 422


@bp.errorhandler(channels.ChannelInputError)
def invalid_channel(exc):
    return jsonify(error="validation_failed", message="Some fields are invalid.", fields=exc.errors), 422


@bp.errorhandler(RequestEntityTooLarge)
def too_large(exc):
    return jsonify(error="request_entity_too_large",
                   message=f"The request body is larger than {MAX_BODY_BYTES} bytes."), 413


@bp.errorhandler(HTTPException)
def http_error(exc):
    return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code


def _settings():
    return current_app.config["PROMPTBEAT"]


def _task_or_404(task_id):
    # Ids beyond the column's range cannot exist; asking the database would be an overflow error.
    task = db.session.get(Task, task_id) if task_id <= models.MAX_ID else None
    if task is None:
        raise ApiError(404, "not_found", f"No task with id {task_id}.")
    return task


def _one(task, status=200):
    body = task_json(task, latest_executions([task.id]).get(task.id), _spend([task]).get(task.id))
    return jsonify(body), status


def _spend(tasks):
    """Spend of the tasks (and the global one) in their current periods, in one query."""
    return budget.usage(tasks, _settings(), utcnow())


def _check_task_input(data):
    task_id = request.view_args.get("task_id")
    validate_task(data, _settings(), base=task_values(_task_or_404(task_id)) if task_id else None)


def _check_connection_input(data):
    connection_id = request.view_args.get("connection_id")
    connections.connection_values(data, _connection_or_404(connection_id) if connection_id else None)


@bp.get("")
def index():
    """Where to start: the version and links to the API's reference; public, like the document."""
    return jsonify(name="promptbeat", version=metadata.version("promptbeat"),
                   docs=url_for("api_docs.page", _external=True), openapi=url_for("api.openapi", _external=True))


@bp.get("/openapi.json")
def openapi():
    """The API's contract, derived from web.api_models; public, like any API reference."""
    return jsonify(document())


@bp.get("/tasks")
@token_required
@operation("listTasks", {"HTTP_200": models.TaskList}, tags=["tasks"])
def list_tasks():
    """List tasks"""
    tasks = db.session.execute(db.select(Task).order_by(Task.id)).scalars().all()
    last = latest_executions([t.id for t in tasks])
    spend = _spend(tasks)
    return jsonify(tasks=[task_json(t, last.get(t.id), spend.get(t.id)) for t in tasks])


@bp.get("/budget")
@token_required
@operation("getBudget", {"HTTP_200": models.Budget}, tags=["tasks"])
def get_budget():
    """The global budgets and the spend of all tasks against them"""
    return jsonify(budget_json(_settings(), _spend([]).get(GLOBAL_SCOPE)))


@bp.post("/tasks")
@token_required
@admin_required
@operation("createTask", {"HTTP_201": models.Task}, body=models.TaskInput, admin=True,
           also_check=_check_task_input, tags=["tasks"])
def create_task(json: models.TaskInput):
    """Create a task; an enabled interval task runs at once"""
    task = service.create_task(json.model_dump(mode="json", exclude_unset=True))
    audit("task_created", task_id=task.id, name=task.name)
    response, status = _one(task, 201)
    response.headers["Location"] = url_for("api.get_task", task_id=task.id)
    return response, status


@bp.post("/tasks/test")
@token_required
@admin_required
@operation("testTask", {"HTTP_200": models.TaskTrial}, body=models.TaskInput, admin=True,
           also_check=_check_task_input, tags=["tasks"])
def test_task(json: models.TaskInput):
    """Test run: render the prompt, call the model once and check the answer against the schema; saves nothing"""
    data = json.model_dump(mode="json", exclude_unset=True)
    result = trial.run(data, _settings())
    audit("task_tested", connection_id=data.get("connection_id"), model=data.get("model"), ok=result.error is None)
    return jsonify(result.json())


@bp.get(TASK)
@token_required
@operation("getTask", {"HTTP_200": models.Task}, item=True, tags=["tasks"])
def get_task(task_id):
    """Read a task"""
    return _one(_task_or_404(task_id))


@bp.patch(TASK)
@token_required
@admin_required
@operation("updateTask", {"HTTP_200": models.Task}, body=models.TaskInput, admin=True, item=True,
           also_check=_check_task_input, tags=["tasks"])
def update_task(task_id, json: models.TaskInput):
    """Update a task (partial); a rejected update changes nothing"""
    task = _task_or_404(task_id)
    data = json.model_dump(mode="json", exclude_unset=True)
    service.update_task(task, data)
    audit("task_updated", task_id=task.id, fields=sorted(data))
    return _one(task)


@bp.delete(TASK)
@token_required
@admin_required
@operation("deleteTask", {"HTTP_204": None}, admin=True, item=True, tags=["tasks"])
def delete_task(task_id):
    """Delete a task and its runs"""
    service.delete_task(_task_or_404(task_id))
    audit("task_deleted", task_id=task_id)
    return "", 204


@bp.post(f"{TASK}/enable")
@token_required
@admin_required
@operation("enableTask", {"HTTP_200": models.Task}, admin=True, item=True, tags=["tasks"])
def enable_task(task_id):
    """Enable; an interval task runs at once"""
    task = service.set_enabled(_task_or_404(task_id), True)
    audit("task_enabled", task_id=task_id)
    return _one(task)


@bp.post(f"{TASK}/disable")
@token_required
@admin_required
@operation("disableTask", {"HTTP_200": models.Task}, body=models.PauseInput, optional_body=True, admin=True,
           item=True, tags=["tasks"])
def disable_task(task_id, json: models.PauseInput):
    """Disable (pause), with an optional note; the body may be left out"""
    task = service.set_enabled(_task_or_404(task_id), False, note=json.note)
    audit("task_disabled", task_id=task_id)
    return _one(task)


@bp.post(f"{TASK}/pause")
@token_required
@admin_required
@operation("pauseTask", {"HTTP_200": models.Task}, body=models.PauseInput, optional_body=True, admin=True,
           item=True, tags=["tasks"])
def pause_task(task_id, json: models.PauseInput):
    """Pause, with an optional note shown on the task; the body may be left out"""
    task = service.set_enabled(_task_or_404(task_id), False, note=json.note)
    audit("task_paused", task_id=task_id)
    return _one(task)


@bp.post(f"{TASK}/resume")
@token_required
@admin_required
@operation("resumeTask", {"HTTP_200": models.Task}, admin=True, item=True, tags=["tasks"])
def resume_task(task_id):
    """Resume; runs missed while paused are not fired"""
    task = service.set_enabled(_task_or_404(task_id), True)
    audit("task_resumed", task_id=task_id)
    return _one(task)


@bp.post(f"{TASK}/run")
@token_required
@admin_required
@operation("runTask", {"HTTP_202": models.RunQueued}, body=models.RunInput, optional_body=True, admin=True,
           item=True, tags=["tasks"])
def run_task(task_id, json: models.RunInput):
    """Run now, even when paused; honours the overlap policy unless allow_overlap; the body may be left out"""
    execution = service.run_now(_task_or_404(task_id), allow_overlap=json.allow_overlap)
    audit("task_run_now", task_id=task_id, execution_id=execution.id, allow_overlap=json.allow_overlap)
    return jsonify(execution=execution_json(execution)), 202


@bp.post("/schedule/preview")
@token_required
@operation("previewSchedule", {"HTTP_200": models.SchedulePreview}, body=models.ScheduleInput,
           also_check=lambda data: validate_schedule(data, _settings()), tags=["tasks"])
def preview_schedule(json: models.ScheduleInput):
    """The next five runs and the words for an unsaved schedule (read-only; viewers may call it)"""
    data = json.model_dump(mode="json", exclude_unset=True)
    return jsonify(preview_json(schedule_preview(data, _settings())))


@bp.get(f"{TASK}/executions")
@token_required
@operation("listExecutions", {"HTTP_200": models.ExecutionList}, query=models.PageQuery, item=True,
           tags=["tasks"])
def list_executions(task_id, query: models.PageQuery):
    """Runs, newest first"""
    _task_or_404(task_id)
    rows = db.select(Execution).filter_by(task_id=task_id).order_by(Execution.id.desc()).limit(query.limit)
    executions = db.session.execute(rows).scalars().all()
    deliveries = ledger.summaries([e.id for e in executions])
    return jsonify(executions=[execution_json(e, deliveries=deliveries[e.id]) for e in executions])


def _execution_or_404(execution_id):
    execution = db.session.get(Execution, execution_id) if execution_id <= models.MAX_ID else None
    if execution is None:
        raise ApiError(404, "not_found", f"No execution with id {execution_id}.")
    return execution


@bp.post(f"{EXECUTION}/cancel")
@token_required
@admin_required
@operation("cancelExecution", {"HTTP_202": models.Execution}, admin=True, item=True, conflict=True,
           tags=["executions"])
def cancel_execution(execution_id):
    """Cancel a queued, waiting, running or submitted run: it ends cancelled and its model call is abandoned"""
    execution = _execution_or_404(execution_id)
    if not service.cancel_run(execution):
        db.session.refresh(execution)
        raise ApiError(409, "conflict", f"Execution {execution_id} has already ended ({execution.status}); "
                                        "only a queued, waiting, running or submitted run can be cancelled.")
    audit("run_cancelled", task_id=execution.task_id, execution_id=execution_id)
    db.session.refresh(execution)
    return jsonify(execution_json(execution)), 202


@bp.post(f"{EXECUTION}/retry")
@token_required
@admin_required
@operation("retryExecution", {"HTTP_202": models.Execution}, admin=True, item=True, conflict=True,
           tags=["executions"])
def retry_execution(execution_id):
    """Retry a failed, lost or cancelled run: a new manual run of its task, with retry_of naming this one"""
    execution = _execution_or_404(execution_id)
    retry = service.retry_run(execution)
    if retry is None:
        raise ApiError(409, "conflict", f"Execution {execution_id} is {execution.status}; "
                                        "only a failed, lost or cancelled run can be retried.")
    audit("run_retried", task_id=execution.task_id, execution_id=execution_id, retry_id=retry.id)
    return jsonify(execution_json(retry)), 202


def _usage_columns():
    return (func.count(Execution.id), func.sum(Execution.prompt_tokens), func.sum(Execution.completion_tokens),
            func.sum(Execution.total_tokens), func.sum(Execution.cost_usd))


def _usage_json(row):
    runs, prompt, completion, total, cost = row
    return {"runs": runs, "prompt_tokens": prompt or 0, "completion_tokens": completion or 0,
            "total_tokens": total or 0, "cost_usd": round(cost, 8) if cost is not None else 0.0}


@bp.get("/usage")
@token_required
@operation("usage", {"HTTP_200": models.UsageReport}, query=models.DaysQuery, tags=["usage"])
def usage(query: models.DaysQuery):
    """Tokens and estimated cost per task and per UTC day over the last `days` days"""
    recent = Execution.created_at >= utcnow() - timedelta(days=query.days)
    day = func.date(Execution.created_at)
    per_day = db.session.execute(db.select(day, *_usage_columns()).where(recent).group_by(day).order_by(day)).all()
    per_task = db.session.execute(
        db.select(Execution.task_id, *_usage_columns()).where(recent).group_by(Execution.task_id)
        .order_by(Execution.task_id)).all()
    total = db.session.execute(db.select(*_usage_columns()).where(recent)).one()
    return jsonify(
        total=_usage_json(total),
        per_day=[{"day": str(row[0]), **_usage_json(row[1:])} for row in per_day],
        per_task=[{"task_id": row[0], **_usage_json(row[1:])} for row in per_task],
    )


@bp.get(f"{TASK}/usage")
@token_required
@operation("taskUsage", {"HTTP_200": models.TaskUsageReport}, query=models.DaysQuery, item=True, tags=["usage"])
def task_usage(task_id, query: models.DaysQuery):
    """A task's tokens and estimated cost per UTC day"""
    _task_or_404(task_id)
    day = func.date(Execution.created_at)
    where = (Execution.task_id == task_id, Execution.created_at >= utcnow() - timedelta(days=query.days))
    per_day = db.session.execute(db.select(day, *_usage_columns()).where(*where).group_by(day).order_by(day)).all()
    total = db.session.execute(db.select(*_usage_columns()).where(*where)).one()
    return jsonify(task_id=task_id, total=_usage_json(total),
                   per_day=[{"day": str(row[0]), **_usage_json(row[1:])} for row in per_day])


@bp.get("/runs")
@token_required
@operation("listRuns", {"HTTP_200": models.RunList}, query=models.RunsQuery, tags=["executions"])
def list_runs(query: models.RunsQuery):
    """Runs of every task, newest first, filtered and searched; one page per cursor, as JSON or CSV"""
    try:
        filters = search.parse_filters(request.args)
        before = _cursors().load(query.cursor) if query.cursor else None
    except search.RunFilterError as exc:
        raise ApiError(400, "bad_parameter", str(exc), {exc.field: exc.message}) from None
    page = search.run_page(db.session, filters, before, query.limit)
    next_cursor = _cursors().dump(page.next_before) if page.next_before else None
    if query.format == "csv":
        headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
        return Response("".join(export.csv_lines(page.rows)), mimetype="text/csv", headers=headers)
    return jsonify(runs=[export.record_json(row) for row in page.rows], next_cursor=next_cursor)


def _cursors():
    return search.Cursors(_settings().secret_key)


def _connection_or_404(connection_id):
    connection = db.session.get(Connection, connection_id) if connection_id <= models.MAX_ID else None
    if connection is None:
        raise ApiError(404, "not_found", f"No connection with id {connection_id}.")
    return connection


@bp.get("/connections")
@token_required
@operation("listConnections", {"HTTP_200": models.ConnectionList}, tags=["connections"])
def list_connections():
    """List connections (never their keys)"""
    rows = db.session.execute(db.select(Connection).order_by(Connection.name)).scalars()
    return jsonify(connections=[connections.connection_json(c) for c in rows])


@bp.post("/connections")
@token_required
@admin_required
@operation("createConnection", {"HTTP_201": models.Connection}, body=models.ConnectionInput, admin=True,
           also_check=_check_connection_input, tags=["connections"])
def create_connection(json: models.ConnectionInput):
    """Add an OpenAI-compatible endpoint"""
    connection = connections.save_connection(json.model_dump(mode="json", exclude_unset=True))
    audit("connection_created", connection_id=connection.id, name=connection.name)
    return jsonify(connections.connection_json(connection)), 201


@bp.get(CONNECTION)
@token_required
@operation("getConnection", {"HTTP_200": models.Connection}, item=True, tags=["connections"])
def get_connection(connection_id):
    """Read a connection"""
    return jsonify(connections.connection_json(_connection_or_404(connection_id)))


@bp.patch(CONNECTION)
@token_required
@admin_required
@operation("updateConnection", {"HTTP_200": models.Connection}, body=models.ConnectionInput, admin=True,
           item=True, also_check=_check_connection_input, tags=["connections"])
def update_connection(connection_id, json: models.ConnectionInput):
    """Update a connection (partial)"""
    connection = _connection_or_404(connection_id)
    data = json.model_dump(mode="json", exclude_unset=True)
    try:
        saved = connections.save_connection(data, connection)
    except connections.ConnectionInputError:
        db.session.rollback()
        raise
    audit("connection_updated", connection_id=connection_id, fields=sorted(data))
    return jsonify(connections.connection_json(saved))


@bp.delete(CONNECTION)
@token_required
@admin_required
@operation("deleteConnection", {"HTTP_204": None}, admin=True, item=True, tags=["connections"])
def delete_connection(connection_id):
    """Delete; its tasks use the default endpoint"""
    db.session.delete(_connection_or_404(connection_id))
    db.session.commit()
    audit("connection_deleted", connection_id=connection_id)
    return "", 204


@bp.post(f"{CONNECTION}/test")
@token_required
@admin_required
@operation("testConnection", {"HTTP_200": models.ConnectionCheck}, admin=True, item=True, tags=["connections"])
def test_connection(connection_id):
    """List the endpoint's models once, to check it answers"""
    connection = _connection_or_404(connection_id)
    result = connections.test_connection(connection)
    # Audited: the test sends the stored key to the connection's URL.
    audit("connection_tested", connection_id=connection_id, base_url=connection.base_url, ok=result["ok"])
    return jsonify(result)


@bp.post(f"{EXECUTION}/resend")
@token_required
@admin_required
@operation("resendExecution", {"HTTP_202": models.Resent}, admin=True, item=True, conflict=True,
           tags=["executions"])
def resend_execution(execution_id):
    """Deliver a finished run again to each of its task's channels now, whatever its notify rules"""
    execution = _execution_or_404(execution_id)
    if not RunStatus(execution.status).is_final:
        raise ApiError(409, "conflict", f"Execution {execution_id} is {execution.status}; only a finished run can "
                                        "be sent again.")
    if not execution.task.channels:
        raise ApiError(409, "conflict", f"The task of execution {execution_id} has no channels to deliver to.")
    channel_ids = dispatch.resend(execution)
    audit("run_resent", task_id=execution.task_id, execution_id=execution_id, channel_ids=channel_ids)
    return jsonify(execution_id=execution_id, channel_ids=channel_ids), 202


def _channel_or_404(channel_id):
    channel = db.session.get(Channel, channel_id) if channel_id <= models.MAX_ID else None
    if channel is None:
        raise ApiError(404, "not_found", f"No channel with id {channel_id}.")
    return channel


def _check_channel_input(data):
    channel_id = request.view_args.get("channel_id")
    channels.channel_values(data, _channel_or_404(channel_id) if channel_id else None)


@bp.get("/channels")
@token_required
@operation("listChannels", {"HTTP_200": models.ChannelList}, tags=["channels"])
def list_channels():
    """List channels (never their secrets)"""
    rows = db.session.execute(db.select(Channel).order_by(Channel.name)).scalars()
    return jsonify(channels=[channels.channel_json(c) for c in rows])


@bp.post("/channels")
@token_required
@admin_required
@operation("createChannel", {"HTTP_201": models.Channel}, body=models.ChannelInput, admin=True,
           also_check=_check_channel_input, tags=["channels"])
def create_channel(json: models.ChannelInput):
    """Add a webhook, Slack or email channel; a webhook's generated secret is in this answer only"""
    channel, revealed = channels.save_channel(json.model_dump(mode="json", exclude_unset=True))
    audit("channel_created", channel_id=channel.id, name=channel.name, kind=channel.kind)
    return jsonify(channels.channel_json(channel, revealed)), 201


@bp.get(CHANNEL)
@token_required
@operation("getChannel", {"HTTP_200": models.Channel}, item=True, tags=["channels"])
def get_channel(channel_id):
    """Read a channel"""
    return jsonify(channels.channel_json(_channel_or_404(channel_id)))


@bp.patch(CHANNEL)
@token_required
@admin_required
@operation("updateChannel", {"HTTP_200": models.Channel}, body=models.ChannelInput, admin=True, item=True,
           also_check=_check_channel_input, tags=["channels"])
def update_channel(channel_id, json: models.ChannelInput):
    """Update a channel (partial); "secret": "" makes a new secret, returned in this answer only"""
    channel = _channel_or_404(channel_id)
    data = json.model_dump(mode="json", exclude_unset=True)
    try:
        saved, revealed = channels.save_channel(data, channel)
    except channels.ChannelInputError:
        db.session.rollback()
        raise
    audit("channel_updated", channel_id=channel_id, fields=sorted(data))
    return jsonify(channels.channel_json(saved, revealed))


@bp.delete(CHANNEL)
@token_required
@admin_required
@operation("deleteChannel", {"HTTP_204": None}, admin=True, item=True, tags=["channels"])
def delete_channel(channel_id):
    """Delete; tasks stop delivering to it, and the ledger keeps its past deliveries under its name"""
    db.session.delete(_channel_or_404(channel_id))
    db.session.commit()
    audit("channel_deleted", channel_id=channel_id)
    return "", 204
