"""The JSON API under /api, authenticated with bearer tokens; it behaves as the forms do."""
from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from datetime import timedelta

from sqlalchemy import func

from promptbeat import connections, service
from promptbeat.extensions import db
from promptbeat.models import Connection, Execution, Task, utcnow
from promptbeat.validation import TaskInputError
from web.auth import token_required
from web.openapi import MAX_ID, openapi_document
from web.presenters import execution_json, latest_executions, preview_json, schedule_preview, task_json
from web.security import admin_required, audit

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_PAGE = 500


class ApiError(Exception):
    """An error answered as JSON with a status code."""

    def __init__(self, status, error, message, fields=None):
        super().__init__(message)
        self.status, self.error, self.message, self.fields = status, error, message, fields


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


@bp.errorhandler(HTTPException)
def http_error(exc):
    return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code


def _json_body():
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "malformed_json", "The request body must be a JSON object (Content-Type: application/json).")
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "The request body must be a JSON object, not a list or a value.")
    return data


def _task_or_404(task_id):
    # Ids beyond the column's range cannot exist; asking the database would be an overflow error.
    task = db.session.get(Task, task_id) if task_id <= MAX_ID else None
    if task is None:
        raise ApiError(404, "not_found", f"No task with id {task_id}.")
    return task


def _one(task, status=200):
    body = task_json(task, latest_executions([task.id]).get(task.id))
    return jsonify(body), status


@bp.get("/openapi.json")
def openapi():
    """The API's contract; public, like any API reference."""
    return jsonify(openapi_document())


@bp.get("/tasks")
@token_required
def list_tasks():
    tasks = db.session.execute(db.select(Task).order_by(Task.id)).scalars().all()
    last = latest_executions([t.id for t in tasks])
    return jsonify(tasks=[task_json(t, last.get(t.id)) for t in tasks])


@bp.post("/tasks")
@token_required
@admin_required
def create_task():
    task = service.create_task(_json_body())
    audit("task_created", task_id=task.id, name=task.name)
    response, status = _one(task, 201)
    response.headers["Location"] = url_for("api.get_task", task_id=task.id)
    return response, status


@bp.get("/tasks/<int:task_id>")
@token_required
def get_task(task_id):
    return _one(_task_or_404(task_id))


@bp.patch("/tasks/<int:task_id>")
@token_required
@admin_required
def update_task(task_id):
    task = _task_or_404(task_id)
    data = _json_body()
    service.update_task(task, data)
    audit("task_updated", task_id=task.id, fields=sorted(data))
    return _one(task)


@bp.delete("/tasks/<int:task_id>")
@token_required
@admin_required
def delete_task(task_id):
    service.delete_task(_task_or_404(task_id))
    audit("task_deleted", task_id=task_id)
    return "", 204


@bp.post("/tasks/<int:task_id>/enable")
@token_required
@admin_required
def enable_task(task_id):
    task = service.set_enabled(_task_or_404(task_id), True)
    audit("task_enabled", task_id=task_id)
    return _one(task)


@bp.post("/tasks/<int:task_id>/disable")
@bp.post("/tasks/<int:task_id>/pause")
@token_required
@admin_required
def disable_task(task_id):
    note = _optional_body().get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError(422, "validation_failed", "Some fields are invalid.", {"note": "Must be text."})
    task = service.set_enabled(_task_or_404(task_id), False, note=note)
    audit("task_paused" if request.path.endswith("/pause") else "task_disabled", task_id=task_id)
    return _one(task)


@bp.post("/tasks/<int:task_id>/resume")
@token_required
@admin_required
def resume_task(task_id):
    task = service.set_enabled(_task_or_404(task_id), True)
    audit("task_resumed", task_id=task_id)
    return _one(task)


@bp.post("/tasks/<int:task_id>/run")
@token_required
@admin_required
def run_task(task_id):
    allow_overlap = _optional_body().get("allow_overlap", False)
    if not isinstance(allow_overlap, bool):
        raise ApiError(422, "validation_failed", "Some fields are invalid.", {"allow_overlap": "Must be true or false."})
    execution = service.run_now(_task_or_404(task_id), allow_overlap=allow_overlap)
    audit("task_run_now", task_id=task_id, execution_id=execution.id, allow_overlap=allow_overlap)
    return jsonify(execution=execution_json(execution)), 202


def _optional_body():
    return _json_body() if request.get_data() else {}


@bp.post("/schedule/preview")
@token_required
def preview_schedule():
    """Read-only, so viewers may use it too."""
    return jsonify(preview_json(schedule_preview(_json_body(), current_app.config["PROMPTBEAT"])))


@bp.get("/tasks/<int:task_id>/executions")
@token_required
def list_executions(task_id):
    _task_or_404(task_id)
    limit = request.args.get("limit", 50)
    try:
        limit = int(limit)
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError
    except ValueError:
        raise ApiError(400, "bad_parameter", f"limit must be a whole number from 1 to {MAX_PAGE}.") from None
    query = db.select(Execution).filter_by(task_id=task_id).order_by(Execution.id.desc()).limit(limit)
    return jsonify(executions=[execution_json(e) for e in db.session.execute(query).scalars()])


def _usage_columns():
    return (func.count(Execution.id), func.sum(Execution.prompt_tokens), func.sum(Execution.completion_tokens),
            func.sum(Execution.total_tokens), func.sum(Execution.cost_usd))


def _usage_json(row):
    runs, prompt, completion, total, cost = row
    return {"runs": runs, "prompt_tokens": prompt or 0, "completion_tokens": completion or 0,
            "total_tokens": total or 0, "cost_usd": round(cost, 8) if cost is not None else 0.0}


def _days():
    try:
        days = int(request.args.get("days", 30))
        if not 1 <= days <= 366:
            raise ValueError
    except ValueError:
        raise ApiError(400, "bad_parameter", "days must be a whole number from 1 to 366.") from None
    return days


@bp.get("/usage")
@token_required
def usage():
    """Tokens and estimated cost per task and per UTC day over the last `days` days."""
    since = utcnow() - timedelta(days=_days())
    recent = Execution.created_at >= since
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


@bp.get("/tasks/<int:task_id>/usage")
@token_required
def task_usage(task_id):
    _task_or_404(task_id)
    since = utcnow() - timedelta(days=_days())
    day = func.date(Execution.created_at)
    where = (Execution.task_id == task_id, Execution.created_at >= since)
    per_day = db.session.execute(db.select(day, *_usage_columns()).where(*where).group_by(day).order_by(day)).all()
    total = db.session.execute(db.select(*_usage_columns()).where(*where)).one()
    return jsonify(task_id=task_id, total=_usage_json(total),
                   per_day=[{"day": str(row[0]), **_usage_json(row[1:])} for row in per_day])


def _connection_or_404(connection_id):
    connection = db.session.get(Connection, connection_id) if connection_id <= MAX_ID else None
    if connection is None:
        raise ApiError(404, "not_found", f"No connection with id {connection_id}.")
    return connection


@bp.get("/connections")
@token_required
def list_connections():
    rows = db.session.execute(db.select(Connection).order_by(Connection.name)).scalars()
    return jsonify(connections=[connections.connection_json(c) for c in rows])


@bp.post("/connections")
@token_required
@admin_required
def create_connection():
    connection = connections.save_connection(_json_body())
    audit("connection_created", connection_id=connection.id, name=connection.name)
    return jsonify(connections.connection_json(connection)), 201


@bp.get("/connections/<int:connection_id>")
@token_required
def get_connection(connection_id):
    return jsonify(connections.connection_json(_connection_or_404(connection_id)))


@bp.patch("/connections/<int:connection_id>")
@token_required
@admin_required
def update_connection(connection_id):
    connection = _connection_or_404(connection_id)
    data = _json_body()
    try:
        saved = connections.save_connection(data, connection)
    except connections.ConnectionInputError:
        db.session.rollback()
        raise
    audit("connection_updated", connection_id=connection_id, fields=sorted(data))
    return jsonify(connections.connection_json(saved))


@bp.delete("/connections/<int:connection_id>")
@token_required
@admin_required
def delete_connection(connection_id):
    db.session.delete(_connection_or_404(connection_id))
    db.session.commit()
    audit("connection_deleted", connection_id=connection_id)
    return "", 204


@bp.post("/connections/<int:connection_id>/test")
@token_required
@admin_required
def test_connection(connection_id):
    return jsonify(connections.test_connection(_connection_or_404(connection_id)))
