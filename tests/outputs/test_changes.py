"""Change detection: the comparison itself, its bounds, and runs recording changed and diff."""
import random
import time

import pytest

from promptbeat.outputs import changes, patterns
from promptbeat.outputs.changes import Answer, compare
from tests.outputs.fakes import script_answers
from tests.runs.test_execution import add_task, run


def test_whitespace_alone_is_no_change():
    assert compare(Answer("a  b\n\n  c\n"), Answer("a b\nc")) == changes.Change(False)


def test_the_first_answer_has_nothing_to_compare_with():
    assert compare(None, Answer("x")) == changes.Change(None)


def test_a_text_change_gives_a_unified_diff():
    change = compare(Answer("one\ntwo\nthree"), Answer("one\n2\nthree"))
    assert change.changed is True
    assert change.diff == "--- previous\n+++ current\n@@ -1,3 +1,3 @@\n one\n-two\n+2\n three"


def test_hunk_line_numbers_count_from_the_whole_answer():
    before = [f"line {n}" for n in range(100)]
    after = before[:50] + ["new"] + before[51:]
    assert "@@ -48,7 +48,7 @@" in changes.unified_diff(before, after)


def test_lines_matching_an_ignore_pattern_are_left_out():
    old, new = "Price: 10\nUpdated at 09:00", "Price: 10\nUpdated at 10:00"
    assert compare(Answer(old), Answer(new), ["^Updated at "]).changed is False
    assert compare(Answer(old), Answer(new)).changed is True


def test_structured_answers_are_compared_field_by_field():
    old = Answer("", {"price": 10, "tags": ["a", "b"], "meta": {"at": "09:00"}}, structured=True)
    new = Answer("", {"price": 11, "tags": ["a"], "meta": {"at": "10:00"}, "note": "<b>x</b>"}, structured=True)
    change = compare(old, new, [r"^\$\.meta\.at$"])
    assert change.changed is True
    assert change.diff.splitlines() == ['+ $.note: "<b>x</b>"', "~ $.price: 10 → 11", '- $.tags[1]: "b"']
    assert compare(old, Answer("", old.parsed, structured=True)).changed is False


def test_a_type_change_is_a_change():
    assert compare(Answer("", {"a": 1}, True), Answer("", {"a": 1.0}, True)).changed is True
    assert compare(Answer("", {"a": 1}, True), Answer("", {"a": True}, True)).changed is True


def test_deeply_nested_answers_compare_without_recursion():
    deep = current = {}
    for _ in range(5000):
        current["a"] = current = {}
    assert compare(Answer("", deep, True), Answer("", {"a": 1}, True)).changed is True


@pytest.mark.parametrize("shape", ["lines", "one_line", "repeated", "shuffled"])
def test_two_one_megabyte_answers_compare_quickly_into_a_bounded_diff(shape):
    if shape == "lines":
        old = "\n".join(f"row {n} {'x' * 40}" for n in range(20_000))
        new = "\n".join(f"row {n} {'y' * 40}" for n in range(20_000))
    elif shape == "one_line":
        old, new = "x" * 1_000_000, "y" * 1_000_000
    elif shape == "repeated":
        old, new = "same\n" * 200_000, "same\nother\n" * 83_000
    else:
        # Lines repeating below difflib's junk threshold: its own matching takes quadratic time on these.
        picker = random.Random(3)
        values = [f"item {n} {'z' * 20}" for n in range(150)]
        old, new = ("\n".join(picker.choice(values) for _ in range(34_000)) for _ in range(2))
    begun = time.monotonic()
    change = compare(Answer(old), Answer(new))
    # Generous for a shared machine; plain difflib takes far longer on the shuffled lines.
    assert time.monotonic() - begun < 5
    assert change.changed is True
    assert len(change.diff) <= changes.MAX_DIFF_CHARS + 100
    if shape != "one_line":
        assert change.diff.endswith(changes.CUT_NOTE.format(limit=changes.MAX_DIFF_CHARS))


def test_side_by_side_aligns_changed_lines():
    rows = changes.side_by_side(["a", "b", "c"], ["a", "B", "c", "d"])
    assert rows == [("equal", "a", "a"), ("replace", "b", "B"), ("equal", "c", "c"), ("insert", None, "d")]


def test_catastrophic_patterns_run_in_linear_time():
    match = patterns.matcher(["(a+)+$"])
    begun = time.monotonic()
    assert match("a" * 100_000 + "b") is False
    assert time.monotonic() - begun < 1


def test_runs_record_changed_and_diff(app, api, fake_llm):
    task_id = add_task(app, ignore_patterns=["^Checked at"])
    script_answers(fake_llm, "Price: 10\nChecked at 09:00", "Price:  10\nChecked at 10:00", "Price: 12")

    first, same, changed = run(app, task_id), run(app, task_id), run(app, task_id)

    assert (first.changed, first.diff) == (None, None)
    assert (same.changed, same.diff) == (False, None)
    assert changed.changed is True
    assert changed.diff == "--- previous\n+++ current\n@@ -1 +1 @@\n-Price: 10\n+Price: 12"
    shown = api.get(f"/tasks/{task_id}/executions").get_json()["executions"]
    assert [(e["changed"], e["diff"]) for e in shown] == [(True, changed.diff), (False, None), (None, None)]


def test_a_failed_run_is_not_compared_and_not_compared_against(app, fake_llm):
    task_id = add_task(app, model="fake-error-500", max_attempts=1)
    script_answers(fake_llm)
    assert run(app, task_id).changed is None
