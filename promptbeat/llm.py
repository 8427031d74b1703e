"""Chat completions through the official openai client, with errors made readable."""
import logging
import threading
from dataclasses import dataclass

import openai

logger = logging.getLogger(__name__)


class LLMError(Exception):
    """A completion failed; the message is safe to show and store."""


@dataclass(frozen=True)
class Completion:
    """A model's answer and what it cost in tokens."""

    output: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


_clients = {}
_clients_lock = threading.Lock()


def client_for(settings):
    """A client per endpoint and key, made lazily so each worker process builds its own after fork."""
    if not settings.openai_api_key and not settings.openai_base_url:
        raise LLMError(
            "OPENAI_API_KEY is not set: set it to call the OpenAI API, "
            "or set OPENAI_BASE_URL to use an OpenAI-compatible server such as Ollama or vLLM."
        )
    # Local servers such as Ollama accept any key; the SDK insists on one.
    api_key = settings.openai_api_key or "not-needed"
    cache_key = (settings.openai_base_url, api_key, settings.llm_timeout_seconds)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            client = openai.OpenAI(
                api_key=api_key,
                base_url=settings.openai_base_url,
                timeout=settings.llm_timeout_seconds,
                max_retries=0,
            )
            _clients[cache_key] = client
        return client


def build_messages(prompt, system_prompt=None):
    """The chat messages for a task's prompts."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt})
    return messages


def redact(message, settings):
    """Remove the API key from text that may be stored or shown."""
    key = settings.openai_api_key
    return message.replace(key, "***") if key and message else message


def complete(settings, *, model, prompt, system_prompt=None, temperature=None, max_tokens=None):
    """Run one chat completion; raises LLMError with a readable message on any failure."""
    client = client_for(settings)
    params = {"model": model, "messages": build_messages(prompt, system_prompt)}
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    try:
        return _create(client, settings, params)
    except LLMError as exc:
        raise LLMError(redact(str(exc), settings)) from None


def _create(client, settings, params):
    try:
        response = client.chat.completions.create(**params)
    except openai.APIStatusError as exc:
        raise LLMError(f"{type(exc).__name__} (HTTP {exc.status_code}): {_server_message(exc)}") from None
    except openai.APITimeoutError:
        raise LLMError(f"APITimeoutError: no answer within {settings.llm_timeout_seconds:g} s") from None
    except openai.APIConnectionError as exc:
        raise LLMError(f"APIConnectionError: could not reach the model server ({exc.__cause__ or exc})") from None
    except openai.OpenAIError as exc:
        raise LLMError(f"{type(exc).__name__}: {exc}") from None

    choice = response.choices[0] if response.choices else None
    usage = response.usage
    return Completion(
        output=(choice.message.content or "") if choice else "",
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        total_tokens=usage.total_tokens if usage else None,
    )


def _server_message(exc):
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
