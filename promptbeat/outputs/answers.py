"""A successful run's answer settled before it is recorded: parsed against the task's schema, compared
with the task's previous successful run."""
from sqlalchemy import bindparam, select

from promptbeat.extensions import db
from promptbeat.models import Execution
from promptbeat.outputs import changes, schema
from promptbeat.runs.states import RunStatus

EXECUTIONS = Execution.__table__
OUTPUT_INVALID = "OutputValidationError"
# The task's newest successful run before this one (the (task_id, id) index walks it backwards).
READ_PREVIOUS = (select(EXECUTIONS.c.output, EXECUTIONS.c.parsed_output)
                 .where(EXECUTIONS.c.task_id == bindparam("task_id"), EXECUTIONS.c.id < bindparam("run_id"),
                        EXECUTIONS.c.status == RunStatus.SUCCESS)
                 .order_by(EXECUTIONS.c.id.desc()).limit(1))


def settle(task, run_id, result):
    """Set result's parsed_output, changed and diff; a successful result whose answer does not conform to
    the task's output schema becomes a failure with the validation error. A failed result is left as it is.
    """
    if result.failed:
        return
    parsed = None
    if task.output_schema:
        try:
            parsed = schema.parse(result.output, task.output_schema)
        except schema.OutputInvalid as exc:
            result.status, result.error, result.error_class = RunStatus.FAILED, str(exc), OUTPUT_INVALID
            return
        result.parsed_output = parsed
    current = changes.Answer(result.output or "", parsed, structured=bool(task.output_schema))
    change = changes.compare(_previous(task.id, run_id), current, task.ignore_patterns)
    result.changed, result.diff = change.changed, change.diff


def _previous(task_id, run_id):
    with db.engine.connect() as connection:
        row = connection.execute(READ_PREVIOUS, {"task_id": task_id, "run_id": run_id}).one_or_none()
    if row is None:
        return None
    return changes.Answer(row.output or "", row.parsed_output, structured=row.parsed_output is not None)
