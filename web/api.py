"""The JSON API under /api, authenticated with bearer tokens; it behaves as the forms do."""
from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from promptbeat import service
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from promptbeat.validation import TaskInputError
from web.auth import token_required
from web.presenters import execution_json, latest_executions, schedule_preview, task_json

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
    task = db.session.get(Task, task_id)
    if task is None:
        raise ApiError(404, "not_found", f"No task with id {task_id}.")
    return task


def _one(task, status=200):
    body = task_json(task, latest_executions([task.id]).get(task.id))
    return jsonify(body), status


@bp.get("/tasks")
@token_required
def list_tasks():
    tasks = db.session.execute(db.select(Task).order_by(Task.id)).scalars().all()
    last = latest_executions([t.id for t in tasks])
    return jsonify(tasks=[task_json(t, last.get(t.id)) for t in tasks])


@bp.post("/tasks")
@token_required
def create_task():
    task = service.create_task(_json_body())
    response, status = _one(task, 201)
    response.headers["Location"] = url_for("api.get_task", task_id=task.id)
    return response, status


@bp.get("/tasks/<int:task_id>")
@token_required
def get_task(task_id):
    return _one(_task_or_404(task_id))


@bp.patch("/tasks/<int:task_id>")
@token_required
def update_task(task_id):
    task = _task_or_404(task_id)
    data = _json_body()
    return _one(service.update_task(task, data))


@bp.delete("/tasks/<int:task_id>")
@token_required
def delete_task(task_id):
    service.delete_task(_task_or_404(task_id))
    return "", 204


@bp.post("/tasks/<int:task_id>/enable")
@token_required
def enable_task(task_id):
    return _one(service.set_enabled(_task_or_404(task_id), True))


@bp.post("/tasks/<int:task_id>/disable")
@bp.post("/tasks/<int:task_id>/pause")
@token_required
def disable_task(task_id):
    note = _optional_body().get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError(422, "validation_failed", "Some fields are invalid.", {"note": "Must be text."})
    return _one(service.set_enabled(_task_or_404(task_id), False, note=note))


@bp.post("/tasks/<int:task_id>/resume")
@token_required
def resume_task(task_id):
    return _one(service.set_enabled(_task_or_404(task_id), True))


@bp.post("/tasks/<int:task_id>/run")
@token_required
def run_task(task_id):
    allow_overlap = _optional_body().get("allow_overlap", False)
    if not isinstance(allow_overlap, bool):
        raise ApiError(422, "validation_failed", "Some fields are invalid.", {"allow_overlap": "Must be true or false."})
    execution = service.run_now(_task_or_404(task_id), allow_overlap=allow_overlap)
    return jsonify(execution=execution_json(execution)), 202


def _optional_body():
    return _json_body() if request.get_data() else {}


@bp.post("/schedule/preview")
@token_required
def preview_schedule():
    return jsonify(schedule_preview(_json_body(), current_app.config["PROMPTBEAT"]))


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
