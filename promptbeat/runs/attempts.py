"""A run's model calls: attempts, then fallbacks, until an answer, a permanent error, the bounds or the deadline."""
import logging
import time

from promptbeat.llm import client as llm
from promptbeat.outputs import asking
from promptbeat.models import utcnow
from promptbeat.ratelimits.limiter import Admission, Call
from promptbeat.runs import fallbacks, retry, store
from promptbeat.runs.limits import llm_call_slot
from promptbeat.runs.plan import Result, iso
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)


def call_with_retries(plan, run_id, settings, sleep=time.sleep):
    """Call the model as plan says, then its fallbacks; returns the run's Result, its cost estimated
    from the price table for the model that answered."""
    result = _attempt(plan, run_id, settings, sleep)
    result.cost_usd = estimate_cost(settings.prices, result.answered_model or plan.model, result)
    return result


def _attempt(plan, run_id, settings, sleep):
    """Each target (the task's model, then its fallbacks) gets up to plan.max_attempts attempts of its own;
    the run's deadline bounds them all."""
    begun = time.monotonic()
    deadline = begun + plan.max_run_seconds
    attempts = []

    def outcome(status, **values):
        return Result(status=status, attempts=attempts, duration_ms=int((time.monotonic() - begun) * 1000), **values)

    if plan.error:
        error_class, message = plan.error
        return outcome(RunStatus.FAILED, error=message, error_class=error_class)
    targets = plan.targets()
    for index, target in enumerate(targets):
        if target.error:
            error_class, message = target.error
            return outcome(RunStatus.FAILED, error=message, error_class=error_class)
        for number in range(1, plan.max_attempts + 1):
            timeout = min(plan.timeout, deadline - time.monotonic())
            record = {"attempt": len(attempts) + 1, "at": iso(utcnow()), "model": target.model,
                      "connection_id": target.connection_id}
            attempts.append(record)
            call_begun = time.monotonic()
            try:
                # The target connection's rate limits (a retry or a fallback takes a new place in line) and the
                # cap on calls in flight across all workers hold per attempt, not during backoff.
                limits = target.endpoint.limits if target.endpoint is not None else None
                first = index == 0 and number == 1
                admission = plan.admission if first and plan.admission else Admission.RESERVE
                with Call(settings, limits, plan.estimated_tokens, admission, sleep) as call, llm_call_slot(settings):
                    completion = asking.complete(
                        target.endpoint, model=target.model, prompt=plan.prompt, system_prompt=plan.system_prompt,
                        temperature=plan.temperature, max_tokens=plan.max_tokens, timeout=timeout,
                        output_schema=plan.output_schema,
                    )
                    call.answered(completion.total_tokens, completion.headers)
            except llm.LLMError as exc:
                record.update(ms=int((time.monotonic() - call_begun) * 1000), error_class=exc.error_class,
                              error=str(exc))
                logger.warning("task %s run %s attempt %d failed: %s", plan.task_id, run_id, record["attempt"], exc)
                # The run's error stays the server's own message; its attempts show how often it was tried.
                error, failed = exc, outcome(RunStatus.FAILED, error=str(exc), error_class=exc.error_class)
                if not retry.is_retryable(exc) or number == plan.max_attempts:
                    break
                wait = retry.backoff_seconds(number, exc, settings.retry_base_seconds, settings.retry_max_seconds)
                if time.monotonic() + wait >= deadline - 1:
                    record["gave_up"] = f"the next attempt would pass the run's limit of {plan.max_run_seconds} s"
                    break
                record["wait_s"] = round(wait, 3)
                store.record_attempts(run_id, attempts)
                sleep(wait)
            else:
                record["ms"] = int((time.monotonic() - call_begun) * 1000)
                return outcome(RunStatus.SUCCESS, output=completion.output, prompt_tokens=completion.prompt_tokens,
                               completion_tokens=completion.completion_tokens, total_tokens=completion.total_tokens,
                               answered_model=target.model, answered_connection_id=target.connection_id)
        # A fallback only where another model may answer, and only with time left to ask it.
        if index == len(targets) - 1 or not fallbacks.moves_on(error) or time.monotonic() >= deadline - 1:
            return failed
        logger.info("task %s run %s: %s failed (%s); falling back to %s", plan.task_id, run_id, target.model,
                    error.error_class, targets[index + 1].model)
        store.record_attempts(run_id, attempts)
    raise AssertionError("unreachable: the loop returns on its last target")


def estimate_cost(prices, model, result):
    """USD from the price table (per million tokens), or None for a model without a price."""
    price = prices.get(model)
    if price is None or result.prompt_tokens is None:
        return None
    prompt_price, completion_price = price
    cost = (result.prompt_tokens * prompt_price + (result.completion_tokens or 0) * completion_price) / 1e6
    return round(cost, 8)
