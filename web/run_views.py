"""The runs page: every task's runs, newest first, filtered and searched, one keyset page at a time; exports."""
from flask import Blueprint, Response, current_app, render_template, request, stream_with_context, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from promptbeat.extensions import db
from promptbeat.models import Trigger
from promptbeat.runs import export, search
from promptbeat.runs.states import RunStatus
from web.i18n import translate_message

bp = Blueprint("runs", __name__)
PER_PAGE = 50
# An export holds at most this many runs (the newest that match); narrower filters reach older ones.
EXPORT_LIMIT = 10_000
FIELD_LABELS = {"q": _l("Search"), "task_id": _l("Task id"), "status": _l("Status"), "changed": _l("Changed"),
                "trigger": _l("Trigger"), "since": _l("From"), "until": _l("To"), "cursor": _l("Page")}
# Messages of promptbeat.runs.search the page shows; listed so extraction finds them.
FILTER_MESSAGES = (
    _l("Must be at most 500 characters."), _l("Must not contain control characters (NUL, line breaks, tabs)."),
    _l("The search has no words to look for."), _l("Must be a task id, a whole number from 1 to 2147483647."),
    _l("Must be an ISO 8601 date or date and time between the years 1 and 9999, such as 2030-01-31 or "
       "2030-01-31T09:00Z."),
    _l("Must not come before since."), _l("The cursor is not valid; start again from the first page."),
)


def _cursors():
    return search.Cursors(current_app.config["PROMPTBEAT"].secret_key)


def _read_filters():
    """The filters and the page's cursor, or a form message (field label, message) for the first bad one."""
    try:
        filters = search.parse_filters(request.args)
        cursor = request.args.get("cursor", "")
        return filters, _cursors().load(cursor) if cursor else None, None
    except search.RunFilterError as exc:
        return search.RunFilters(), None, (FIELD_LABELS.get(exc.field, exc.field), exc.message)


@bp.get("/runs")
def index():
    filters, before, problem = _read_filters()
    page = search.run_page(db.session, filters, before, PER_PAGE) if problem is None else None
    raw = {field: request.args.get(field, "") for field in FIELD_LABELS} if problem else filters.args()
    body = render_template(
        "runs.html", page=page, filters=filters, raw=raw, problem=problem, first_page=before is None,
        next_cursor=_cursors().dump(page.next_before) if page and page.next_before else None,
        statuses=list(RunStatus), trigger_words={str(t): translate_message(t) for t in Trigger},
        changes=list(search.Changed), export_limit=EXPORT_LIMIT)
    return body, 400 if problem else 200


@bp.get("/runs/export.csv")
def export_csv():
    return _export("csv")


@bp.get("/runs/export.json")
def export_json():
    return _export("json")


def _export(kind):
    """The newest EXPORT_LIMIT runs that match the filters, streamed as they are read."""
    filters, _before, problem = _read_filters()
    if problem is not None:
        return Response(_("%(field)s: %(message)s", field=problem[0], message=_(problem[1])) + "\n", status=400,
                        mimetype="text/plain")
    rows = search.iterate_runs(db.session, filters, EXPORT_LIMIT)
    chunks = export.csv_lines(rows) if kind == "csv" else export.json_chunks(rows)
    mimetype = "text/csv" if kind == "csv" else "application/json"
    return Response(stream_with_context(chunks), mimetype=mimetype,
                    headers={"Content-Disposition": f"attachment; filename=promptbeat-runs.{kind}"})
