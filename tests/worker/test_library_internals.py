"""The worker's replacements of library internals: written for known library versions, and each can be left off."""
import logging

import kombu
import pytest
from celery import Celery
from kombu import transport as kombu_transports

from promptbeat import versions
from worker import broker
from promptbeat.llm import client as llm
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from tests import services
from tests.services import wait_for
from worker import greenpoll

RUNS = 30
REPLACEMENTS = {"worker/broker.py": broker, "promptbeat/llm/client.py": llm, "worker/greenpoll.py": greenpoll}


@pytest.mark.parametrize("path", REPLACEMENTS)
def test_the_installed_libraries_are_the_versions_each_replacement_was_written_for(path):
    outside = [str(requirement) for requirement in REPLACEMENTS[path].WRITTEN_FOR if not requirement.holds()]
    assert not outside, (
        f"{path} overrides library internals and was written for other versions: {', '.join(outside)}. "
        "The worker now leaves it off and runs the library's own path. Read the library's changes to the "
        f"code {path} overrides, run its tests and the benchmark (docs/performance.md), then widen WRITTEN_FOR.")


def test_a_version_range_holds_only_for_the_versions_inside_it():
    installed = versions.WrittenFor("kombu", ">=0").installed()
    assert versions.WrittenFor("kombu", f"=={installed}").holds()
    assert not versions.WrittenFor("kombu", f"<{installed}").holds()
    assert not versions.WrittenFor("promptbeat-no-such-distribution", ">=0").holds()


@pytest.fixture
def kombu_redis_alias():
    """kombu's own transport for redis:// URLs; afterwards the alias is left as the test found it."""
    before = kombu_transports.TRANSPORT_ALIASES["redis"]
    kombu_transports.TRANSPORT_ALIASES["redis"] = "kombu.transport.redis:Transport"
    kombu_transports._transport_cache.pop("redis", None)
    yield
    kombu_transports.TRANSPORT_ALIASES["redis"] = before
    kombu_transports._transport_cache.pop("redis", None)


def test_outside_its_kombu_versions_the_broker_transport_is_left_off_with_a_warning(
        monkeypatch, caplog, redis_url, kombu_redis_alias):
    monkeypatch.setattr(broker, "WRITTEN_FOR", (versions.WrittenFor("kombu", "<1"),))
    with caplog.at_level(logging.WARNING, logger="promptbeat.versions"):
        assert broker.install() is False
    assert "PROMPTBEAT_FAST_BROKER" in caplog.text and "kombu<1" in caplog.text
    with kombu.Connection(redis_url) as connection:
        assert type(connection.transport) is kombu_transports.redis.Transport
        assert connection.default_channel.client.ping()


def test_inside_its_versions_the_broker_transport_serves_redis_urls(redis_url, kombu_redis_alias):
    with kombu.Connection(redis_url) as connection:
        assert type(connection.transport) is kombu_transports.redis.Transport
    assert broker.install() is True
    with kombu.Connection(redis_url) as connection:
        assert type(connection.transport) is broker.Transport


@pytest.fixture
def completion_path():
    """Leaves the process's way of calling the model as the test found it."""
    before = llm._create
    yield
    llm._create = before


def test_outside_its_openai_versions_completions_go_through_create_with_a_warning(
        monkeypatch, caplog, fake_llm, completion_path):
    llm._create = llm._create_through_sdk
    monkeypatch.setattr(llm, "WRITTEN_FOR", (versions.WrittenFor("openai", "<1"),))
    with caplog.at_level(logging.WARNING, logger="promptbeat.versions"):
        assert llm.install() is False
    assert "PROMPTBEAT_FAST_LLM_CALLS" in caplog.text and "openai<1" in caplog.text
    assert llm._create is llm._create_through_sdk
    fake_llm.reset()
    answer = llm.complete(llm.Endpoint(fake_llm.url, "sk-test-versions"), model="fake-model", prompt="hi", timeout=10)
    assert answer.output == "echo: hi" and answer.total_tokens


@pytest.mark.parametrize("path", ["create", "post"])
def test_both_ways_of_calling_the_model_give_the_same_answers_and_errors(path, fake_llm, completion_path):
    llm._create = llm._create_through_sdk if path == "create" else llm._create_by_post
    endpoint = llm.Endpoint(fake_llm.url, "sk-test-paths")
    fake_llm.reset()
    answer = llm.complete(endpoint, model="fake-model", prompt="hi", system_prompt="be brief", max_tokens=5,
                          temperature=0.5, timeout=10)
    assert answer.output == "echo: hi" and answer.prompt_tokens and answer.completion_tokens
    (request,) = fake_llm.requests
    assert request["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]

    fake_llm.queue_responses([
        {"status": 200, "body": {"choices": [{"message": {"role": "assistant", "content": None}}]}},
        {"status": 200, "body": ["not", "a", "completion"]},
        {"status": 429, "body": {"error": {"message": "slow down", "type": "requests", "code": "rate_limit"}},
         "headers": {"retry-after-ms": "1500"}},
    ])
    assert llm.complete(endpoint, model="fake-model", prompt="hi", timeout=10) == llm.Completion("", None, None, None)
    with pytest.raises(llm.LLMError) as caught:
        llm.complete(endpoint, model="fake-model", prompt="hi", timeout=10)
    assert caught.value.error_class == "APIResponseValidationError"
    with pytest.raises(llm.LLMError) as caught:
        llm.complete(endpoint, model="fake-model", prompt="hi", timeout=10)
    assert (caught.value.error_class, caught.value.status, caught.value.retry_after) == ("RateLimitError", 429, 1.5)
    assert "slow down" in str(caught.value)


@pytest.mark.slow
def test_a_gevent_worker_with_every_replacement_switched_off_runs_on_the_libraries_own_paths(
        app, role_environ, tmp_path):
    private_redis = services.PrivateRedis(tmp_path)
    env = services.role_env({**role_environ, "REDIS_URL": private_redis.url, "PROMPTBEAT_FAST_BROKER": "false",
                             "PROMPTBEAT_FAST_GEVENT_POLL": "false", "PROMPTBEAT_FAST_LLM_CALLS": "false"})
    worker = services.start_worker(env, tmp_path / "worker.log", pool="gevent", concurrency=10)
    sender = Celery("sender", broker=private_redis.url)
    try:
        log = worker.output()
        assert "fast broker transport: off; fast LLM calls: off" in log
        assert "gevent pool: psycopg2 waits cooperatively" in log
        assert "readiness checks poll the operating system directly" not in log
        with app.app_context():
            task = Task(name="Library paths", prompt="Own paths", model="fake-model", schedule_type="interval",
                        interval_seconds=600, overlap_policy="allow")
            runs = [Execution(task=task, trigger="manual", status="queued") for _ in range(RUNS)]
            db.session.add_all([task, *runs])
            db.session.commit()
            ids = [(task.id, run.id) for run in runs]
        # More runs than the pool has greenlets: the consumer reaches its prefetch limit and must see acks.
        for task_id, run_id in ids:
            sender.send_task("promptbeat.execute_task", args=[task_id], queue="promptbeat",
                             kwargs={"trigger": "manual", "execution_id": run_id})

        def all_finished():
            with app.app_context():
                rows = db.session.execute(db.select(Execution.status, Execution.output).filter(
                    Execution.id.in_([run_id for _, run_id in ids]))).all()
            finished = [tuple(row) for row in rows if row.status not in ("queued", "running")]
            return finished if len(finished) == RUNS else None

        finished = wait_for(all_finished, 60, "every run finished")
        assert set(finished) == {("success", "echo: Own paths")}
    finally:
        sender.close()
        worker.stop()
        private_redis.stop()
