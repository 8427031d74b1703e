"""Delivery of a run's result to a task's webhook: JSON or Slack text, retried, never failing the run."""
import logging
import time
from urllib.parse import urlsplit

import httpx2 as httpx

from promptbeat.llm import netguard
from promptbeat.extensions import db
from promptbeat.models import Execution, Task, WebhookFormat, utcnow
from promptbeat.runs import store
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
SLACK_TEXT_LIMIT = 3000
HEADERS = {"User-Agent": "promptbeat-webhook"}
# The error validation.py catches for a refused webhook_url.
WebhookRefused = netguard.AddressRefused
EXAMPLE = "https://hooks.example.com/promptbeat"
SETTING = "PROMPTBEAT_WEBHOOK_ALLOW_PRIVATE"


def check_target(url, allow_private):
    """Refuse URLs that are not http(s) and, unless private targets are allowed, hosts that resolve to
    any non-public address (promptbeat.llm.netguard).

    The host is resolved here, so a public-looking name that points inside the network is refused too.
    """
    parts = netguard.http_url(url, EXAMPLE)
    if not allow_private:
        netguard.checked_addresses(parts, allow_private=False, setting=SETTING)


def payload(task, execution, kind):
    """The body sent for a finished run: a JSON document, or Slack-compatible {"text": ...}."""
    if kind == WebhookFormat.SLACK:
        body = execution.output if execution.status == RunStatus.SUCCESS else execution.error
        text = f"*{task.name}* run {execution.id}: {execution.status}\n{body or ''}"
        return {"text": text[:SLACK_TEXT_LIMIT]}
    return {
        "task": {"id": task.id, "name": task.name},
        "run": {
            "id": execution.id, "trigger": execution.trigger, "model": execution.model,
            "started_at": _iso(execution.started_at), "finished_at": _iso(execution.finished_at),
            "duration_ms": execution.duration_ms, "attempts": len(execution.attempts or []),
        },
        "status": execution.status,
        "output": execution.output,
        "error": execution.error,
        "usage": {
            "prompt_tokens": execution.prompt_tokens, "completion_tokens": execution.completion_tokens,
            "total_tokens": execution.total_tokens, "cost_usd": execution.cost_usd,
        },
    }


def deliver(url, body, settings, sleep=time.sleep):
    """POST body with a few retries; returns (status, attempts) where status is delivered, failed or refused."""
    attempts = []
    try:
        addresses = netguard.checked_addresses(netguard.http_url(url, EXAMPLE), settings.webhook_allow_private,
                                               SETTING)
    except netguard.AddressRefused as exc:
        attempts.append({"attempt": 1, "at": _iso(utcnow()), "error": str(exc)})
        return "refused", attempts
    # Redirects are not followed: a redirect could lead to an address the check above refuses.
    with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as client:
        for attempt in range(1, settings.webhook_attempts + 1):
            record = {"attempt": attempt, "at": _iso(utcnow())}
            attempts.append(record)
            try:
                response = client.send(pinned_request(client, url, addresses[(attempt - 1) % len(addresses)], body))
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                record["status"] = response.status_code
                if response.is_success:
                    return "delivered", attempts
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    return "failed", attempts  # the receiver rejects this payload; again would not help
            if attempt < settings.webhook_attempts:
                sleep(0.5 * 2 ** (attempt - 1))
    logger.warning("webhook delivery to %s failed after %d attempts", urlsplit(url).hostname, len(attempts))
    return "failed", attempts


def pinned_request(client, url, address, body):
    """A POST of body to url, sent to an address its host was resolved to and checked at."""
    return netguard.pinned(client.build_request("POST", url, json=body, headers=HEADERS), address)


def _iso(moment):
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def deliver_result(run_id, task_id, url, kind, settings, sleep=time.sleep):
    """Post a finished run's result to its task's webhook; every failure is recorded on the run, none changes its status."""
    try:
        execution = db.session.get(Execution, run_id)
        task = db.session.get(Task, task_id)
        if execution is None or task is None:
            return
        body = payload(task, execution, kind)
        db.session.close()
        status, attempts = deliver(url, body, settings, sleep=sleep)
    except Exception as exc:  # a webhook must never fail the run
        logger.exception("webhook of run %s could not be delivered", run_id)
        status, attempts = "failed", [{"attempt": 1, "at": _iso(utcnow()), "error": type(exc).__name__}]
    store.record_webhook(run_id, status, attempts)
