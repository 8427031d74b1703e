"""Budgets on the API, the form and the dashboard: spend against budget per task and overall."""
from html import unescape

from sqlalchemy import event

from promptbeat.extensions import db
from tests.runner import run_and_reload
from tests.web.test_forms import created_task_id, form_data, input_value, load_task

TASK = {"name": "Budgeted", "prompt": "Hello there", "schedule_type": "crontab", "cron": "0 9 * * *"}
NO_SPEND = {"usd_day": 0.0, "usd_month": 0.0, "tokens_day": 0, "tokens_month": 0}


def test_the_api_takes_budgets_and_returns_spend_against_them(app, api, fake_llm):
    created = api.post("/tasks", json={**TASK, "budget_usd_day": 0.5, "budget_usd_month": 10,
                                       "budget_tokens_month": 100_000, "pause_on_budget": True})
    assert created.status_code == 201, created.get_json()
    task = created.get_json()
    assert (task["budget_usd_day"], task["budget_usd_month"], task["budget_tokens_day"],
            task["budget_tokens_month"], task["pause_on_budget"]) == (0.5, 10.0, None, 100_000, True)
    assert task["spend"] == NO_SPEND
    with app.app_context():
        execution = run_and_reload(task["id"], trigger="manual")
        used, cost = execution.total_tokens, execution.cost_usd
    spend = api.get(f"/tasks/{task['id']}").get_json()["spend"]
    assert spend == {"usd_day": cost, "usd_month": cost, "tokens_day": used, "tokens_month": used}
    assert api.get("/tasks").get_json()["tasks"][0]["spend"] == spend
    # null lifts a budget; the option goes back to its default when left out on create only.
    changed = api.patch(f"/tasks/{task['id']}", json={"budget_usd_day": None, "pause_on_budget": False}).get_json()
    assert (changed["budget_usd_day"], changed["budget_usd_month"], changed["pause_on_budget"]) == (None, 10.0, False)


def test_the_global_budget_endpoint(app, api, fake_llm, swap_settings):
    assert api.get("/budget").get_json() == {
        "timezone": "UTC", "budget_usd_day": None, "budget_usd_month": None, "budget_tokens_day": None,
        "budget_tokens_month": None, "spend": NO_SPEND}
    swap_settings(budget_usd_month=25.0, budget_tokens_day=50_000, budget_timezone="Asia/Tokyo")
    task_id = api.post("/tasks", json=TASK).get_json()["id"]
    with app.app_context():
        execution = run_and_reload(task_id, trigger="manual")
    answer = api.get("/budget").get_json()
    assert (answer["timezone"], answer["budget_usd_month"], answer["budget_tokens_day"]) == ("Asia/Tokyo", 25.0, 50_000)
    assert answer["spend"]["tokens_day"] == answer["spend"]["tokens_month"] == execution.total_tokens
    assert answer["spend"]["usd_month"] == execution.cost_usd
    # A task without a budget of its own has no spend of its own counted.
    assert api.get(f"/tasks/{task_id}").get_json()["spend"] == NO_SPEND


def test_budgets_out_of_range_are_refused_with_a_field_message(app, api):
    for field, value, message in [
        ("budget_usd_day", -0.01, "Must be between 0 and 1000000000."),
        ("budget_tokens_month", 10**16, "Must be between 0 and 1000000000000000."),
        ("budget_tokens_day", 1.5, "Must be a whole number."),
    ]:
        response = api.post("/tasks", json={**TASK, field: value})
        assert response.status_code == 422 and response.get_json()["fields"][field] == message, field
    assert api.get("/tasks").get_json()["tasks"] == []


def test_the_form_sets_budgets(app, signed_in):
    data = form_data(signed_in, "/tasks/new", budget_usd_day="1.25", budget_tokens_month="9000",
                     pause_on_budget="y")
    task = load_task(app, created_task_id(signed_in.post("/tasks/new", data=data)))
    assert (task.budget_usd_day, task.budget_usd_month, task.budget_tokens_month, task.pause_on_budget) == (
        1.25, None, 9000, True)
    edit = signed_in.get(f"/tasks/{task.id}/edit").get_data(as_text=True)
    assert input_value(edit, "budget_usd_day") == "1.25" and input_value(edit, "budget_tokens_month") == "9000"
    refused = signed_in.post("/tasks/new", data=form_data(signed_in, "/tasks/new", budget_usd_month="-1"))
    assert refused.status_code == 422 and "Must be between 0 and 1000000000." in unescape(refused.get_data(as_text=True))


def test_the_dashboard_shows_spend_against_budget_in_one_query(app, api, signed_in, fake_llm, swap_settings):
    swap_settings(budget_usd_day=2.0)
    ids = [api.post("/tasks", json={**TASK, "name": f"Task {n}", "budget_tokens_day": 5000}).get_json()["id"]
           for n in range(4)]
    with app.app_context():
        used = run_and_reload(ids[0], trigger="manual").total_tokens
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            page = unescape(signed_in.get("/").get_data(as_text=True))
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
    assert f"{used:,} / 5,000 tokens today" in page and "0 / 5,000 tokens today" in page
    assert "Global budget: $0.0" in page and "/ $2 today" in page
    assert len([s for s in statements if "FROM spend" in s]) == 1
    detail = unescape(signed_in.get(f"/tasks/{ids[0]}").get_data(as_text=True))
    assert f"{used:,} / 5,000 tokens today" in detail
