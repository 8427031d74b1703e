"""Tests for the fake OpenAI server, driven through the real openai client over HTTP."""

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from promptbeat.fakellm import FakeLLMServer

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-test"


@contextmanager
def fake_openai(latency=0.0, **client_options):
    """Yield (server, client) and close both, so no socket outlives the test."""
    with FakeLLMServer(latency=latency) as server:
        options = {"base_url": server.url, "api_key": API_KEY, "max_retries": 0, **client_options}
        with openai.OpenAI(**options) as client:
            yield server, client


def ask(client, prompt, model="fake-model"):
    """Send one user prompt and return the completion."""
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])


def http_json(url, payload=None, headers=None):
    """Call a raw endpoint with urllib and return (status, decoded JSON body)."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def control_url(server, path):
    """URL of a /_fake control endpoint (outside the /v1 prefix)."""
    return f"http://{server.host}:{server.port}{path}"


def test_completion_echoes_last_user_message_with_usage():
    with fake_openai() as (server, client):
        completion = client.chat.completions.create(
            model="fake-model",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "first question"},
                {"role": "user", "content": "hello there world"},
            ],
        )
    assert completion.object == "chat.completion"
    assert completion.model == "fake-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hello there world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 3 + 2 + 3
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == 12
    [recorded] = server.requests
    assert recorded["model"] == "fake-model"
    assert recorded["messages"][-1]["content"] == "hello there world"
    assert recorded["authorization_present"] is True
    assert "authorization" not in recorded["headers"]


def test_models_are_listed():
    with fake_openai() as (_, client):
        assert {model.id for model in client.models.list()} >= {"fake-model", "gpt-4o-mini"}


@pytest.mark.parametrize(
    ("directive", "exception", "status", "code"),
    [
        ("[[fail:500]]", openai.InternalServerError, 500, "server_error"),
        ("[[fail:429]]", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("[[fail:quota]]", openai.RateLimitError, 429, "insufficient_quota"),
        ("[[fail:401]]", openai.AuthenticationError, 401, "invalid_api_key"),
        ("[[fail:400]]", openai.BadRequestError, 400, "invalid_request_error"),
        ("[[fail:404]]", openai.NotFoundError, 404, "model_not_found"),
    ],
)
def test_fail_directive_maps_to_openai_exception(directive, exception, status, code):
    with fake_openai() as (_, client), pytest.raises(exception) as caught:
        ask(client, f"summarise the news {directive}")
    assert caught.value.status_code == status
    assert caught.value.code == code
    assert caught.value.body["param"] is None


def test_rate_limit_carries_retry_after_headers():
    with fake_openai() as (_, client), pytest.raises(openai.RateLimitError) as caught:
        ask(client, "[[fail:429]]")
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.response.headers["retry-after-ms"] == "1000"


def test_quota_error_is_not_marked_retryable_by_headers():
    with fake_openai() as (_, client), pytest.raises(openai.RateLimitError) as caught:
        ask(client, "[[fail:quota]]")
    assert caught.value.type == "insufficient_quota"
    assert "retry-after" not in caught.value.response.headers


def test_error_model_fails_without_changing_the_prompt():
    with fake_openai() as (_, client), pytest.raises(openai.InternalServerError):
        ask(client, "plain prompt", model="fake-error-500")


def test_invalid_and_missing_api_keys_are_rejected():
    with fake_openai(api_key="sk-invalid") as (server, client):
        with pytest.raises(openai.AuthenticationError):
            ask(client, "hello")
        status, body = http_json(f"{server.url}/chat/completions",
                                 {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 401
    assert body["error"]["code"] == "missing_api_key"
    assert set(body["error"]) == {"message", "type", "code", "param"}


def test_counted_failure_fails_first_attempts_then_succeeds():
    prompt = "flaky upstream [[fail:500x2]]"
    with fake_openai() as (_, client):
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                ask(client, prompt)
        assert ask(client, prompt).choices[0].message.content == "echo: " + prompt
        # The counter is keyed by prompt text, so another prompt starts afresh.
        with pytest.raises(openai.InternalServerError):
            ask(client, "other prompt [[fail:500x2]]")


def test_counted_failure_lets_client_retries_recover():
    with fake_openai(max_retries=2) as (server, client):
        assert ask(client, "[[fail:500x2]]").choices[0].message.content == "echo: [[fail:500x2]]"
    assert len(server.requests) == 3


def test_sleep_directive_past_client_timeout_raises_timeout():
    with fake_openai(timeout=0.5) as (_, client):
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            ask(client, "stall [[sleep:2]]")
        assert time.monotonic() - started < 1.5


def test_script_queue_is_served_in_order_then_back_to_normal():
    with fake_openai() as (server, client):
        status, body = http_json(control_url(server, "/_fake/script"), {"responses": [
            {"status": 429, "headers": {"Retry-After": "3"},
             "body": {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded",
                                "param": None}}},
            {"status": 503},
            {"status": 200, "body": {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
                                     "model": "fake-model", "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "scripted"}}]}},
        ]})
        assert (status, body) == (200, {"queued": 3})
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, "one")
        assert caught.value.response.headers["retry-after"] == "3"
        with pytest.raises(openai.InternalServerError):
            ask(client, "two")
        assert ask(client, "three").choices[0].message.content == "scripted"
        assert ask(client, "four").choices[0].message.content == "echo: four"


def test_a_scripted_response_for_a_model_goes_only_to_that_model():
    with fake_openai() as (server, client):
        status, body = http_json(control_url(server, "/_fake/script"), {"responses": [
            {"model": "fake-model", "status": 404, "body": {"error": {
                "message": "The model does not exist.", "type": "invalid_request_error", "code": "model_not_found"}}},
            {"content": "for anyone"},
        ]})
        assert (status, body) == (200, {"queued": 2})
        # The other model skips the response meant for fake-model and takes the next one for any model.
        assert ask(client, "one", model="gpt-4o-mini").choices[0].message.content == "for anyone"
        assert ask(client, "two", model="gpt-4o-mini").choices[0].message.content == "echo: two"
        with pytest.raises(openai.NotFoundError):
            ask(client, "three")
        assert ask(client, "four").choices[0].message.content == "echo: four"
        assert http_json(control_url(server, "/_fake/script"), {"responses": [{"model": 5}]})[0] == 400


def test_recorded_requests_never_expose_the_api_key():
    with fake_openai() as (server, client):
        ask(client, "remember me")
        with urllib.request.urlopen(control_url(server, "/_fake/requests"), timeout=10) as response:
            raw = response.read().decode()
    assert API_KEY not in raw
    [recorded] = json.loads(raw)["requests"]
    assert recorded["authorization_present"] is True
    assert recorded["messages"] == [{"role": "user", "content": "remember me"}]


def test_reset_clears_requests_counters_and_script():
    with fake_openai() as (server, client):
        with pytest.raises(openai.InternalServerError):
            ask(client, "[[fail:500x1]]")
        http_json(control_url(server, "/_fake/script"), {"responses": [{"status": 500}]})
        assert http_json(control_url(server, "/_fake/reset"), {}) == (200, {"ok": True})
        assert server.requests == []
        with pytest.raises(openai.InternalServerError):
            ask(client, "[[fail:500x1]]")
        assert ask(client, "fine").choices[0].message.content == "echo: fine"
        assert http_json(control_url(server, "/_fake/health")) == (200, {"ok": True})


def test_concurrent_requests_overlap_their_latency():
    with fake_openai(latency=0.5) as (_, client), ThreadPoolExecutor(max_workers=50) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda n: ask(client, f"request {n}").choices[0].message.content, range(50)))
        elapsed = time.monotonic() - started
    assert answers == [f"echo: request {n}" for n in range(50)]
    assert elapsed < 5


def test_stats_count_calls_in_flight_and_their_peak():
    with fake_openai() as (server, client), ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda n: ask(client, f"[[sleep:0.5]] call {n}"), range(6)))
        status, stats = http_json(control_url(server, "/_fake/stats"))
        assert status == 200
        assert stats == {"in_flight": 0, "peak_in_flight": 6, "chat_requests": 6, "rate_limited": 0}
        server.reset()
        ask(client, "one at a time")
        assert server.stats == {"in_flight": 0, "peak_in_flight": 1, "chat_requests": 1, "rate_limited": 0}


def read_line(stream, timeout):
    """Read one line from a pipe, failing instead of hanging if none arrives."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output from the fake server within %s s" % timeout
    return stream.readline()


def test_cli_prints_url_serves_and_exits_on_sigterm():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "promptbeat.fakellm", "--port", "0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = read_line(process.stdout, timeout=20)
        assert line.startswith("FAKELLM_URL=http://127.0.0.1:")
        url = line.strip().split("=", 1)[1]
        assert url.endswith("/v1")
        with openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0) as client:
            assert ask(client, "over the wire").choices[0].message.content == "echo: over the wire"
        os.kill(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout == ""


# ---- Files and batches ---------------------------------------------------------------------------

def batch_file(*prompts, model="fake-model"):
    """A Batch API input file: one chat request per prompt, custom ids r0, r1, ..."""
    return "".join(json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": model, "messages": [{"role": "user", "content": prompt}]}}) + "\n"
                   for n, prompt in enumerate(prompts)).encode()


def submit(client, *prompts):
    uploaded = client.files.create(file=("runs.jsonl", batch_file(*prompts)), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")


def lines_of(client, file_id):
    return {line["custom_id"]: line for line in map(json.loads, client.files.content(file_id).text.splitlines())}


def test_batch_answers_each_line_as_a_chat_completion():
    with fake_openai() as (server, client):
        uploaded = client.files.create(file=("runs.jsonl", batch_file("one", "two")), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes > 0
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        assert batch.status == "in_progress" and batch.request_counts.total == 2
        assert server.requests == []  # nothing is answered before the batch ends
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.error_file_id is None
        assert done.request_counts.completed == 2
        output = lines_of(client, done.output_file_id)
    assert output["r0"]["response"]["status_code"] == 200
    assert output["r0"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: one"
    assert output["r1"]["response"]["body"]["usage"]["total_tokens"] == 3
    assert [r["messages"][-1]["content"] for r in server.requests] == ["one", "two"]


def test_batch_stays_in_progress_for_its_scripted_polls():
    with fake_openai() as (server, client):
        assert http_json(control_url(server, "/_fake/batch_script"), {"batches": [{"polls": 2}]})[0] == 200
        batch = submit(client, "slow")
        assert [client.batches.retrieve(batch.id).status for _ in range(3)] == ["in_progress", "in_progress",
                                                                                  "completed"]
        assert server.batches[batch.id]["polls"] == 3


def test_per_line_error_goes_to_the_error_file_alone():
    with fake_openai() as (_, client):
        done = client.batches.retrieve(submit(client, "fine", "[[fail:400]] broken").id)
        assert done.status == "completed"
        assert done.request_counts.completed == 1 and done.request_counts.failed == 1
        assert set(lines_of(client, done.output_file_id)) == {"r0"}
        error = lines_of(client, done.error_file_id)["r1"]
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["message"] == "Invalid request."


def test_expired_batch_puts_every_line_in_the_error_file():
    with fake_openai() as (server, client):
        http_json(control_url(server, "/_fake/batch_script"), {"batches": [{"outcome": "expired"}]})
        done = client.batches.retrieve(submit(client, "a", "b").id)
        assert done.status == "expired" and done.output_file_id is None and done.expired_at
        errors = lines_of(client, done.error_file_id)
    assert {line["error"]["code"] for line in errors.values()} == {"batch_expired"}
    assert server.requests == []


def test_failed_batch_reports_its_errors_and_cancel_ends_a_batch():
    with fake_openai() as (server, client):
        http_json(control_url(server, "/_fake/batch_script"), {"batches": [{"outcome": "failed"}, {"polls": 5}]})
        failed = client.batches.retrieve(submit(client, "a").id)
        assert failed.status == "failed" and failed.errors.data[0].message
        pending = submit(client, "b")
        assert client.batches.cancel(pending.id).status == "cancelled"
        assert client.batches.retrieve(pending.id).status == "cancelled"


def test_unknown_batch_is_404_and_bad_scripts_are_refused():
    with fake_openai() as (server, client):
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_missing")
        with pytest.raises(openai.NotFoundError):
            client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                                  completion_window="24h")
        for script in ({"polls": -1}, {"polls": "2"}, {"outcome": "exploded"}, {"seconds": 1e9}, "x"):
            status, body = http_json(control_url(server, "/_fake/batch_script"), {"batches": [script]})
            assert status == 400 and body["error"]["param"] == "batches"
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="batch")
        server.reset()
        assert server.batches == {}


def test_an_rpm_limit_answers_429_with_retry_after_ms_and_arrivals_are_recorded():
    with fake_openai() as (server, client):
        status, _ = http_json(control_url(server, "/_fake/limits"), {"rpm": 2})
        assert status == 200
        before = time.time()
        ask(client, "one")
        ask(client, "two")
        with pytest.raises(openai.RateLimitError) as refused:
            ask(client, "three")
        wait_ms = int(refused.value.response.headers["retry-after-ms"])
        assert 0 < wait_ms <= 60_000
        status, body = http_json(control_url(server, "/_fake/arrivals"))
        assert [a["status"] for a in body["arrivals"]] == [None, None, 429]
        assert all(a["time"] >= before for a in body["arrivals"])
        assert http_json(control_url(server, "/_fake/stats"))[1]["rate_limited"] == 1
        # A reset lifts the limit, as it forgets everything else.
        http_json(control_url(server, "/_fake/reset"), {})
        ask(client, "four")


@pytest.mark.parametrize("rpm", [0, -1, "5", True, 1.5])
def test_an_rpm_limit_must_be_a_positive_whole_number(rpm):
    with fake_openai() as (server, _):
        status, body = http_json(control_url(server, "/_fake/limits"), {"rpm": rpm})
        assert status == 400 and body["error"]["param"] == "rpm"


def test_scripted_answers_carry_rate_limit_headers_to_the_client():
    with fake_openai() as (server, client):
        http_json(control_url(server, "/_fake/script"), {"responses": [
            {"content": "ok", "headers": {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}},
            {"status": 429, "headers": {"retry-after-ms": "1500"}}]})
        raw = client.chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert (raw.headers["x-ratelimit-remaining-requests"], raw.headers["x-ratelimit-reset-requests"]) == ("0", "6m0s")
        with pytest.raises(openai.RateLimitError) as refused:
            ask(client, "again")
        assert refused.value.response.headers["retry-after-ms"] == "1500"
