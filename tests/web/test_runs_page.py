"""The runs page, its exports and GET /api/runs: what a user sees, who may see it, and bad input."""
import csv
import io
import json
import re
from datetime import datetime, timezone

import pytest

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger
from promptbeat.runs.states import RunStatus
from tests.conftest import csrf_token, issue_api_token
from web import run_views

BASE = datetime(2030, 1, 10, 12, 0, tzinfo=timezone.utc)
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def runs(app):
    """Two tasks and five runs: ids by name, oldest first."""
    with app.app_context():
        feed = Task(name="Gold feed " + HOSTILE, prompt="p", model="fake-model", schedule_type="interval",
                    interval_seconds=600, timezone="UTC", enabled=False)
        brief = Task(name="每日简报", prompt="p", model="fake-model", schedule_type="interval",
                     interval_seconds=600, timezone="UTC", enabled=False)
        db.session.add_all([feed, brief])
        db.session.commit()
        specs = {
            "first": (feed, "Gold at 2,000 USD", RunStatus.SUCCESS, Trigger.SCHEDULED, None),
            "same": (feed, "Gold at 2,000 USD", RunStatus.SUCCESS, Trigger.SCHEDULED, False),
            "formula": (feed, "=HYPERLINK(\"http://evil\") gold " + HOSTILE, RunStatus.SUCCESS, Trigger.MANUAL, True),
            "chinese": (brief, "今天天气很好，金价上涨。", RunStatus.SUCCESS, Trigger.SCHEDULED, None),
            "failed": (brief, None, RunStatus.FAILED, Trigger.IMMEDIATE, None),
        }
        ids = {}
        for name, (task, output, status, trigger, changed) in specs.items():
            run = Execution(task_id=task.id, status=status, trigger=trigger, model="fake-model", output=output,
                            changed=changed, created_at=BASE, started_at=BASE, duration_ms=1234,
                            prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_usd=0.00002,
                            error="-1 is not a number" if status == RunStatus.FAILED else None,
                            error_class="Boom" if status == RunStatus.FAILED else None)
            db.session.add(run)
            db.session.commit()
            ids[name] = run.id
        ids["feed"], ids["brief"] = feed.id, brief.id
        return ids


def row_ids(html):
    return [int(i) for i in re.findall(r'<tr class="run" id="run-(\d+)"', html)]


def test_the_header_links_to_the_runs_page_which_lists_every_run_newest_first(signed_in, runs):
    home = signed_in.get("/").get_data(as_text=True)
    assert 'href="/runs"' in home
    page = signed_in.get("/runs")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert row_ids(html) == [runs["failed"], runs["chinese"], runs["formula"], runs["same"], runs["first"]]
    assert f'href="/tasks/{runs["brief"]}#run-{runs["chinese"]}"' in html
    assert "1,234 ms" in html and "≈ $0.000020" in html and "2030-01-10 12:00 UTC" in html
    changed_cells = re.findall(r'<td class="changed">([^<]*)</td>', html)
    assert changed_cells == ["—", "first", "changed", "unchanged", "first"]


def test_runtime_text_is_escaped(signed_in, runs):
    html = signed_in.get("/runs").get_data(as_text=True)
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_filters_and_search_on_the_page(signed_in, runs):
    def ids(query):
        response = signed_in.get("/runs", query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return row_ids(response.get_data(as_text=True))

    assert ids({"q": "gold"}) == [runs["formula"], runs["same"], runs["first"]]
    assert ids({"q": "金价"}) == [runs["chinese"]]
    assert ids({"q": "gold", "changed": "yes"}) == [runs["formula"]]
    assert ids({"changed": "first"}) == [runs["chinese"], runs["first"]]
    assert ids({"task_id": runs["brief"], "status": "failed"}) == [runs["failed"]]
    assert ids({"trigger": "manual", "since": "2030-01-10", "until": "2030-01-10"}) == [runs["formula"]]
    assert ids({"until": "2030-01-09"}) == []
    html = signed_in.get("/runs", query_string={"q": "gold", "status": "success"}).get_data(as_text=True)
    # The form keeps the filters, and the exports carry them.
    assert 'name="q" value="gold"' in html and '<option value="success" selected>' in html
    assert 'href="/runs/export.csv?q=gold&amp;status=success"' in html


def test_pages_follow_the_cursor_without_gaps(signed_in, runs, monkeypatch):
    monkeypatch.setattr(run_views, "PER_PAGE", 2)
    seen, path = [], "/runs?q=gold"
    while path:
        html = signed_in.get(path).get_data(as_text=True)
        seen += row_ids(html)
        link = re.search(r'<a rel="next" href="([^"]+)"', html)
        path = link.group(1).replace("&amp;", "&") if link else None
        if path:
            assert "q=gold" in path
    assert seen == [runs["formula"], runs["same"], runs["first"]]


@pytest.mark.parametrize("query, label, message", [
    ({"q": "gold\x00"}, "Search", "control characters"),
    ({"q": "a\r\nb"}, "Search", "control characters"),
    ({"q": "x" * 5000}, "Search", "at most 500"),
    ({"q": "&|!()"}, "Search", "no words"),
    ({"task_id": "1; DROP TABLE tasks"}, "Task id", "task id"),
    ({"task_id": "99999999999999999999"}, "Task id", "task id"),
    ({"status": ["done"]}, "Status", "Must be one of"),
    ({"since": "2030-13-01"}, "From", "ISO 8601"),
    ({"until": "99999-01-01"}, "To", "ISO 8601"),
    ({"since": "2030-02-01", "until": "2030-01-01"}, "To", "Must not come before since."),
    ({"cursor": "forged"}, "Page", "The cursor is not valid"),
])
def test_bad_filters_get_a_form_message_not_an_error_page(signed_in, runs, query, label, message):
    response = signed_in.get("/runs", query_string=query)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(rf'class="flash error form-error" role="alert">{label}: [^<]*{re.escape(message)}', html), html
    assert row_ids(html) == []
    export = signed_in.get("/runs/export.csv", query_string=query)
    assert export.status_code == 400 and message in export.get_data(as_text=True)


def test_the_form_message_is_in_chinese_for_a_chinese_reader(signed_in, runs):
    html = signed_in.get("/runs?since=yesterday", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "运行记录" in html and "开始日期" in html and "ISO 8601" in html and "Must be" not in html


def test_csv_export_holds_the_filtered_runs_with_formulas_neutralised(signed_in, runs):
    response = signed_in.get("/runs/export.csv?changed=yes")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(row["id"]) for row in rows] == [runs["formula"]]
    assert rows[0]["output"] == "'=HYPERLINK(\"http://evil\") gold " + HOSTILE
    assert rows[0]["task_name"] == "Gold feed " + HOSTILE and rows[0]["changed"] == "True"
    assert rows[0]["cost_usd"] == "2e-05" and rows[0]["created_at"] == "2030-01-10T12:00:00Z"
    failed = list(csv.DictReader(io.StringIO(signed_in.get("/runs/export.csv?status=failed").get_data(as_text=True))))
    assert failed[0]["error"] == "'-1 is not a number" and failed[0]["output"] == ""


def test_json_export_holds_the_filtered_runs_as_they_are(signed_in, runs):
    response = signed_in.get("/runs/export.json?q=天气")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = json.loads(response.get_data(as_text=True))
    assert [run["id"] for run in body] == [runs["chinese"]]
    assert body[0]["output"] == "今天天气很好，金价上涨。" and body[0]["task_name"] == "每日简报"
    assert body[0]["changed"] is None and body[0]["status"] == "success"
    assert json.loads(signed_in.get("/runs/export.json?q=nothingmatches").get_data(as_text=True)) == []


def test_exports_are_bounded(signed_in, runs, monkeypatch):
    monkeypatch.setattr(run_views, "EXPORT_LIMIT", 2)
    body = json.loads(signed_in.get("/runs/export.json").get_data(as_text=True))
    assert [run["id"] for run in body] == [runs["failed"], runs["chinese"]]
    lines = signed_in.get("/runs/export.csv").get_data(as_text=True).splitlines()
    assert len(lines) == 3


def test_viewers_read_the_runs_page_and_exports_and_strangers_do_not(app, client, runs):
    assert client.get("/runs").status_code == 302
    assert client.get("/runs/export.csv").status_code == 302
    issue_api_token(app, "viewer@example.com", "viewer password 1", role="viewer")
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"email": "viewer@example.com", "password": "viewer password 1",
                                "csrf_token": csrf_token(page)})
    assert row_ids(client.get("/runs").get_data(as_text=True))[0] == runs["failed"]
    assert client.get("/runs/export.json").status_code == 200


# The API

def test_api_lists_runs_with_cursor_pages(api, runs):
    first = api.get("/runs?q=gold&limit=2")
    assert first.status_code == 200
    body = first.get_json()
    assert [run["id"] for run in body["runs"]] == [runs["formula"], runs["same"]]
    assert body["runs"][0]["task_name"] == "Gold feed " + HOSTILE and body["runs"][0]["changed"] is True
    assert body["runs"][0]["created_at"] == "2030-01-10T12:00:00Z"
    second = api.get(f"/runs?q=gold&limit=2&cursor={body['next_cursor']}").get_json()
    assert [run["id"] for run in second["runs"]] == [runs["first"]] and second["next_cursor"] is None
    everything = api.get("/runs").get_json()
    assert [run["id"] for run in everything["runs"]] == [runs[n] for n in ("failed", "chinese", "formula", "same",
                                                                          "first")]


def test_api_csv_pages_carry_the_next_cursor_in_a_header(api, runs):
    response = api.get("/runs?format=csv&limit=1&trigger=scheduled")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(row["id"]) for row in rows] == [runs["chinese"]]
    following = api.get(f"/runs?format=csv&limit=5&trigger=scheduled&cursor={response.headers['X-Next-Cursor']}")
    assert [int(r["id"]) for r in csv.DictReader(io.StringIO(following.get_data(as_text=True)))] == [
        runs["same"], runs["first"]]
    assert "X-Next-Cursor" not in following.headers


def test_a_viewer_token_reads_the_api_and_no_token_does_not(app, client, runs):
    assert client.get("/api/runs").status_code == 401
    token = issue_api_token(app, "viewer@example.com", "viewer password 1", role="viewer")
    response = client.get("/api/runs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and len(response.get_json()["runs"]) == 5


@pytest.mark.parametrize("query, field", [
    ("q=gold%00", "q"), ("q=a%0D%0Ab", "q"), ("q=" + "x" * 3000, "q"), ("q=%26%7C%21", "q"),
    ("task_id=abc", "task_id"), ("task_id=-5", "task_id"), ("task_id=1.5", "task_id"),
    ("status=SUCCESS", "status"), ("changed=true", "changed"), ("trigger=x", "trigger"),
    ("since=2030-01-01T25:00", "since"), ("until=0000-00-00", "until"),
    ("since=2030-01-02&until=2030-01-01", "until"), ("cursor=abc", "cursor"),
    ("cursor=eyJiZWZvcmUiOjF9.forged", "cursor"), ("format=xml", "format"), ("format=%00", "format"),
])
def test_api_refuses_bad_parameters_with_a_field_message(api, runs, query, field):
    response = api.get("/runs?" + query)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "bad_parameter" and field in body["fields"] and body["message"].startswith(field)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=abc", "page=2", "q=a&q=b&unknown=1"])
def test_api_refuses_bad_limits_and_unknown_parameters(api, runs, query):
    response = api.get("/runs?" + query)
    assert response.status_code == 400 and response.get_json()["error"] == "bad_parameter"


def test_the_api_cursor_is_refused_when_tampered(api, runs):
    cursor = api.get("/runs?limit=1").get_json()["next_cursor"]
    # The first character, every bit of which counts: the last one's low bits are padding in base64.
    tampered = ("x" if cursor[0] != "x" else "y") + cursor[1:]
    response = api.get(f"/runs?limit=1&cursor={tampered}")
    assert response.status_code == 400
    assert response.get_json()["fields"] == {"cursor": "The cursor is not valid; start again from the first page."}
