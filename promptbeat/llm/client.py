"""Chat completions through the official openai client, with errors classified and made readable."""
import itertools
import json
import logging
import threading
from dataclasses import dataclass, field

import httpx2 as httpx
import openai
from openai._constants import RAW_RESPONSE_HEADER

from promptbeat import versions
from promptbeat.llm import netguard
from promptbeat.ratelimits import provider

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """Where to send a completion: an OpenAI-compatible base URL, its key and extra headers.

    Header values are secrets like the key. Without allow_private, calls connect only to public
    addresses of the URL's host, checked as each request is sent (promptbeat.llm.netguard).
    """

    base_url: str | None
    api_key: str | None = field(default=None, repr=False)
    headers: tuple = field(default=(), repr=False)
    name: str = "default"
    allow_private: bool = True
    # The connection's rate limits (promptbeat.ratelimits.limits.RateLimits), None for none.
    limits: object = field(default=None, compare=False)

    @property
    def secrets(self):
        """The key and header values: what must never be stored or shown in an error."""
        return (self.api_key, *(value for _, value in self.headers))


class LLMError(Exception):
    """A completion failed; the message is safe to show and store.

    error_class names the kind of failure (RateLimitError, InsufficientQuota, APITimeoutError...),
    status is the HTTP status if there was one, retry_after the server's hint in seconds, headers
    the answer's rate-limit headers (promptbeat.ratelimits.provider.HEADERS).
    """

    def __init__(self, message, error_class="LLMError", status=None, retry_after=None, headers=None):
        super().__init__(message)
        self.error_class, self.status, self.retry_after = error_class, status, retry_after
        self.headers = headers or {}


@dataclass(frozen=True)
class Completion:
    """A model's answer and what it cost in tokens."""

    output: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    # The answer's rate-limit headers (promptbeat.ratelimits.provider.HEADERS), lower-case names.
    headers: dict = field(default_factory=dict, compare=False)


POOL_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
# Calls take an endpoint's clients in turn, up to this many (each made on first use). httpcore's
# pool walks every one of its connections on each request and each response, so with hundreds of
# calls in flight through one pool that walk grows with every call added (docs/performance.md).
CLIENTS_PER_ENDPOINT = 16
_clients = {}
_clients_lock = threading.Lock()
_turns = itertools.count()


def client_for(endpoint):
    """A client for the endpoint, made lazily so each worker process builds its own after fork.

    Each client shares its HTTP connection pool among the threads or greenlets that use it;
    httpx's client is safe to share between them.
    """
    if not endpoint.api_key and not endpoint.base_url:
        raise LLMError(
            "OPENAI_API_KEY is not set: set it to call the OpenAI API, "
            "or set OPENAI_BASE_URL to use an OpenAI-compatible server such as Ollama or vLLM.",
            error_class="ConfigurationError",
        )
    # Local servers such as Ollama accept any key; the SDK insists on one.
    api_key = endpoint.api_key or "not-needed"
    cache_key = (endpoint.base_url, api_key, endpoint.headers, endpoint.allow_private,
                 next(_turns) % CLIENTS_PER_ENDPOINT)
    client = _clients.get(cache_key)
    if client is None:
        with _clients_lock:
            client = _clients.get(cache_key)
            if client is None:
                client = _clients[cache_key] = _new_client(endpoint, api_key)
    return client


def close_clients():
    """Close every cached client and its connections (a process that outlives its endpoints)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def _new_client(endpoint, api_key):
    if endpoint.allow_private:
        http_client = openai.DefaultHttpxClient(limits=POOL_LIMITS)
    else:
        http_client = openai.DefaultHttpxClient(
            transport=netguard.CheckedTransport("PROMPTBEAT_CONNECTION_ALLOW_PRIVATE", limits=POOL_LIMITS))
    return openai.OpenAI(
        api_key=api_key,
        base_url=endpoint.base_url,
        default_headers=dict(endpoint.headers) or None,
        # promptbeat retries itself (promptbeat.runs.retry), so every attempt is counted and recorded.
        max_retries=0,
        http_client=http_client,
    )


def build_messages(prompt, system_prompt=None):
    """The chat messages for a task's prompts."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt})
    return messages


# Shorter header values (a "1", a "yes") are not secrets and would cut up every message they occur in.
MIN_REDACTED = 4


def redact(message, *secrets):
    """Remove secrets from text that may be stored or shown."""
    for secret in sorted((s for s in secrets if s and len(s) >= MIN_REDACTED), key=len, reverse=True):
        message = message.replace(secret, "***") if message else message
    return message


def complete(endpoint, *, model, prompt, system_prompt=None, temperature=None, max_tokens=None, timeout=120.0,
             response_format=None):
    """Run one chat completion (one attempt); raises LLMError with a readable message on any failure."""
    client = client_for(endpoint)
    params = {"model": model, "messages": build_messages(prompt, system_prompt), "timeout": timeout}
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if response_format is not None:
        params["response_format"] = response_format
    try:
        return _create(client, params)
    except LLMError as exc:
        raise LLMError(redact(str(exc), *endpoint.secrets), exc.error_class, exc.status, exc.retry_after,
                       exc.headers) from None


def through_sdk(endpoint, method, /, **params):
    """Call one SDK method (files, batches) with params (timeout among them); raises LLMError as complete does."""
    try:
        return _call(method, params)
    except LLMError as exc:
        raise LLMError(redact(str(exc), *endpoint.secrets), exc.error_class, exc.status, exc.retry_after) from None


def list_models(endpoint, timeout=15.0):
    """The model ids the endpoint serves: one cheap call that needs no tokens, to test a connection."""
    client = client_for(endpoint)

    def get(*, timeout):
        return client.get("/models", cast_to=object, options={"timeout": timeout})

    try:
        return models_from(_call(get, {"timeout": timeout}))
    except LLMError as exc:
        raise LLMError(redact(str(exc), *endpoint.secrets), exc.error_class, exc.status, exc.retry_after) from None


def models_from(body):
    """The sorted model ids in a model list's JSON ({"data": [{"id": ...}, ...]})."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise LLMError("APIResponseValidationError: the server's answer is not a list of models",
                       "APIResponseValidationError")
    return sorted(item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str))


def _create_through_sdk(client, params):
    """chat.completions.create(), the SDK's own path: what a process uses unless install() was called."""
    # with_raw_response: the same call, with the answer's headers kept for the rate limiter.
    raw = _call(client.chat.completions.with_raw_response.create, params)
    answer = _call(lambda: raw.parse(), {})
    # The SDK builds its ChatCompletion from what the server sent, unvalidated; read it back as that JSON.
    return completion_from(answer.to_dict() if isinstance(answer, openai.BaseModel) else answer,
                           rate_headers(raw.headers))


def _create_by_post(client, params):
    raw = _call(_post_chat_completion(client), params)
    return completion_from(_call(lambda: raw.parse(), {}), rate_headers(raw.headers))


def rate_headers(headers):
    """The rate-limit headers of an answer, by lower-case name: the only ones a run keeps."""
    return {name: headers[name] for name in provider.HEADERS if name in headers}


_create = _create_through_sdk

# _post_chat_completion calls the client's generic post() with cast_to=object and request options as a
# dict, which are the SDK's internals rather than its documented API: the openai versions it was
# written and measured against (tests/worker/test_library_internals.py fails when the installed one leaves them).
WRITTEN_FOR = (versions.WrittenFor("openai", ">=3.60,<4"),)


def install():
    """Post completions through the SDK's generic request method in this process; returns whether it did.

    The worker role calls it (worker/celery.py) unless PROMPTBEAT_FAST_LLM_CALLS is off; with the openai
    SDK outside WRITTEN_FOR it logs a warning and completions keep going through create().
    """
    global _create
    if not versions.supported("promptbeat's direct completion calls (PROMPTBEAT_FAST_LLM_CALLS)", WRITTEN_FOR):
        return False
    _create = _create_by_post
    return True


def completion_from(body, headers=None):
    """The answer and token usage in a chat completion's JSON; servers differ in what they leave out."""
    if not isinstance(body, dict):
        raise LLMError("APIResponseValidationError: the server's answer is not a chat completion object",
                       "APIResponseValidationError")
    choices = body.get("choices")
    first = _object(choices[0]) if isinstance(choices, list) and choices else {}
    message, usage = _object(first.get("message")), _object(body.get("usage"))
    return Completion(
        output=message.get("content") or "",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        total_tokens=usage.get("total_tokens"),
        headers=headers or {},
    )


def _object(value):
    return value if isinstance(value, dict) else {}


def _post_chat_completion(client):
    """POST /chat/completions through the SDK's generic request method; returns the decoded JSON.

    The same request, client and errors as chat.completions.create(), without two costs that
    matter at hundreds of runs a second (docs/performance.md): create()'s typed signature first walks
    all fifty of its parameters against their type declarations, and its ChatCompletion answer
    is built field by field into nested models, of which a run keeps four values. Our parameters
    are plain JSON already, so nothing needs transforming.
    """

    def post(*, timeout, **body):
        # The SDK's raw-response marker, as with_raw_response sets it: the answer comes back with its headers.
        return client.post("/chat/completions", body=body, cast_to=object,
                           options={"timeout": timeout, "headers": {RAW_RESPONSE_HEADER: "true"}})

    return post


def _call(method, params):
    try:
        return method(**params)
    except openai.APIStatusError as exc:
        error_class = type(exc).__name__
        if _error_code(exc) == "insufficient_quota":
            error_class = "InsufficientQuota"
        raise LLMError(f"{error_class} (HTTP {exc.status_code}): {_server_message(exc)}",
                       error_class, exc.status_code, retry_after_seconds(exc.response.headers),
                       rate_headers(exc.response.headers)) from None
    except openai.APITimeoutError:
        raise LLMError(f"APITimeoutError: no answer within {params['timeout']:g} s", "APITimeoutError") from None
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, netguard.RefusedConnection):
            # Permanent, so not retried: the address policy will refuse the next attempt as well.
            raise LLMError(f"AddressRefused: {exc.__cause__}", "AddressRefused") from None
        raise LLMError(f"APIConnectionError: could not reach the model server ({exc.__cause__ or exc})",
                       "APIConnectionError") from None
    except openai.OpenAIError as exc:
        raise LLMError(f"{type(exc).__name__}: {exc}", type(exc).__name__) from None
    except json.JSONDecodeError as exc:
        # Said to be JSON (the SDK decodes only then) but is not: a proxy's error page, a wrong URL.
        raise LLMError(f"APIResponseValidationError: the server's answer is not valid JSON ({exc})",
                       "APIResponseValidationError") from None


def retry_after_seconds(headers):
    """The server's retry hint in seconds: retry-after-ms first (finer), then Retry-After; None if absent."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / scale
        except ValueError:
            continue  # an HTTP-date: rare from model servers; fall back to our own backoff
        if value >= 0:
            return value
    return None


def _error_code(exc):
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return error.get("code") or error.get("type")
    return getattr(exc, "code", None)


def _server_message(exc):
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
