"""Collecting a batch-mode task's run in the worker: its prompt rendered and its request kept for the next batch."""
import logging
from datetime import timedelta

from promptbeat.batches import results
from promptbeat.extensions import db
from promptbeat.llm.client import build_messages
from promptbeat.models import utcnow
from promptbeat.outputs import schema as schemas
from promptbeat.runs import budget, pipeline, preparation, store

logger = logging.getLogger(__name__)
# The provider's completion window: the only one the Batch API offers.
COMPLETION_WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600


def collect(request, settings, task, run_id):
    """Record a queued run of a batch-mode task as submitted, waiting for the next batch; returns its id.

    The worker renders its prompts and keeps the chat request its line of the batch file will carry;
    nothing is called and no worker is held while the batch runs. A run that cannot be asked (its
    template fails, its connection's key cannot be read) fails at once, as it would in a call.

    Budgets apply as to a called run: its estimate, at the batch discount, is charged here, and a run that
    would pass a budget is skipped and never sent. The hold is kept on the run until its result arrives.
    """
    started = utcnow()
    plan = preparation.call_plan(task, settings, started)
    if preparation.templated(task):
        # Its prompt is recorded with the collection below (the run is not running, so render records nothing).
        preparation.render(plan, task, run_id, settings, started)
    db.session.remove()
    hold = budget.reserve(task, plan, settings, started, settings.batch_discount)
    if isinstance(hold, budget.Stop):
        return pipeline.stop_for_budget(run_id, task, hold.message)
    values = {"model": task.model, "started_at": started, "worker": request.worker, "prompt": plan.prompt,
              "runner": None, "batch_request": None if plan.error else batch_request(plan),
              "budget_hold": budget.to_record(hold),
              # Past this a run still waiting for its result is lost (promptbeat.batches.poll).
              "deadline_at": started + timedelta(seconds=WINDOW_SECONDS + settings.batch_grace_seconds)}
    if not store.collect(run_id, values):
        budget.release(hold)
        status = store.status_of(run_id)
        logger.info("run %s was not collected for a batch: it is %s", run_id, status or "gone")
        return run_id
    if plan.error:
        error_class, message = plan.error
        # Without usage its settlement gives the estimate back.
        results.finish(task, run_id, None, request.trigger, results.failed(message, error_class, 0), settings, hold,
                       plan.model)
        return run_id
    logger.info("task %s run %s collected for the next batch", task.id, run_id)
    return run_id


def batch_request(plan):
    """The chat request a run's line of the batch file carries: what promptbeat.outputs.asking would send."""
    body = {"model": plan.model, "messages": build_messages(plan.prompt, plan.system_prompt)}
    if plan.temperature is not None:
        body["temperature"] = plan.temperature
    if plan.max_tokens is not None:
        body["max_tokens"] = plan.max_tokens
    if plan.output_schema:
        # Batches cannot be asked again in JSON mode at once, so they ask with json_schema only.
        body["response_format"] = schemas.request_for(plan.output_schema, structured_outputs=True).response_format
    return body
