"""Finding runs: filters, full-text search over outputs (Chinese included), keyset pages and cursors."""
import importlib.util
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, Trigger
from promptbeat.runs import search
from promptbeat.runs.search_vector import SEARCH_VECTOR_SQL
from promptbeat.runs.states import RunStatus

BASE = datetime(2030, 1, 10, 12, 0, tzinfo=timezone.utc)


def make_task(name="Feed"):
    task = Task(name=name, prompt="p", model="fake-model", schedule_type="interval", interval_seconds=600,
                timezone="UTC", enabled=False)
    db.session.add(task)
    db.session.commit()
    return task


def add_run(task, output=None, *, status=RunStatus.SUCCESS, trigger=Trigger.SCHEDULED, changed=None,
            created_at=BASE, **fields):
    run = Execution(task_id=task.id, status=status, trigger=trigger, model="fake-model", output=output,
                    changed=changed, created_at=created_at, **fields)
    db.session.add(run)
    db.session.commit()
    return run.id


def found(q="", **filters):
    """The ids the search finds, newest first."""
    parsed = search.parse_filters({"q": q, **{key: str(value) for key, value in filters.items()}})
    return [row.id for row in search.run_page(db.session, parsed, limit=500).rows]


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def test_each_filter_narrows_the_runs(ctx):
    feed, brief = make_task("Feed"), make_task("Brief")
    first = add_run(feed, "a", changed=None, created_at=BASE - timedelta(days=3))
    same = add_run(feed, "a", changed=False, trigger=Trigger.MANUAL, created_at=BASE - timedelta(days=2))
    new = add_run(feed, "b", changed=True, created_at=BASE - timedelta(days=1))
    failed = add_run(brief, None, status=RunStatus.FAILED, error="boom", created_at=BASE)
    assert found() == [failed, new, same, first]
    assert found(task_id=feed.id) == [new, same, first]
    assert found(status="failed") == [failed]
    assert found(trigger="manual") == [same]
    assert found(changed="yes") == [new]
    assert found(changed="no") == [same]
    # A failed run has no answer to compare, so it is not a "first" one.
    assert found(changed="first") == [first]
    assert found(since="2030-01-08") == [failed, new, same]
    # A bare `until` date includes the whole day.
    assert found(until="2030-01-08") == [same, first]
    assert found(since="2030-01-08T12:00:00Z", until="2030-01-09T12:00:00+00:00") == [new, same]
    assert found(since="2030-01-09T13:00:00+01:00", until="2030-01-09T12:00") == [new]
    assert found(task_id=feed.id, changed="yes", status="success", trigger="scheduled") == [new]
    assert found(task_id=2**31 - 1) == []


def test_search_finds_words_phrases_and_exclusions_in_any_case(ctx):
    task = make_task()
    price = add_run(task, "The Price of gold rose to 2,100 USD today.")
    weather = add_run(task, "Weather: rain in Berlin, gold-coloured sunset.")
    add_run(task, None, status=RunStatus.FAILED, error="gold is in the error, not in an output")
    assert found("gold") == [weather, price]
    assert found("GOLD PRICE") == [price]
    assert found('"gold rose"') == [price]
    assert found('"rose gold"') == []
    assert found("gold -rain") == [price]
    assert found("berlin or usd") == [weather, price]
    # 'simple' keeps words as written: no stemming, so "rains" is not "rain".
    assert found("rains") == []


def test_chinese_is_found_by_any_part_of_a_sentence(ctx):
    task = make_task("每日简报")
    sentence = add_run(task, "今天天气很好，适合出门。明天有雨。")
    mixed = add_run(task, "GPT模型的回答：价格上涨了5%")
    apart = add_run(task, "天很气人")
    assert found("天气") == [sentence]
    assert found("天气很好") == [sentence]
    assert found("明天 出门") == [sentence]
    # In order and adjacent: the characters of 天气 apart, or reversed, are not a match.
    assert found("气天") == []
    assert found("天") == [apart, sentence]
    assert found("gpt模型") == [mixed]
    assert found("模型 价格") == [mixed]
    assert found("天 -天气") == [apart]
    assert found("ひらがな") == []


@pytest.mark.parametrize("q", [
    "a:* & b", "(gold", "gold)", "!gold", "gold | ", "<->", "gold <-> rose", "'", "\\", "a''b", "gold:A",
    "''';--", "%_*", "$$", "\"unterminated", "- - gold", "OR or OR", "1 <2> 2", "天气:*", "(天气 | 明天)",
    "x" * 500, "𝔤𝔬𝔩𝔡", "ＧＯＬＤ", "<script>gold</script>",
])
def test_query_syntax_in_user_text_never_breaks_the_search(ctx, q):
    task = make_task()
    gold = add_run(task, "gold rose")
    if any(character.isalnum() for character in q):
        assert found(q) in ([], [gold])
    else:
        with pytest.raises(search.RunFilterError, match="no words"):
            found(q)


def test_a_search_without_words_or_with_control_characters_is_refused(ctx):
    for q, message in [("!!! ()", "The search has no words to look for."), ("---", "no words"),
                       ("gold\x00", "control characters"), ("gold\r\nprice", "control characters"),
                       ("a\tb", "control characters"), ("x" * 501, "at most 500")]:
        with pytest.raises(search.RunFilterError) as error:
            search.parse_filters({"q": q})
        assert error.value.field == "q" and message in error.value.message


@pytest.mark.parametrize("field, value, message", [
    ("task_id", "abc", "task id"), ("task_id", "0", "task id"), ("task_id", "2147483648", "task id"),
    ("task_id", "-1", "task id"), ("task_id", "1e3", "task id"), ("task_id", "١٢", "task id"),
    ("status", "done", "Must be one of: queued, waiting, running, submitted"), ("changed", "true", "Must be one of: yes, no, first"),
    ("trigger", "cron", "Must be one of: immediate"), ("since", "yesterday", "ISO 8601"),
    ("since", "0000-01-01", "ISO 8601"), ("until", "9999-12-31T24:00", "ISO 8601"),
    ("until", "2030-02-30", "ISO 8601"), ("since", "2030-01-01T09:00+25:00", "ISO 8601"),
    ("until", "10000-01-01", "ISO 8601"), ("status", "success\n", "control characters"),
])
def test_bad_filters_name_their_field(field, value, message):
    with pytest.raises(search.RunFilterError) as error:
        search.parse_filters({field: value})
    assert error.value.field == field and message in error.value.message


def test_dates_at_the_edges_of_the_calendar_are_searched_without_error(ctx):
    task = make_task()
    run = add_run(task, "x")
    assert found(since="0001-01-01", until="9999-12-31") == [run]
    assert found(since="9999-12-31T23:59:59Z") == []


def test_an_inverted_range_is_refused():
    with pytest.raises(search.RunFilterError) as error:
        search.parse_filters({"since": "2030-01-02", "until": "2030-01-01"})
    assert error.value.field == "until"


def test_cursors_are_opaque_and_a_changed_one_is_refused():
    cursors = search.Cursors("secret")
    cursor = cursors.dump(1234)
    assert "1234" not in cursor
    assert cursors.load(cursor) == 1234
    forged = [search.Cursors("other secret").dump(1), cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"),
              "", "x" * 5000, "eyJiZWZvcmUiOjF9", cursors.dump("1"), cursors.dump(True), cursors.dump(2**40),
              cursors.dump(None), cursors.dump([1]), "\x00"]
    for bad in forged:
        with pytest.raises(search.RunFilterError) as error:
            cursors.load(bad)
        assert error.value.field == "cursor"


@pytest.mark.parametrize("window", [search.SEARCH_WINDOW, 3, 1])
def test_pages_have_no_duplicates_or_gaps_while_new_runs_arrive(ctx, monkeypatch, window):
    # A small window makes pages cross from the walk over the newest runs to the index and back.
    monkeypatch.setattr(search, "SEARCH_WINDOW", window)
    task = make_task()
    before_paging = [add_run(task, f"gold report {i}") for i in range(23)]
    filters = search.parse_filters({"q": "gold"})
    seen, before = [], None
    while True:
        page = search.run_page(db.session, filters, before, limit=5)
        seen += [row.id for row in page.rows]
        # New runs arrive between pages, matching and not; they belong before the first page.
        add_run(task, "gold report, newer")
        add_run(task, "silver")
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == sorted(before_paging, reverse=True)


def test_an_export_reads_in_batches_and_stops_at_its_limit(ctx):
    task = make_task()
    ids = [add_run(task, f"gold {i}") for i in range(12)]
    filters = search.parse_filters({"q": "gold"})
    assert [row.id for row in search.iterate_runs(db.session, filters, limit=100, batch=5)] == ids[::-1]
    assert [row.id for row in search.iterate_runs(db.session, filters, limit=7, batch=5)] == ids[::-1][:7]


def test_a_huge_output_is_stored_and_its_beginning_searchable(ctx):
    task = make_task()
    # Past what a tsvector can hold: the generated column must not make the run's write fail.
    words = " ".join(f"w{i}" for i in range(300_000))
    run = add_run(task, "needle " + words + " haystackend")
    assert len(db.session.get(Execution, run).output) > 1_000_000
    assert found("needle") == [run]
    assert found("haystackend") == []


def test_the_migration_builds_the_search_vector_as_the_model_does():
    path = next(Path(__file__).parents[2].glob("promptbeat/migrations/versions/runs16search01_*.py"))
    spec = importlib.util.spec_from_file_location("migration", path)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.SEARCH_VECTOR == SEARCH_VECTOR_SQL


@pytest.mark.parametrize("q", ["rareword", "天气", "gold -天气"])
def test_the_search_condition_is_one_the_index_serves(ctx, q):
    # Which plan wins on a large table is measured by benchmarks/runs_search.py; on a few rows any
    # plan is fast, so only bitmap scans are left to the planner: it must find the GIN index usable.
    task = make_task()
    for i in range(50):
        add_run(task, f"common words {i}")
    query = select(Execution.id).where(Execution.output_search.op("@@")(search.text_query(q)))
    compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
    with db.engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        connection.exec_driver_sql("SET enable_indexscan = off")
        plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {compiled}"))
    assert "ix_executions_output_search" in plan
