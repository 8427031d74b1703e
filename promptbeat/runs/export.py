"""Listed runs as JSON values, CSV lines and a streamed JSON array: the API's and the exports' one shape."""
import csv
import io
import json

from promptbeat.runs.search import RECORD_FIELDS

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_FIELDS = tuple(field for field in RECORD_FIELDS if field != "parsed_output")


def iso(moment):
    """ISO 8601 in UTC, or None."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def record_json(row):
    """A listed run as JSON-ready values: times in ISO 8601, the rest as stored."""
    data = dict(zip(RECORD_FIELDS, row))
    for name in ("created_at", "started_at", "finished_at"):
        data[name] = iso(data[name])
    return data


def neutralise(value):
    """A CSV cell that a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value)  # numbers and booleans are written by promptbeat, not by a model
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_lines(rows):
    """The header line, then one CSV line per run (outputs with line breaks are quoted, as CSV does)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values):
        writer.writerow(values)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(CSV_FIELDS)
    for row in rows:
        data = record_json(row)
        yield line([neutralise(data[field]) for field in CSV_FIELDS])


def json_chunks(rows):
    """A JSON array of runs, one element per chunk, so a long export is written as it is read."""
    yield "["
    for index, row in enumerate(rows):
        yield ("," if index else "") + json.dumps(record_json(row), ensure_ascii=False)
    yield "]\n"
