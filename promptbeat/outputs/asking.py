"""Asking the model for an answer: plain text, or JSON for a task's output schema.

A task with a schema asks with response_format json_schema. A server that refuses it (HTTP 400 or
422, as servers without structured outputs answer) is asked again at once in JSON mode
(json_object) with the schema in the instructions, and this process remembers that server and model
so that its later calls go straight to JSON mode.
"""
import logging
import threading
import time

from promptbeat.llm import client as llm
from promptbeat.outputs import schema as schemas

logger = logging.getLogger(__name__)
REFUSED_STATUSES = (400, 422)
# A fallback call gets what is left of the attempt's time, but at least this much.
MIN_FALLBACK_SECONDS = 1.0
_json_schema_refused = set()
_lock = threading.Lock()


def complete(endpoint, *, model, prompt, system_prompt=None, temperature=None, max_tokens=None, timeout=120.0,
             output_schema=None):
    """One answer (promptbeat.llm.client.Completion); raises llm.LLMError as llm.complete does."""
    common = {"model": model, "prompt": prompt, "temperature": temperature, "max_tokens": max_tokens}
    if not output_schema:
        return llm.complete(endpoint, system_prompt=system_prompt, timeout=timeout, **common)
    key = (endpoint.base_url, endpoint.name, model)
    begun = time.monotonic()
    if key not in _json_schema_refused:
        request = schemas.request_for(output_schema, structured_outputs=True)
        try:
            return llm.complete(endpoint, system_prompt=system_prompt, timeout=timeout,
                                response_format=request.response_format, **common)
        except llm.LLMError as exc:
            if exc.status not in REFUSED_STATUSES:
                raise
            logger.info("%s refused response_format json_schema for %s (%s); asking in JSON mode",
                        endpoint.name, model, exc)
            with _lock:
                _json_schema_refused.add(key)
    request = schemas.request_for(output_schema, structured_outputs=False)
    instructions = "\n\n".join(part for part in (system_prompt, request.instructions) if part)
    left = max(MIN_FALLBACK_SECONDS, timeout - (time.monotonic() - begun))
    return llm.complete(endpoint, system_prompt=instructions, timeout=left,
                        response_format=request.response_format, **common)


def forget_refusals():
    """Ask every server with json_schema again (tests; a server upgraded to structured outputs)."""
    with _lock:
        _json_schema_refused.clear()
