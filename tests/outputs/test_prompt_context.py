"""Prompt variables about earlier answers and the moment: last_output, last_changed_at, time and weekday."""
from datetime import datetime, timezone

from promptbeat.extensions import db
from promptbeat.models import Execution
from promptbeat.runs import prompts
from tests.outputs.fakes import script_answers, sent
from tests.runs.test_execution import add_task, run

LIMITS = prompts.Limits(max_steps=100_000, max_seconds=5, max_chars=20_000)


def test_time_weekday_and_last_changed_at_are_in_the_tasks_zone():
    moment = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)
    changed = datetime(2026, 2, 27, 23, 15, tzinfo=timezone.utc)
    text = prompts.render("{{ weekday }} {{ time }} {{ today }} | {{ last_changed_at }}", LIMITS,
                          task_name="t", timezone="Asia/Shanghai", run_count=0, last_output="", moment=moment,
                          last_changed_at=changed)
    assert text == "Monday 16:30 2026-03-02 | 2026-02-28T07:15:00+08:00"
    before_any = prompts.render("[{{ last_changed_at }}]", LIMITS, task_name="t", timezone="UTC", run_count=0,
                                last_output="", moment=moment)
    assert before_any == "[]"


def test_a_run_sees_the_last_output_and_when_it_last_changed(app, fake_llm):
    task_id = add_task(app, prompt="Was: {{ last_output }} | changed {{ last_changed_at }}", timezone="UTC")
    script_answers(fake_llm, "A", "B", "B", "C")

    first, second, third, fourth = (run(app, task_id) for _ in range(4))

    assert (first.changed, second.changed, third.changed) == (None, True, False)
    prompts_sent = [request["messages"][-1]["content"] for request in sent(fake_llm)]
    with app.app_context():
        finished = {e.id: e.finished_at for e in db.session.query(Execution)}
    stamp = {run_id: finished[run_id].isoformat(timespec="seconds") for run_id in finished}
    assert prompts_sent == [
        "Was:  | changed ",
        f"Was: A | changed {stamp[first.id]}",
        f"Was: B | changed {stamp[second.id]}",
        # The third run's answer was the same: the output last changed with the second.
        f"Was: B | changed {stamp[second.id]}",
    ]
    assert fourth.changed is True
