"""/healthz and /metrics: no sign-in, what they report, and how /metrics is switched off or guarded."""
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from promptbeat.extensions import db
from promptbeat.models import Execution, Task, utcnow
from promptbeat.settings import Settings
from tests import services
from tests.services import free_port
from web import create_app

TASK = {"name": "Feed check", "prompt": "Summarise the feed", "schedule_type": "interval", "interval_seconds": 600}


def scrape(client, **kwargs):
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_healthz_reports_database_and_redis_without_sign_in(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_is_503_and_names_redis_when_redis_is_down(role_environ):
    settings = Settings.from_environ({**role_environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    body = _healthz(create_app(settings))
    assert body["status_code"] == 503
    assert body["database"] == "ok"
    assert body["redis"].startswith("unavailable")


def test_healthz_is_503_and_names_the_database_when_it_is_down(role_environ):
    missing = f"postgresql://promptbeat:s3cret-password@127.0.0.1:{free_port()}/promptbeat"
    settings = Settings.from_environ({**role_environ, "DATABASE_URL": missing})
    body = _healthz(create_app(settings))
    assert body["status_code"] == 503
    assert body["database"].startswith("unavailable")
    assert body["redis"] == "ok"
    assert "s3cret-password" not in str(body)


def _healthz(flask_app):
    response = flask_app.test_client().get("/healthz")
    body = response.get_json()
    with flask_app.app_context():
        db.engine.dispose()
    flask_app.extensions["promptbeat_redis"].close()
    return {"status_code": response.status_code, **body}


@pytest.fixture
def unworked_app(app, role_environ, tmp_path):
    """The web app on the session's database but a private Redis no worker listens to, so queued runs stay queued."""
    private = services.PrivateRedis(tmp_path)
    web_app = create_app(Settings.from_environ({**role_environ, "REDIS_URL": private.url}))
    yield web_app
    with web_app.app_context():
        db.engine.dispose()
    web_app.extensions["promptbeat_redis"].close()
    private.stop()


def test_metrics_report_runs_durations_tokens_queue_and_enabled_tasks(unworked_app, api_token):
    app, client = unworked_app, unworked_app.test_client()
    headers = {"Authorization": f"Bearer {api_token}"}
    # An enabled interval task queues an immediate run; the disabled one queues nothing.
    first = client.post("/api/tasks", json=TASK, headers=headers).get_json()["id"]
    client.post("/api/tasks", json={**TASK, "name": "Off", "enabled": False}, headers=headers)
    with app.app_context():
        task = db.session.get(Task, first)
        now = utcnow()
        for millis, status, tokens in [(80, "success", 10), (1500, "success", 20), (40_000, "failed", None)]:
            db.session.add(Execution(task=task, trigger="scheduled", status=status, started_at=now,
                                     finished_at=now + timedelta(milliseconds=millis), duration_ms=millis,
                                     prompt_tokens=tokens, completion_tokens=tokens and tokens * 2,
                                     cost_usd=tokens and tokens / 1000))
        db.session.commit()

    samples = scrape(client)
    assert samples[("promptbeat_runs", (("status", "queued"), ("trigger", "immediate")))] == 1
    assert samples[("promptbeat_runs", (("status", "success"), ("trigger", "scheduled")))] == 2
    assert samples[("promptbeat_runs", (("status", "failed"), ("trigger", "scheduled")))] == 1
    success = (("status", "success"), ("trigger", "scheduled"))
    assert samples[("promptbeat_run_duration_seconds_bucket", (("le", "0.1"),) + success)] == 1
    assert samples[("promptbeat_run_duration_seconds_bucket", (("le", "2.5"),) + success)] == 2
    assert samples[("promptbeat_run_duration_seconds_count", success)] == 2
    assert samples[("promptbeat_run_duration_seconds_sum", success)] == 1.58
    failed = (("status", "failed"), ("trigger", "scheduled"))
    assert samples[("promptbeat_run_duration_seconds_bucket", (("le", "30.0"),) + failed)] == 0
    assert samples[("promptbeat_run_duration_seconds_bucket", (("le", "60.0"),) + failed)] == 1
    assert samples[("promptbeat_tokens_total", (("kind", "prompt"), ("trigger", "scheduled")))] == 30
    assert samples[("promptbeat_tokens_total", (("kind", "completion"), ("trigger", "scheduled")))] == 60
    assert samples[("promptbeat_cost_usd_total", (("trigger", "scheduled"),))] == pytest.approx(0.03)
    assert samples[("promptbeat_queue_depth", (("queue", "promptbeat"),))] == 1
    assert samples[("promptbeat_enabled_tasks", ())] == 1
    assert samples[("promptbeat_redis_up", ())] == 1


def test_metrics_can_be_switched_off(role_environ, app):
    off = create_app(Settings.from_environ({**role_environ, "PROMPTBEAT_METRICS": "false"}))
    assert off.test_client().get("/metrics").status_code == 404


def test_metrics_token_is_required_when_configured(role_environ, app):
    guarded = create_app(Settings.from_environ({**role_environ, "PROMPTBEAT_METRICS_TOKEN": "scrape-me"})).test_client()
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert ("promptbeat_enabled_tasks", ()) in scrape(guarded, headers={"Authorization": "Bearer scrape-me"})
    assert guarded.get("/healthz").status_code == 200
