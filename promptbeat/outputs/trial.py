"""A test run: a task's input validated, its prompts rendered and sent once, the answer checked; nothing saved."""
from dataclasses import asdict, dataclass

import redis

from promptbeat.llm import client as llm
from promptbeat.llm import crypto
from promptbeat.llm.connections import endpoint_for
from promptbeat.models import Task, utcnow
from promptbeat.outputs import asking, schema
from promptbeat.runs import prompts
from promptbeat.runs.limits import CapReached, llm_call_slot
from promptbeat.validation import validate_task

# A test run holds a web request: it waits this long at most for a place under the LLM-call cap,
# and its call gets at most this long too.
MAX_WAIT_SECONDS = 10
MAX_CALL_SECONDS = 60


@dataclass(frozen=True)
class Trial:
    """What a test run came to: the answer, its parsed value, why it failed, and its token usage."""

    output: str | None = None
    parsed_output: object = None
    error: str | None = None
    usage: dict | None = None

    def json(self):
        return asdict(self)


def run(data, settings):
    """Try a task's input (as create takes it) once; raises validation.TaskInputError for invalid input."""
    values = validate_task(data, settings)
    task = Task(**values)
    try:
        endpoint = endpoint_for(task, settings)
    except crypto.CryptoError as exc:
        return Trial(error=f"The connection's key cannot be read: {exc}")
    now = utcnow()
    context = {"task_name": task.name, "timezone": task.timezone, "moment": now, "run_count": 0,
               "last_output": None, "last_changed_at": None}
    limits = prompts.Limits.from_settings(settings)
    try:
        prompt = prompts.render(task.prompt, limits, **context)
        system_prompt = prompts.render(task.system_prompt, limits, **context) if task.system_prompt else None
    except prompts.PromptTemplateError as exc:
        return Trial(error=str(exc))
    timeout = min(task.request_timeout_seconds or settings.llm_timeout_seconds, MAX_CALL_SECONDS)
    try:
        with llm_call_slot(settings, max_wait=MAX_WAIT_SECONDS):
            completion = asking.complete(endpoint, model=task.model, prompt=prompt, system_prompt=system_prompt,
                                         temperature=task.temperature, max_tokens=task.max_tokens, timeout=timeout,
                                         output_schema=task.output_schema)
    except (llm.LLMError, CapReached) as exc:
        return Trial(error=str(exc))
    except redis.RedisError:
        return Trial(error="The LLM-call cap could not be checked: Redis is unreachable.")
    usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
             "total_tokens": completion.total_tokens}
    if not task.output_schema:
        return Trial(output=completion.output, usage=usage)
    try:
        parsed = schema.parse(completion.output, task.output_schema)
    except schema.OutputInvalid as exc:
        return Trial(output=completion.output, error=str(exc), usage=usage)
    return Trial(output=completion.output, parsed_output=parsed, usage=usage)
