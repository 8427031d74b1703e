"""Usage and cost totals per task and per day, and prompt templates checked at save."""
import pytest

from tests.conftest import csrf_token
from tests.runner import run_and_reload


def test_usage_totals_per_task_and_per_day(app, api, fake_llm):
    ids = []
    for name in ("First", "Second"):
        ids.append(api.post("/tasks", json={"name": name, "prompt": f"Count {name}", "schedule_type": "crontab",
                                            "cron": "0 9 * * *"}).get_json()["id"])
    with app.app_context():
        runs = []
        for task_id in (ids[0], ids[0], ids[1]):
            execution = run_and_reload(task_id, trigger="manual")
            runs.append((execution.total_tokens, execution.cost_usd))
        expected_tokens = sum(tokens for tokens, _ in runs)
        expected_cost = sum(cost for _, cost in runs)
        first_cost = runs[0][1] + runs[1][1]
    usage = api.get("/usage").get_json()
    assert usage["total"]["runs"] == 3 and usage["total"]["total_tokens"] == expected_tokens
    assert usage["total"]["cost_usd"] == pytest.approx(expected_cost)
    assert [(t["task_id"], t["runs"]) for t in usage["per_task"]] == [(ids[0], 2), (ids[1], 1)]
    (day,) = usage["per_day"]
    assert day["runs"] == 3 and len(day["day"]) == 10
    one = api.get(f"/tasks/{ids[0]}/usage").get_json()
    assert one["total"]["runs"] == 2 and one["total"]["cost_usd"] == pytest.approx(first_cost)
    assert api.get("/usage?days=0").status_code == 400


def test_a_prompt_that_does_not_compile_is_refused_at_save(api, signed_in):
    response = api.post("/tasks", json={"name": "Broken", "prompt": "Hello {{ task.name ", "schedule_type": "crontab",
                                        "cron": "0 9 * * *"})
    assert response.status_code == 422
    assert response.get_json()["fields"]["prompt"].startswith("Template error")
    page = signed_in.get("/tasks/new").get_data(as_text=True)
    form = signed_in.post("/tasks/new", data={"csrf_token": csrf_token(page), "name": "Broken", "prompt": "{% if %}",
                                              "model": "fake-model", "temperature": "0.7", "schedule_type": "crontab",
                                              "cron": "0 9 * * *", "timezone": "UTC"})
    assert form.status_code == 422 and "Template error" in form.get_data(as_text=True)


def test_rotate_keys_command(app):
    result = app.test_cli_runner().invoke(args=["rotate-keys"])
    assert result.exit_code == 0 and "re-encrypted 0 API key(s)" in result.output
