"""The pages: dashboard, task detail with its runs, the task form, one-click actions, live fragments."""
import json

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _

from promptbeat import service
from promptbeat.notify import dispatch, ledger
from promptbeat.runs import budget, message_ids
from promptbeat.scheduling import schedules
from promptbeat.extensions import db
from promptbeat.models import GLOBAL_SCOPE, Execution, Task, utcnow
from promptbeat.outputs import changes, schema as output_schemas, trial
from promptbeat.runs.states import RETRYABLE, RunStatus, sources
from promptbeat.validation import TaskInputError
from web import dashboard
from web.charts import line_chart, sparkline
from web.forms import TaskForm
from web.api_models import MAX_ID
from web.i18n import status_words, translate_message
from web.presenters import (budget_parts, describe_schedule, model_choices, next_run, preview_json, schedule_preview,
                            schedule_problem)
from web.rendering import markdown_to_html
from web.security import admin_required, audit, safe_next
from web.run_history import task_endpoint
from web.times import viewer_zone

bp = Blueprint("tasks", __name__)
RUNS_PER_PAGE = 20
CHART_RUNS = 50
TIMELINE_RUNS = 20


def _task_or_404(task_id):
    return (task_id <= MAX_ID and db.session.get(Task, task_id)) or abort(404)


def _settings():
    return current_app.config["PROMPTBEAT"]


def _is_fragment():
    return request.headers.get("HX-Request") == "true"


@bp.get("/")
def index():
    try:
        filters = dashboard.Filters.from_args(request.args)
    except dashboard.InvalidFilter as exc:
        abort(400, description=_(exc.message))
    page = dashboard.task_page(filters)
    stats = dashboard.recent_runs([t.id for t in page.items])
    version = dashboard.signature(page.items, stats)
    if _is_fragment() and request.args.get("v") == version:
        return "", 204  # htmx keeps the table as it is
    # One query for the spend of the page's tasks and the global one, whatever the page's size.
    spend = budget.usage(page.items, _settings(), utcnow())
    template = "tasks/_table.html" if _is_fragment() else "tasks/list.html"
    return render_template(template, page=page, stats=stats, filters=filters, version=version, spend=spend,
                           settings=_settings(), global_scope=GLOBAL_SCOPE)


@bp.route("/tasks/new", methods=["GET", "POST"])
@admin_required
def create():
    form = TaskForm()
    if not form.is_submitted():
        form.model.data = _settings().default_model
        form.timezone.data = viewer_zone()
    if form.validate_on_submit():
        try:
            task = service.create_task(form.input_data())
        except TaskInputError as exc:
            form.attach_errors(exc.errors)
        else:
            audit("task_created", task_id=task.id, name=task.name)
            flash(_saved_message(task, "created"), "success")
            return redirect(url_for("tasks.detail", task_id=task.id))
    return _form_page(form, None)


@bp.route("/tasks/<int:task_id>/edit", methods=["GET", "POST"])
@admin_required
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
            audit("task_updated", task_id=task.id, name=task.name)
            flash(_saved_message(task, "saved"), "success")
            return redirect(url_for("tasks.detail", task_id=task.id))
    return _form_page(form, task)


def _form_page(form, task):
    preview = _form_preview(form.input_data())
    body = render_template("tasks/form.html", form=form, task=task, preview=preview, models=model_choices())
    return body, 422 if form.errors else 200


@bp.get("/tasks/preview")
def preview():
    """The form's live preview fragment (htmx): the schedule in words and its next runs, or what is wrong."""
    form = TaskForm(meta={"csrf": False}, formdata=request.args)
    return render_template("tasks/_preview.html", preview=_form_preview(form.input_data()))


@bp.post("/tasks/preview")
def preview_data():
    """The same preview as JSON for scripts using the session (CSRF header required); read-only."""
    try:
        preview = schedule_preview(request.get_json(silent=True) or request.form.to_dict(), _settings(),
                                   describe_schedule)
    except TaskInputError as exc:
        return jsonify(error="validation_failed", message=_("Some fields are invalid."), fields=exc.errors), 422
    return jsonify(preview_json(preview))


def _form_preview(data):
    try:
        return {"errors": {}, **schedule_preview(data, _settings(), describe_schedule)}
    except TaskInputError as exc:
        return {"errors": exc.errors, "description": None, "runs": [], "immediate": False}


@bp.post("/tasks/test")
@admin_required
def test_run():
    """The form's Test run (JSON for web/static/app.js): the task as typed, tried once, nothing saved."""
    form = TaskForm(meta={"csrf": False}, formdata=request.form)
    try:
        result = trial.run(form.input_data(), _settings())
    except TaskInputError as exc:
        return jsonify(error="validation_failed", message=_("Some fields are invalid."),
                       fields={field: translate_message(message) for field, message in exc.errors.items()}), 422
    audit("task_tested", connection_id=form.connection_id.data or None, ok=result.error is None)
    return jsonify(result.json())


@bp.get("/tasks/<int:task_id>/compare")
def compare(task_id):
    """Two runs of a task side by side, with what changed between them.

    a and b are run ids; b alone compares it with the successful run before it; neither, the last two.
    """
    task = _task_or_404(task_id)
    finished = db.select(Execution).filter_by(task_id=task.id, status=RunStatus.SUCCESS).order_by(Execution.id.desc())
    picked = [request.args.get(name, type=int) for name in ("a", "b")]
    if picked[1] is None:
        newest = db.session.execute(finished.limit(2)).scalars().all()[::-1]
        picked = [run.id for run in newest] if len(newest) == 2 else [None, None]
    elif picked[0] is None:
        picked[0] = db.session.execute(finished.with_only_columns(Execution.id)
                                       .where(Execution.id < picked[1]).limit(1)).scalar()
    left, right = (_run_of_task_or_404(task, run_id) if run_id is not None else None for run_id in picked)
    choices = db.session.execute(finished.limit(CHART_RUNS)).scalars().all()
    rows = []
    if left is not None and right is not None:
        rows = changes.side_by_side(changes.normalised(left.output), changes.normalised(right.output))
    cut = len(rows) > changes.MAX_SIDE_BY_SIDE_ROWS
    return render_template("tasks/compare.html", task=task, left=left, right=right, choices=choices,
                           rows=rows[:changes.MAX_SIDE_BY_SIDE_ROWS], cut=cut)


@bp.get("/tasks/<int:task_id>")
def detail(task_id):
    task = _task_or_404(task_id)
    runs, version, deliveries = _runs_page(task)
    chart_rows = db.session.execute(
        db.select(Execution.duration_ms, Execution.total_tokens)
        .where(Execution.task_id == task.id, Execution.status == RunStatus.SUCCESS)
        .order_by(Execution.id.desc()).limit(CHART_RUNS)
    ).all()[::-1]
    durations = [r.duration_ms for r in chart_rows if r.duration_ms is not None]
    tokens = [r.total_tokens for r in chart_rows if r.total_tokens is not None]
    charts = {"duration": line_chart(durations, _("Duration"), "ms"), "tokens": line_chart(tokens, _("Tokens"), "")}
    upcoming = schedules.next_runs(task, 5) if task.enabled else []
    timeline = db.session.execute(
        db.select(Execution).filter_by(task_id=task.id, changed=True).order_by(Execution.id.desc()).limit(TIMELINE_RUNS)
    ).scalars().all()
    spend = budget.usage([task], _settings(), utcnow()).get(task.id)
    return render_template("tasks/detail.html", task=task, runs=runs, version=version, upcoming=upcoming,
                           charts=charts, endpoint=task_endpoint(task), timeline=timeline, deliveries=deliveries,
                           spend=spend)


@bp.get("/tasks/<int:task_id>/runs")
def runs_fragment(task_id):
    """The runs list alone; 204 when nothing changed since the version the browser has."""
    task = _task_or_404(task_id)
    runs, version, deliveries = _runs_page(task)
    if request.args.get("v") == version:
        return "", 204
    return render_template("tasks/_runs.html", task=task, runs=runs, version=version, endpoint=task_endpoint(task),
                           deliveries=deliveries)


def _runs_page(task):
    page = dashboard.page_number(request.args)
    query = db.select(Execution).filter_by(task_id=task.id).order_by(Execution.id.desc())
    runs = db.paginate(query, page=page, per_page=RUNS_PER_PAGE, error_out=False)
    deliveries = ledger.summaries([r.id for r in runs.items])
    # A new delivery attempt changes the version too, so its outcome shows without a reload.
    attempts = sum(d["attempts"] for entries in deliveries.values() for d in entries)
    version = ("-".join(f"{r.id}{r.status[0]}" for r in runs.items)[:200] + f"d{attempts}") if runs.items else "0"
    return runs, version, deliveries


@bp.post("/tasks/<int:task_id>/enable")
@admin_required
def enable(task_id):
    task = _task_or_404(task_id)
    try:
        service.set_enabled(task, True)
    except TaskInputError as exc:
        db.session.rollback()
        flash(" ".join(translate_message(message) for message in exc.errors.values()), "error")
        return _back(task)
    audit("task_enabled", task_id=task.id)
    flash(_saved_message(task, "enabled"), "success")
    return _back(task)


@bp.post("/tasks/<int:task_id>/disable")
@admin_required
def disable(task_id):
    task = _task_or_404(task_id)
    try:
        service.set_enabled(task, False, note=(request.form.get("note") or "").strip() or None)
    except TaskInputError as exc:
        db.session.rollback()
        flash(" ".join(translate_message(message) for message in exc.errors.values()), "error")
        return _back(task)
    audit("task_disabled", task_id=task.id, note=bool(task.pause_note))
    flash(_("“%(name)s” disabled; it will not run until you enable it.", name=task.name), "success")
    return _back(task)


@bp.post("/tasks/<int:task_id>/run")
@admin_required
def run(task_id):
    task = _task_or_404(task_id)
    allow_overlap = request.form.get("allow_overlap") == "1"
    execution = service.run_now(task, allow_overlap=allow_overlap)
    audit("task_run_now", task_id=task.id, execution_id=execution.id, allow_overlap=allow_overlap)
    flash(_("“%(name)s” queued to run now.", name=task.name), "success")
    return _back(task)


def _run_of_task_or_404(task, execution_id):
    run = db.session.get(Execution, execution_id) if 0 < execution_id <= MAX_ID else None
    if run is None or run.task_id != task.id:
        abort(404)
    return run


@bp.post("/tasks/<int:task_id>/runs/<int:execution_id>/cancel")
@admin_required
def cancel_run(task_id, execution_id):
    task = _task_or_404(task_id)
    run = _run_of_task_or_404(task, execution_id)
    if service.cancel_run(run):
        audit("run_cancelled", task_id=task.id, execution_id=run.id)
        flash(_("Run #%(id)d cancelled.", id=run.id), "success")
    else:
        db.session.refresh(run)
        flash(_("Run #%(id)d has already ended (%(status)s); it was not cancelled.", id=run.id,
                status=status_words().get(run.status, run.status)), "error")
    return _back(task)


@bp.post("/tasks/<int:task_id>/runs/<int:execution_id>/retry")
@admin_required
def retry_run(task_id, execution_id):
    task = _task_or_404(task_id)
    run = _run_of_task_or_404(task, execution_id)
    retry = service.retry_run(run)
    if retry is None:
        flash(_("Only a failed, lost or cancelled run can be retried; run #%(id)d is %(status)s.", id=run.id,
                status=status_words().get(run.status, run.status)), "error")
    else:
        audit("run_retried", task_id=task.id, execution_id=run.id, retry_id=retry.id)
        flash(_("Run #%(id)d queued to retry run #%(retried)d.", id=retry.id, retried=run.id), "success")
    return _back(task)


@bp.post("/tasks/<int:task_id>/runs/<int:execution_id>/resend")
@admin_required
def resend_run(task_id, execution_id):
    task = _task_or_404(task_id)
    run = _run_of_task_or_404(task, execution_id)
    if not RunStatus(run.status).is_final or not task.channels:
        flash(_("Only a finished run of a task with channels can be sent again."), "error")
        return _back(task)
    channel_ids = dispatch.resend(run)
    audit("run_resent", task_id=task.id, execution_id=run.id, channel_ids=channel_ids)
    flash(_("Run #%(id)d is being sent again to %(count)d channel(s).", id=run.id, count=len(channel_ids)), "success")
    return _back(task)


@bp.post("/tasks/<int:task_id>/delete")
@admin_required
def delete(task_id):
    task = _task_or_404(task_id)
    name, task_id = task.name, task.id
    service.delete_task(task)
    audit("task_deleted", task_id=task_id, name=name)
    flash(_("“%(name)s” deleted.", name=name), "success")
    return redirect(url_for("tasks.index"))


def _back(task):
    """Back to the page the action was taken on (the form's `next`, when on this site), else the task's page."""
    return redirect(safe_next(request.form.get("next")) or url_for("tasks.detail", task_id=task.id))


def _saved_message(task, verb):
    verbs = {"created": _("created"), "saved": _("saved"), "enabled": _("enabled")}
    if task.enabled and task.schedule_type == "interval":
        return _("“%(name)s” %(verb)s; its first run has started.", name=task.name, verb=verbs[verb])
    if task.enabled:
        words = describe_schedule(task)
        # Lower only the first letter: zone names and weekdays keep their case.
        return _("“%(name)s” %(verb)s; next run %(when)s.", name=task.name, verb=verbs[verb],
                 when=words[:1].lower() + words[1:])
    return _("“%(name)s” %(verb)s; it is disabled and will not run.", name=task.name, verb=verbs[verb])


def flower_link(run):
    """The run's entry in Flower when PROMPTBEAT_FLOWER_URL is set, else None."""
    return message_ids.flower_url(current_app.config["PROMPTBEAT"].flower_url, run)


def register_filters(app):
    """Template helpers for times, schedules, charts and Markdown."""
    app.jinja_env.filters["describe"] = describe_schedule
    app.jinja_env.filters["markdown"] = markdown_to_html
    app.jinja_env.globals.update(next_run=next_run, budget_parts=budget_parts, sparkline=sparkline, schedule_problem=schedule_problem,
                                 flower_link=flower_link, schema_example=json.dumps(output_schemas.EXAMPLE, indent=2))
    # Which runs show Cancel and Retry, from the state machine's own table.
    app.jinja_env.globals.update(cancellable=frozenset(sources(RunStatus.CANCELLED)), retryable=RETRYABLE,
                                 final_statuses=frozenset(status for status in RunStatus if status.is_final))
