"""Finishing a batch-mode run from its line of a batch's results, through the runs' own finishing path."""
import logging

from promptbeat.llm import client as llm
from promptbeat.models import utcnow
from promptbeat.notify import dispatch
from promptbeat.outputs import answers
from promptbeat.runs import budget, lifecycle, pipeline, store
from promptbeat.runs.attempts import estimate_cost
from promptbeat.runs.plan import Result
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
# The SDK's names for an HTTP status, so a batch line's error reads as the same call's error would.
STATUS_CLASSES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
                  404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError"}
# A line's own error code (no HTTP answer: the batch ended before the request ran).
CODE_CLASSES = {"batch_expired": "BatchExpired", "batch_cancelled": "BatchCancelled"}


def finish(task, run_id, batch_id, trigger, result, settings, hold, model):
    """Settle (structured output, change detection) and record a submitted run's result, count it, settle its
    budget hold (a Hold or None) for model at the batch discount in the same transaction, stop its task if it
    was the last, and queue its notifications; returns whether it was written."""
    answers.settle(task, run_id, result)
    settle = budget.settlement(hold, settings.prices, model, result, settings.batch_discount)
    written, counters = store.finish_submitted(run_id, batch_id, {"finished_at": utcnow(), **result.columns()},
                                               result.failed, counted=lifecycle.counts(trigger), also=settle)
    if not written:
        logger.info("run %s was cancelled or ended before its batch %s did; its result is discarded", run_id, batch_id)
        return False
    auto_paused = counters is not None and pipeline.stop_if_last(task.id, run_id, trigger, counters, result.error)
    dispatch.after_run(run_id, task, auto_paused)
    return True


def from_line(line, settings, model, duration_ms):
    """A run's Result from its line of the output or error file (the provider's JSON)."""
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    if response is not None and response.get("status_code") == 200:
        try:
            completion = llm.completion_from(response.get("body"))
        except llm.LLMError as exc:
            return failed(str(exc), exc.error_class, duration_ms)
        result = Result(status=RunStatus.SUCCESS, duration_ms=duration_ms, output=completion.output,
                        prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                        total_tokens=completion.total_tokens)
        result.cost_usd = discounted(estimate_cost(settings.prices, model, result), settings.batch_discount)
        return result
    if response is not None:
        status = response.get("status_code")
        error_class = STATUS_CLASSES.get(status, "InternalServerError" if isinstance(status, int) and status >= 500
                                         else "APIStatusError")
        return failed(f"{error_class} (HTTP {status}): {_message(response.get('body'))}", error_class, duration_ms)
    code = str((error or {}).get("code") or "")
    message = (error or {}).get("message") or "The provider returned no result for this request."
    return failed(str(message), CODE_CLASSES.get(code, "BatchRequestError"), duration_ms)


def discounted(cost, discount):
    """A price-table cost at the provider's batch discount (a fraction off), or None."""
    return None if cost is None else round(cost * (1 - discount), 8)


def failed(message, error_class, duration_ms):
    """A failed run's Result: its line's error, or its batch's when the batch ended without a line for it."""
    return Result(status=RunStatus.FAILED, duration_ms=duration_ms, error=message, error_class=error_class)


def _message(body):
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return "the provider gave no message"
