"""The pages: task list, task detail with its runs, the task form, and one-click actions."""
from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import login_required

from promptbeat import schedules, service
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from promptbeat.validation import TaskInputError
from web.forms import TaskForm
from web.presenters import latest_executions, next_run, schedule_preview

bp = Blueprint("tasks", __name__)
RUNS_PER_PAGE = 50


@bp.before_request
@login_required
def require_login():
    """Every page here needs a signed-in user."""


def _task_or_404(task_id):
    return db.session.get(Task, task_id) or abort(404)


def _settings():
    return current_app.config["PROMPTBEAT"]


@bp.post("/tasks/preview")
def preview():
    """The form's live preview: next runs and words, from the same code beat uses."""
    try:
        return jsonify(schedule_preview(request.get_json(silent=True) or request.form.to_dict(), _settings()))
    except TaskInputError as exc:
        return jsonify(error="validation_failed", fields=exc.errors), 422


@bp.get("/")
def index():
    tasks = db.session.execute(db.select(Task).order_by(Task.name, Task.id)).scalars().all()
    return render_template("tasks/list.html", tasks=tasks, last=latest_executions([t.id for t in tasks]))


@bp.route("/tasks/new", methods=["GET", "POST"])
def create():
    form = TaskForm()
    if not form.is_submitted():
        form.model.data = _settings().default_model
    if form.validate_on_submit():
        try:
            task = service.create_task(form.input_data())
        except TaskInputError as exc:
            form.attach_errors(exc.errors)
        else:
            flash(_saved_message(task, "created"), "success")
            return redirect(url_for("tasks.detail", task_id=task.id))
    return render_template("tasks/form.html", form=form, task=None), 200 if not form.errors else 422


@bp.route("/tasks/<int:task_id>/edit", methods=["GET", "POST"])
def edit(task_id):
    task = _task_or_404(task_id)
    form = TaskForm.for_task(task)
    if form.validate_on_submit():
        try:
            service.update_task(task, form.input_data())
        except TaskInputError as exc:
            db.session.rollback()
            form.attach_errors(exc.errors)
        else:
            flash(_saved_message(task, "saved"), "success")
            return redirect(url_for("tasks.detail", task_id=task.id))
    return render_template("tasks/form.html", form=form, task=task), 200 if not form.errors else 422


@bp.get("/tasks/<int:task_id>")
def detail(task_id):
    task = _task_or_404(task_id)
    page = max(request.args.get("page", 1, type=int), 1)
    query = db.select(Execution).filter_by(task_id=task.id).order_by(Execution.id.desc())
    runs = db.paginate(query, page=page, per_page=RUNS_PER_PAGE, error_out=False)
    upcoming = schedules.next_runs(task, 5) if task.enabled else []
    return render_template("tasks/detail.html", task=task, runs=runs, upcoming=upcoming)


@bp.post("/tasks/<int:task_id>/enable")
def enable(task_id):
    task = service.set_enabled(_task_or_404(task_id), True)
    flash(_saved_message(task, "enabled"), "success")
    return _back(task)


@bp.post("/tasks/<int:task_id>/disable")
def disable(task_id):
    task = service.set_enabled(_task_or_404(task_id), False, note=(request.form.get("note") or "").strip() or None)
    flash(f"“{task.name}” disabled; it will not run until you enable it.", "success")
    return _back(task)


@bp.post("/tasks/<int:task_id>/run")
def run(task_id):
    task = _task_or_404(task_id)
    service.run_now(task)
    flash(f"“{task.name}” queued to run now.", "success")
    return _back(task)


@bp.post("/tasks/<int:task_id>/delete")
def delete(task_id):
    task = _task_or_404(task_id)
    name = task.name
    service.delete_task(task)
    flash(f"“{name}” deleted.", "success")
    return redirect(url_for("tasks.index"))


def _back(task):
    target = request.form.get("next")
    if target == "list":
        return redirect(url_for("tasks.index"))
    return redirect(url_for("tasks.detail", task_id=task.id))


def _saved_message(task, verb):
    if task.enabled and task.schedule_type == "interval":
        return f"“{task.name}” {verb}; its first run has started."
    if task.enabled:
        words = schedules.describe(task)
        # Lower only the first letter: zone names and weekdays keep their case.
        return f"“{task.name}” {verb}; next run {words[:1].lower()}{words[1:]}."
    return f"“{task.name}” {verb}; it is disabled and will not run."


def register_filters(app):
    """Template helpers for times and schedules."""
    app.jinja_env.filters["describe"] = schedules.describe
    app.jinja_env.globals["next_run"] = next_run
    app.jinja_env.filters["when"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"
