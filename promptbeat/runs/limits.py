"""A global cap on concurrent LLM calls across all workers: a Redis semaphore with leases."""
import logging
import secrets
import time
from contextlib import contextmanager

from promptbeat.redis_client import get_client

logger = logging.getLogger(__name__)


# Take a lease if fewer than ARGV[2] live leases exist; dead holders' leases expire.
ACQUIRE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('zadd', KEYS[1], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


class CapReached(Exception):
    """No place under the cap freed within the wait allowed."""


@contextmanager
def llm_call_slot(settings, poll=0.2, max_wait=None):
    """Wait until fewer than max_concurrent_llm_calls calls are in flight, then hold a lease.

    With max_wait (seconds), give up with CapReached after that long instead of waiting on.
    """
    cap = settings.max_concurrent_llm_calls
    if cap <= 0:
        yield
        return
    client = get_client(settings.redis_url)
    key = settings.redbeat_key_prefix + "llm-calls"
    lease = secrets.token_hex(8)
    lease_seconds = settings.llm_timeout_seconds * 2 + 60
    waited = False
    give_up = None if max_wait is None else time.monotonic() + max_wait
    while True:
        now = time.time()
        if client.eval(ACQUIRE, 1, key, now, cap, now + lease_seconds, lease):
            break
        if give_up is not None and time.monotonic() >= give_up:
            raise CapReached(f"{cap} LLM calls are in flight (PROMPTBEAT_MAX_CONCURRENT_LLM_CALLS); try again shortly.")
        if not waited:
            logger.info("%d LLM calls in flight (the cap); waiting for one to finish", cap)
            waited = True
        time.sleep(poll)
    try:
        yield
    finally:
        client.zrem(key, lease)
