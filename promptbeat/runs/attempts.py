"""The retry loop of a run's model call: attempts until an answer, a permanent error, the bound or the deadline."""
import logging
import time

from promptbeat.llm import client as llm
from promptbeat.outputs import asking
from promptbeat.models import utcnow
from promptbeat.ratelimits.limiter import Admission, Call
from promptbeat.runs import retry, store
from promptbeat.runs.limits import llm_call_slot
from promptbeat.runs.plan import Result, iso
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)


def call_with_retries(plan, run_id, settings, sleep=time.sleep):
    """Call the model as plan says; returns the run's Result, its cost estimated from the price table."""
    result = _attempt(plan, run_id, settings, sleep)
    result.cost_usd = estimate_cost(settings.prices, plan.model, result)
    return result


def _attempt(plan, run_id, settings, sleep):
    begun = time.monotonic()
    deadline = begun + plan.max_run_seconds
    attempts = []

    def outcome(status, **values):
        return Result(status=status, attempts=attempts, duration_ms=int((time.monotonic() - begun) * 1000), **values)

    if plan.error:
        error_class, message = plan.error
        return outcome(RunStatus.FAILED, error=message, error_class=error_class)
    for number in range(1, plan.max_attempts + 1):
        timeout = min(plan.timeout, deadline - time.monotonic())
        record = {"attempt": number, "at": iso(utcnow())}
        attempts.append(record)
        call_begun = time.monotonic()
        try:
            # The connection's rate limits (a retry takes a new place in line) and the cap on calls in flight
            # across all workers hold per attempt, not during backoff.
            limits = plan.endpoint.limits if plan.endpoint is not None else None
            admission = plan.admission if number == 1 and plan.admission else Admission.RESERVE
            with Call(settings, limits, plan.estimated_tokens, admission, sleep) as call, llm_call_slot(settings):
                completion = asking.complete(
                    plan.endpoint, model=plan.model, prompt=plan.prompt, system_prompt=plan.system_prompt,
                    temperature=plan.temperature, max_tokens=plan.max_tokens, timeout=timeout,
                    output_schema=plan.output_schema,
                )
                call.answered(completion.total_tokens, completion.headers)
        except llm.LLMError as exc:
            record.update(ms=int((time.monotonic() - call_begun) * 1000), error_class=exc.error_class, error=str(exc))
            logger.warning("task %s run %s attempt %d failed: %s", plan.task_id, run_id, number, exc)
            # The run's error stays the server's own message; its attempts show how often it was tried.
            failed = outcome(RunStatus.FAILED, error=str(exc), error_class=exc.error_class)
            if not retry.is_retryable(exc) or number == plan.max_attempts:
                return failed
            wait = retry.backoff_seconds(number, exc, settings.retry_base_seconds, settings.retry_max_seconds)
            if time.monotonic() + wait >= deadline - 1:
                record["gave_up"] = f"the next attempt would pass the run's limit of {plan.max_run_seconds} s"
                return failed
            record["wait_s"] = round(wait, 3)
            store.record_attempts(run_id, attempts)
            sleep(wait)
        else:
            record["ms"] = int((time.monotonic() - call_begun) * 1000)
            return outcome(RunStatus.SUCCESS, output=completion.output, prompt_tokens=completion.prompt_tokens,
                           completion_tokens=completion.completion_tokens, total_tokens=completion.total_tokens)
    raise AssertionError("unreachable: the loop returns on its last attempt")


def estimate_cost(prices, model, result):
    """USD from the price table (per million tokens), or None for a model without a price."""
    price = prices.get(model)
    if price is None or result.prompt_tokens is None:
        return None
    prompt_price, completion_price = price
    cost = (result.prompt_tokens * prompt_price + (result.completion_tokens or 0) * completion_price) / 1e6
    return round(cost, 8)
