"""Webhook and Slack deliveries: the body for a run, signed per Standard Webhooks, POSTed once to a checked address."""
import json
from datetime import datetime, timezone

import httpx2 as httpx
from standardwebhooks import Webhook

from promptbeat.llm import netguard
from promptbeat.models import ChannelKind
from promptbeat.notify.channels import URL_EXAMPLE, URL_SETTING
from promptbeat.notify.outcome import Outcome
from promptbeat.runs.states import RunStatus

SLACK_TEXT_LIMIT = 3000
USER_AGENT = "promptbeat-webhook"


def payload(kind, task, execution, reasons):
    """The body sent for a finished run: a JSON document, or Slack-compatible {"text": ...}."""
    if kind == ChannelKind.SLACK:
        body = execution.output if execution.status == RunStatus.SUCCESS else execution.error
        text = f"*{task.name}* run {execution.id}: {execution.status}\n{body or ''}"
        return {"text": text[:SLACK_TEXT_LIMIT]}
    return {
        "type": "run.finished",
        "task": {"id": task.id, "name": task.name},
        "run": {
            "id": execution.id, "trigger": execution.trigger, "model": execution.model,
            "started_at": _iso(execution.started_at), "finished_at": _iso(execution.finished_at),
            "duration_ms": execution.duration_ms, "attempts": len(execution.attempts or []),
        },
        "status": execution.status,
        "output": execution.output,
        "parsed_output": execution.parsed_output,
        "error": execution.error,
        "error_class": execution.error_class,
        "changed": execution.changed,
        "diff": execution.diff,
        "notify": [str(reason) for reason in reasons],
        "usage": {
            "prompt_tokens": execution.prompt_tokens, "completion_tokens": execution.completion_tokens,
            "total_tokens": execution.total_tokens, "cost_usd": execution.cost_usd,
        },
    }


def signed_headers(secret, message_id, body, now=None):
    """The Standard Webhooks headers for body; the same message id on every retry lets receivers drop repeats."""
    moment = now or datetime.now(timezone.utc)
    headers = {"webhook-id": message_id, "webhook-timestamp": str(int(moment.timestamp()))}
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(message_id, moment, body)
    return headers


def send(url, body, secret, message_id, settings, number=1):
    """POST body (JSON text) once, to an address the URL's host resolves to and that the guard accepts.

    Attempt number n goes to the n-th of those addresses in turn, so one dead address does not fail them all.
    """
    try:
        addresses = netguard.checked_addresses(netguard.http_url(url, URL_EXAMPLE), settings.webhook_allow_private,
                                               URL_SETTING)
    except netguard.AddressRefused as exc:
        return Outcome.failure(exc, retryable=False)
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json",
               **signed_headers(secret, message_id, body)}
    # Redirects are not followed: a redirect could lead to an address the check above refuses.
    with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as client:
        request = netguard.pinned(client.build_request("POST", url, content=body.encode(), headers=headers),
                                  addresses[(number - 1) % len(addresses)])
        try:
            response = client.send(request)
        except httpx.HTTPError as exc:
            return Outcome.failure(f"{type(exc).__name__}: {exc}")
    if response.is_success:
        return Outcome(True, response.status_code, f"HTTP {response.status_code}")
    # A 4xx other than a timeout or throttle says the receiver rejects this body: again would not help.
    retryable = not (400 <= response.status_code < 500 and response.status_code not in (408, 429))
    return Outcome.failure(f"HTTP {response.status_code}", response.status_code, retryable)


def body_text(body):
    """The exact text that is signed and sent."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _iso(moment):
    return moment.isoformat().replace("+00:00", "Z") if moment else None
