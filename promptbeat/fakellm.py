"""A fake OpenAI-compatible HTTP server with scriptable failures, for tests, benchmarks and demos."""

import argparse
import email.parser
import email.policy
import json
import logging
import re
import signal
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger(__name__)

MODELS = ("fake-model", "gpt-4o-mini")
INVALID_API_KEY = "sk-invalid"
ERROR_MODEL = "fake-error-500"
# Answers 400 to response_format json_schema, as a server without structured outputs does; JSON mode works.
JSON_MODE_ONLY_MODEL = "fake-json-mode-only"
# Lazy kind so that "500x2" splits into kind "500" and count 2.
FAIL_DIRECTIVE = re.compile(r"\[\[fail:([a-z0-9]+?)(?:x(\d+))?\]\]")
SLEEP_DIRECTIVE = re.compile(r"\[\[sleep:(\d+(?:\.\d+)?)\]\]")
# kind -> (status, type, code, message), modelled on real OpenAI error bodies.
FAILURES = {
    "500": (500, "server_error", "server_error", "The server had an error while processing your request."),
    "429": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    "quota": (429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota."),
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "403": (403, "invalid_request_error", "unsupported_country_region_territory",
            "Country, region, or territory not supported."),
    "400": (400, "invalid_request_error", "invalid_request_error", "Invalid request."),
    "404": (404, "invalid_request_error", "model_not_found", "The model does not exist."),
}
RATE_LIMIT_HEADERS = {"Retry-After": "1", "retry-after-ms": "1000"}
# How a scripted batch ends (POST /_fake/batch_script), and the provider's words for each.
BATCH_OUTCOMES = ("completed", "expired", "failed", "cancelled")
BATCH_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
BATCH_FAILED_MESSAGE = "The batch input file is invalid."


def error_body(message, type_, code=None, param=None):
    """Build an error body in OpenAI's shape."""
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def failure_response(kind):
    """Return (status, body, headers) for a named failure kind."""
    status, type_, code, message = FAILURES[kind]
    headers = RATE_LIMIT_HEADERS if code == "rate_limit_exceeded" else {}
    return status, error_body(message, type_, code), headers


def message_text(content):
    """Flatten message content, which may be a string or a list of text parts."""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def completion_body(model, messages, content=None):
    """Build a chat.completion answering content, by default an echo of the last user message."""
    user_texts = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if content is None:
        content = "echo: " + (user_texts[-1] if user_texts else "")
    prompt_tokens = max(1, sum(len(message_text(m.get("content")).split()) for m in messages))
    completion_tokens = len(content.split())
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def refuses_format(model, response_format):
    """Whether the model refuses this response_format (JSON_MODE_ONLY_MODEL refuses json_schema)."""
    return (model == JSON_MODE_ONLY_MODEL and isinstance(response_format, dict)
            and response_format.get("type") == "json_schema")


class _HTTPServer(ThreadingHTTPServer):
    """Thread-per-connection server with a deep accept backlog for bursts of clients."""

    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class FakeLLMHandler(BaseHTTPRequestHandler):
    """Route requests to the chat, models and /_fake control endpoints."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's
    # delayed ACK, so every answer would wait out the client's delayed-ACK timer.
    disable_nagle_algorithm = True
    timeout = 60  # drop idle keep-alive connections so their threads do not pile up

    def do_GET(self):
        fake = self.server.fake
        routes = {"/v1/models": lambda: {"object": "list", "data": [
                      {"id": m, "object": "model", "created": 0, "owned_by": "fakellm"} for m in MODELS]},
                  "/_fake/requests": lambda: {"requests": fake.requests},
                  "/_fake/arrivals": lambda: {"arrivals": fake.arrivals},
                  "/_fake/stats": lambda: fake.stats,
                  "/_fake/health": lambda: {"ok": True}}
        path = self.path.split("?")[0]
        if path.startswith(("/v1/files/", "/v1/batches/")):
            return self.send_batch_answer(fake.get_batch_resource(path, self._key()))
        route = routes.get(path)
        if path == "/v1/models":
            # Listing models needs a valid key, as on the real API: it is how connections are tested.
            scheme, _, key = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                return self.send_json(401, error_body("You didn't provide an API key.", "invalid_request_error",
                                                      "missing_api_key"))
            if key.strip() == INVALID_API_KEY:
                return self.send_json(*failure_response("401")[:2])
        if route is None:
            return self.send_json(404, error_body("Unknown path " + self.path, "invalid_request_error"))
        self.send_json(200, route())

    def _key(self):
        scheme, _, key = self.headers.get("Authorization", "").partition(" ")
        return key.strip() if scheme.lower() == "bearer" else ""

    def send_batch_answer(self, answer):
        """Send a files or batches answer: (status, JSON body) or (status, raw bytes)."""
        status, body = answer
        if isinstance(body, bytes):
            return self.send_raw(status, body, "application/octet-stream")
        return self.send_json(status, body)

    def do_POST(self):
        fake = self.server.fake
        if self.path == "/v1/files":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self.send_batch_answer(fake.upload(self.headers.get("Content-Type", ""), body, self._key()))
        try:
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return self.send_json(400, error_body("Body must be a JSON object.", "invalid_request_error"))
        if self.path == "/v1/chat/completions":
            messages = payload.get("messages")
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                return self.send_json(400, error_body("messages must be a list of objects.",
                                                      "invalid_request_error", param="messages"))
            return self.send_json(*fake.answer_chat(payload, dict(self.headers.items())))
        if self.path == "/_fake/script":
            responses = payload.get("responses")
            if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
                return self.send_json(400, error_body("responses must be a list of objects.",
                                                      "invalid_request_error", param="responses"))
            if not all(isinstance(r.get("content", ""), str) and isinstance(r.get("model", ""), str)
                       for r in responses):
                return self.send_json(400, error_body("A response's content and model must be text.",
                                                      "invalid_request_error", param="responses"))
            return self.send_json(200, {"queued": fake.queue_responses(responses)})
        if self.path == "/v1/batches":
            return self.send_json(*fake.create_batch(payload, dict(self.headers.items())))
        if self.path.startswith("/v1/batches/") and self.path.endswith("/cancel"):
            return self.send_json(*fake.cancel_batch(self.path.split("/")[3], self._key()))
        if self.path == "/_fake/batch_script":
            return self.send_json(*fake.script_batches(payload.get("batches")))
        if self.path == "/_fake/reset":
            fake.reset()
            return self.send_json(200, {"ok": True})
        if self.path == "/_fake/limits":
            rpm = payload.get("rpm")
            if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 1):
                return self.send_json(400, error_body("rpm must be a positive whole number or null.",
                                                      "invalid_request_error", param="rpm"))
            fake.rpm_limit = rpm
            return self.send_json(200, {"rpm": rpm})
        self.send_json(404, error_body("Unknown path " + self.path, "invalid_request_error"))

    def send_json(self, status, body, headers=None):
        """Write a JSON response with an exact Content-Length so keep-alive works."""
        self.send_raw(status, json.dumps(body).encode(), "application/json", headers)

    def send_raw(self, status, data, content_type, headers=None):
        """Write a response body as it is, with an exact Content-Length."""
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, str(value))
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout fired during a scripted sleep).
            self.close_connection = True

    def log_message(self, format, *args):
        logger.info("%s %s", self.address_string(), format % args)


class FakeLLMServer:
    """An in-process fake OpenAI server; use as a context manager or call start()/stop()."""

    def __init__(self, host="127.0.0.1", port=0, latency=0.0, rpm_limit=None, rate_window=60.0):
        self.host, self._port, self.latency = host, port, latency
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = self._thread = None
        self.reset()
        # Like a provider's requests-per-minute limit: a chat request beyond rpm_limit * rate_window / 60
        # accepted in the last rate_window seconds is answered 429 with retry-after-ms (POST /_fake/limits
        # sets it; providers enforce over windows shorter than a minute). None: no limit.
        self.rpm_limit, self.rate_window = rpm_limit, rate_window

    @property
    def port(self):
        """The bound port (the requested one until started)."""
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self):
        """Base URL for openai.OpenAI(base_url=...), ending in /v1."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self):
        """A copy of the recorded chat requests, oldest first."""
        with self._lock:
            return [dict(r) for r in self._requests]

    @property
    def arrivals(self):
        """When each chat request arrived (seconds since the epoch), oldest first, and whether it was refused 429."""
        with self._lock:
            return [{"time": r["time"], "status": r.get("status")} for r in self._requests]

    @property
    def stats(self):
        """Chat calls in flight now, the most seen at once since the last reset, the total, and 429s."""
        with self._lock:
            return {"in_flight": self._in_flight, "peak_in_flight": self._peak_in_flight,
                    "chat_requests": len(self._requests),
                    "rate_limited": sum(1 for r in self._requests if r.get("status") == 429)}

    def reset(self):
        """Forget recorded requests, failure counters, scripted responses, files, batches, the in-flight peak and
        the rpm limit."""
        with self._lock:
            self._requests, self._fail_counts, self._script = [], {}, []
            self._in_flight = self._peak_in_flight = 0
            self._files, self._batches, self._batch_script = {}, {}, []
            self._accepted = deque()
            self.rpm_limit = None

    @property
    def batches(self):
        """A copy of every batch created, by id, with its file ids, status and how often it was read."""
        with self._lock:
            return {batch_id: dict(state.batch, polls=state.polls) for batch_id, state in self._batches.items()}

    def script_batches(self, scripts):
        """Queue how the next batches created behave: each {"polls": N, "seconds": S, "outcome": ...}.

        A batch stays in_progress for its first N reads (GET /v1/batches/{id}) and S seconds, then
        ends with its outcome: completed (each line answered as a chat request would be, scripted
        failures in the error file), expired (every line in the error file as batch_expired),
        failed (the batch's own errors, no files) or cancelled. Unscripted batches complete at once.
        """
        if not isinstance(scripts, list) or not all(_valid_batch_script(s) for s in scripts):
            return 400, error_body('batches must be a list of {"polls": int >= 0, "seconds": number >= 0, '
                                   f'"outcome": one of {", ".join(BATCH_OUTCOMES)}}}.', "invalid_request_error",
                                   param="batches")
        with self._lock:
            self._batch_script.extend(scripts)
            return 200, {"queued": len(self._batch_script)}

    def upload(self, content_type, body, key):
        """POST /v1/files: store a multipart upload's file; returns (status, file object)."""
        if not key:
            return 401, error_body("You didn't provide an API key.", "invalid_request_error", "missing_api_key")
        parts = _form_parts(content_type, body)
        if "file" not in parts:
            return 400, error_body("A multipart form with a file is required.", "invalid_request_error", param="file")
        filename, data = parts["file"]
        purpose = parts.get("purpose", (None, b""))[1].decode(errors="replace")
        return 200, self._store_file(filename or "upload.jsonl", data, purpose)

    def _store_file(self, filename, data, purpose):
        record = {"id": "file-" + uuid.uuid4().hex[:24], "object": "file", "bytes": len(data),
                  "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed"}
        with self._lock:
            self._files[record["id"]] = (record, data)
        return record

    def create_batch(self, payload, headers):
        """POST /v1/batches: a batch over an uploaded JSONL file; returns (status, batch object)."""
        key = _bearer(headers)
        if not key:
            return 401, error_body("You didn't provide an API key.", "invalid_request_error", "missing_api_key")
        with self._lock:
            stored = self._files.get(payload.get("input_file_id"))
            script = self._batch_script.pop(0) if self._batch_script else {}
        if stored is None:
            return 404, error_body("No such File object: " + str(payload.get("input_file_id")),
                                   "invalid_request_error", param="input_file_id")
        if payload.get("endpoint") != "/v1/chat/completions" or payload.get("completion_window") != "24h":
            return 400, error_body("endpoint must be /v1/chat/completions and completion_window 24h.",
                                   "invalid_request_error")
        now = int(time.time())
        lines = stored[1].decode(errors="replace").splitlines()
        batch = {"id": "batch_" + uuid.uuid4().hex[:24], "object": "batch", "endpoint": payload["endpoint"],
                 "input_file_id": payload["input_file_id"], "completion_window": "24h", "status": "in_progress",
                 "created_at": now, "in_progress_at": now, "expires_at": now + 24 * 3600,
                 "metadata": payload.get("metadata"), "output_file_id": None, "error_file_id": None, "errors": None,
                 "request_counts": {"total": len([line for line in lines if line.strip()]), "completed": 0,
                                    "failed": 0}}
        state = _Batch(batch=batch, lines=lines, headers=headers, polls_left=int(script.get("polls", 0)),
                       ready_at=time.monotonic() + float(script.get("seconds", 0)),
                       outcome=script.get("outcome", "completed"))
        with self._lock:
            self._batches[batch["id"]] = state
        return 200, dict(batch)

    def cancel_batch(self, batch_id, key):
        """POST /v1/batches/{id}/cancel: a batch not yet ended is cancelled."""
        with self._lock:
            state = self._batches.get(batch_id)
        if state is None or not key:
            return 404, error_body("No such batch: " + batch_id, "invalid_request_error")
        with self._lock:
            ending = state.batch["status"] == "in_progress"
            if ending:
                state.outcome, state.batch["status"] = "cancelled", "finalizing"
        if ending:
            self._finish_batch(state)
        return 200, dict(state.batch)

    def get_batch_resource(self, path, key):
        """GET /v1/batches/{id}, /v1/files/{id} or /v1/files/{id}/content; returns (status, body)."""
        if not key:
            return 401, error_body("You didn't provide an API key.", "invalid_request_error", "missing_api_key")
        parts = path.strip("/").split("/")
        if parts[1] == "batches" and len(parts) == 3:
            with self._lock:
                state = self._batches.get(parts[2])
                ending = state is not None and state.read()
            if state is None:
                return 404, error_body("No such batch: " + parts[2], "invalid_request_error")
            if ending:
                self._finish_batch(state)
            return 200, dict(state.batch)
        with self._lock:
            stored = self._files.get(parts[2])
        if stored is None or len(parts) > 4 or (len(parts) == 4 and parts[3] != "content"):
            return 404, error_body("No such File object: " + parts[2], "invalid_request_error")
        return (200, stored[1]) if len(parts) == 4 else (200, dict(stored[0]))

    def _finish_batch(self, state):
        """End a batch with its outcome, answering its lines into an output and an error file."""
        batch, now = state.batch, int(time.time())
        outputs, errors = [], []
        if state.outcome == "failed":
            batch["errors"] = {"object": "list", "data": [
                {"code": "invalid_request", "message": BATCH_FAILED_MESSAGE, "line": None, "param": None}]}
        for line in state.lines if state.outcome != "failed" else ():
            if not line.strip():
                continue
            request = json.loads(line)
            custom_id = request.get("custom_id")
            if state.outcome != "completed":
                code = "batch_expired" if state.outcome == "expired" else "batch_cancelled"
                message = BATCH_EXPIRED_MESSAGE if state.outcome == "expired" else "The batch was cancelled."
                errors.append({"id": "batch_req_" + uuid.uuid4().hex[:24], "custom_id": custom_id, "response": None,
                               "error": {"code": code, "message": message}})
                continue
            body = request.get("body") or {}
            if not isinstance(body.get("messages"), list):
                body["messages"] = []
            status, answer, _ = self.answer_chat(body, state.headers)
            entry = {"id": "batch_req_" + uuid.uuid4().hex[:24], "custom_id": custom_id, "error": None,
                     "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": answer}}
            (outputs if status < 400 else errors).append(entry)
        if outputs:
            batch["output_file_id"] = self._store_file("batch_output.jsonl", _jsonl(outputs), "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._store_file("batch_errors.jsonl", _jsonl(errors), "batch_output")["id"]
        batch["request_counts"] = {"total": batch["request_counts"]["total"], "completed": len(outputs),
                                   "failed": len(errors)}
        batch["status"] = state.outcome
        batch[{"completed": "completed_at", "expired": "expired_at", "failed": "failed_at",
               "cancelled": "cancelled_at"}[state.outcome]] = now

    def queue_responses(self, responses):
        """Queue raw responses to return, in order, to the next chat requests.

        A response with a "model" goes only to a request for that model (so that one model can fail
        while another answers); one without goes to the next request for any model.
        """
        with self._lock:
            self._script.extend(responses)
            return len(self._script)

    def start(self):
        """Bind and serve in a background thread; returns self."""
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self._port), FakeLLMHandler)
        self._httpd.fake = self
        # A short poll interval keeps stop() fast; the default 0.5 s adds up across many tests.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakellm", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, wake sleeping handlers and close the listening socket."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def answer_chat(self, payload, headers):
        """Record a chat request, wait out its latency and return (status, body, headers)."""
        headers = {k.lower(): v for k, v in headers.items()}
        scheme, _, key = headers.pop("authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        model, messages = payload.get("model", ""), payload["messages"]
        user_texts = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
        prompt = user_texts[-1] if user_texts else ""
        refused = refuses_format(model, payload.get("response_format"))
        with self._lock:
            # Only the key's presence is stored, so /_fake/requests cannot leak it.
            record = {"model": model, "messages": messages, "headers": headers,
                      "response_format": payload.get("response_format"),
                      "authorization_present": bool(key), "time": time.time()}
            self._requests.append(record)
            limited = self._over_limit(record["time"])
            if limited is not None:
                record["status"] = 429
                return limited
            # Pop on arrival so concurrent callers get scripted responses in arrival order; a request
            # refused for its response_format leaves the script to the request asked again.
            scripted = (self._next_scripted(model) if self._script and key and key != INVALID_API_KEY and not refused
                        else None)
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            sleep = SLEEP_DIRECTIVE.search(prompt)
            self._stopping.wait(self.latency + (float(sleep.group(1)) if sleep else 0.0))
            return self._decide(key, payload, prompt, scripted)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _next_scripted(self, model):
        """Take the first queued response for this model: one that names it, or one that names none."""
        for index, response in enumerate(self._script):
            if response.get("model", model) == model:
                return self._script.pop(index)

    def _over_limit(self, now):
        """Under rpm_limit, count this request in the window: None if accepted, else the 429 to answer.

        Called with the lock held.
        """
        if self.rpm_limit is None:
            return None
        window = self.rate_window
        while self._accepted and self._accepted[0] <= now - window:
            self._accepted.popleft()
        if len(self._accepted) >= max(1, self.rpm_limit * window / 60):
            wait_ms = max(1, int((self._accepted[0] + window - now) * 1000))
            status, body, _ = failure_response("429")
            return status, body, {"retry-after-ms": str(wait_ms), "Retry-After": str(-(-wait_ms // 1000))}
        self._accepted.append(now)
        return None

    def _decide(self, key, payload, prompt, scripted):
        """Pick the response: auth errors, then scripted, then error model, then directives."""
        model, messages = payload.get("model", ""), payload["messages"]
        if not key:
            return 401, error_body("You didn't provide an API key.", "invalid_request_error", "missing_api_key"), {}
        if key == INVALID_API_KEY:
            return failure_response("401")
        if refuses_format(model, payload.get("response_format")):
            return 400, error_body("response_format json_schema is not supported by this model.",
                                   "invalid_request_error", param="response_format"), {}
        if scripted is not None:
            status = scripted.get("status", 200)
            default = (completion_body(model, messages, scripted.get("content")) if status < 400
                       else error_body("Scripted error.", "server_error"))
            return status, scripted.get("body", default), scripted.get("headers", {})
        if payload.get("stream"):
            return 400, error_body("stream is not supported by the fake server.", "invalid_request_error"), {}
        if model == ERROR_MODEL:
            return failure_response("500")
        fail = FAIL_DIRECTIVE.search(prompt)
        if fail and fail.group(1) in FAILURES and self._should_fail(prompt, fail.group(2)):
            return failure_response(fail.group(1))
        return 200, completion_body(model, messages), {}

    def _should_fail(self, prompt, limit):
        """Count this prompt's attempt; 'xN' directives fail only the first N attempts."""
        with self._lock:
            self._fail_counts[prompt] = attempt = self._fail_counts.get(prompt, 0) + 1
        return limit is None or attempt <= int(limit)


class _Batch:
    """A batch the fake server holds: the object it answers with and how it is scripted to end."""

    def __init__(self, batch, lines, headers, polls_left, ready_at, outcome):
        self.batch, self.lines, self.headers = batch, lines, headers
        self.polls_left, self.ready_at, self.outcome, self.polls = polls_left, ready_at, outcome, 0

    def read(self):
        """Count a read; whether it ends the batch (its scripted reads and seconds are over), which moves it
        to finalizing so that one read alone answers its lines."""
        self.polls += 1
        self.polls_left -= 1
        if self.batch["status"] != "in_progress" or self.polls_left >= 0 or time.monotonic() < self.ready_at:
            return False
        self.batch["status"] = "finalizing"
        return True


def _valid_batch_script(script):
    if not isinstance(script, dict) or script.get("outcome", "completed") not in BATCH_OUTCOMES:
        return False
    polls, seconds = script.get("polls", 0), script.get("seconds", 0)
    return (type(polls) is int and polls >= 0 and type(seconds) in (int, float) and 0 <= seconds <= 3600)


def _bearer(headers):
    scheme, _, key = {k.lower(): v for k, v in headers.items()}.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def _form_parts(content_type, body):
    """The parts of a multipart/form-data body: {name: (filename, bytes)}."""
    if not content_type.startswith("multipart/form-data"):
        return {}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        return {}
    return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


def _jsonl(entries):
    return "".join(json.dumps(entry) + "\n" for entry in entries).encode()


def main(argv=None):
    """Run the fake server in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m promptbeat.fakellm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat request")
    parser.add_argument("--rpm", type=int, default=None, help="answer 429 beyond this many chat requests a minute")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds over which --rpm is enforced")
    parser.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    with FakeLLMServer(args.host, args.port, args.latency, rpm_limit=args.rpm, rate_window=args.rate_window) as server:
        print(f"FAKELLM_URL={server.url}", flush=True)
        stop_requested.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
