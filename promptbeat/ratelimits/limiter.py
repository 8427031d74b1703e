"""The limiter's API: reserve a call's place in line, admit the call, and settle it with what the answer said.

Callers pass a connection's RateLimits (None: no limits, and nothing here costs a round trip) and
the request's estimated tokens, so it works per attempt as well as per run, whichever connection
an attempt goes to.
"""
import enum
import logging
import secrets
import time

from promptbeat.ratelimits import provider, scripts
from promptbeat.ratelimits.limits import Reservation, WaitReason
from promptbeat.redis_client import get_client

logger = logging.getLogger(__name__)
MINUTE_MS = 60_000
# Calls are paced this much below a limit: a call leaves its moment a little late or early (a message's
# countdown, a thread's turn), and a provider counting over a window shorter than a minute refuses the
# one that lands a moment early. Costs this share of throughput.
PACING_MARGIN = 0.03
# How often a call waiting for a free place under max_concurrency asks again.
CONCURRENCY_POLL_SECONDS = 0.05
NO_WAIT = Reservation(0.0, None)
_REASONS = {1: WaitReason.RATE_LIMIT, 2: WaitReason.PROVIDER}


class Admission(enum.Enum):
    """What a call must do about its place in line before it goes."""

    # Reserve a place now and wait for it (a retry, or a run that did not reserve ahead).
    RESERVE = "reserve"
    # Its place was reserved a moment ago: go (under max_concurrency).
    RESERVED = "reserved"
    # Its place was reserved earlier and its moment has come: go unless the provider has since said to hold.
    CHECK = "check"


def _keys(settings, limits):
    base = f"{settings.redbeat_key_prefix}rl:{limits.key}:"
    return {name: base + name for name in ("requests", "tokens", "blocked", "leases", "sent")}


def _per(limit):
    return MINUTE_MS * (1 + PACING_MARGIN) / limit if limit else 0


_scripts = {}


def _run(settings, source, keys, args):
    client = get_client(settings.redis_url)
    script = _scripts.get(source)
    if script is None:
        script = _scripts[source] = client.register_script(source)
    # EVALSHA, with the script itself sent only the first time a Redis lacks it.
    return script(keys=keys, args=args, client=client)


def reserve(settings, limits, tokens):
    """Reserve the next free moment for one request of about `tokens` tokens; returns its Reservation.

    The moment is the caller's: later callers get later ones, so a caller that waits keeps its place.
    """
    if limits is None or not limits.paced:
        return NO_WAIT
    keys = _keys(settings, limits)
    wait_ms, why = _run(settings, scripts.RESERVE, [keys["requests"], keys["tokens"], keys["blocked"]],
                        [_per(limits.rpm), _per(limits.tpm), int(tokens)])
    return Reservation(wait_ms / 1000, _REASONS.get(why)) if wait_ms > 0 else NO_WAIT


class Call:
    """One call under a connection's limits: `with` admits it (waiting in the worker, briefly) and settles it.

    Inside the block, answered() gives the answer's token usage and headers; an exception with
    `headers` and `retry_after` (promptbeat.llm.client.LLMError) is read as it leaves the block.
    """

    def __init__(self, settings, limits, tokens, admission, sleep=time.sleep):
        self.settings, self.limits, self.tokens, self.admission, self.sleep = (
            settings, limits, int(tokens), admission, sleep)
        self.lease = ""
        self.used = None
        self.headers = {}
        self.retry_after = None

    def __enter__(self):
        limits = self.limits
        if limits is None:
            return self
        check_block = self.admission == Admission.CHECK or not limits.paced
        if self.admission == Admission.RESERVE:
            reservation = reserve(self.settings, limits, self.tokens)
            if reservation.wait_seconds:
                logger.info("call on %s waits %.2f s (%s)", limits.key, reservation.wait_seconds, reservation.reason)
                self.sleep(reservation.wait_seconds)
        if not (check_block or limits.max_concurrency or limits.rpm):
            return self
        keys = _keys(self.settings, limits)
        lease = secrets.token_hex(8) if limits.max_concurrency else ""
        lease_ms = int((self.settings.llm_timeout_seconds * 2 + 60) * 1000)
        while True:
            outcome, wait_ms = _run(self.settings, scripts.ADMIT, [keys["blocked"], keys["leases"], keys["sent"]],
                                    [int(check_block), limits.max_concurrency or 0, lease_ms, lease,
                                     _per(limits.rpm)])
            if outcome == scripts.ADMITTED:
                break
            if outcome == scripts.PROVIDER_HOLD:
                logger.info("calls on %s held %.2f s: the provider asked to slow down", limits.key, wait_ms / 1000)
                self.sleep(wait_ms / 1000)
                check_block = False
            elif outcome == scripts.SPACING:
                self.sleep(wait_ms / 1000)
            else:
                self.sleep(CONCURRENCY_POLL_SECONDS)
        self.lease = lease
        return self

    def answered(self, total_tokens, headers):
        """Record an answer's usage (None: unknown) and its rate-limit headers."""
        self.used, self.headers = total_tokens, headers or {}

    def __exit__(self, exc_type, exc, traceback):
        if self.limits is None:
            return False
        if exc is not None:
            self.headers = getattr(exc, "headers", None) or {}
            self.retry_after = getattr(exc, "retry_after", None)
        hold = provider.block_seconds(self.headers, self.retry_after)
        delta = self.used - self.tokens if self.used is not None and self.limits.tpm else 0
        if hold or delta or self.lease:
            if hold:
                logger.info("the provider asked calls on %s to hold %.2f s", self.limits.key, hold)
            keys = _keys(self.settings, self.limits)
            _run(self.settings, scripts.SETTLE, [keys["tokens"], keys["blocked"], keys["leases"]],
                 [delta, _per(self.limits.tpm), int(hold * 1000), self.lease])
        return False
