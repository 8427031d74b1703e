"""Which model errors are worth another attempt, and how long to wait before it."""
import random

# Transient: the same request may well succeed a little later.
RETRYABLE_CLASSES = frozenset({
    "APITimeoutError", "APIConnectionError", "RateLimitError", "InternalServerError",
})


def is_retryable(error):
    """True for timeouts, connection errors, 5xx and 429 rate limits; False for 4xx and exhausted quota."""
    if error.error_class == "InsufficientQuota":
        return False
    if error.status is not None:
        return error.status == 429 or error.status >= 500
    return error.error_class in RETRYABLE_CLASSES


def backoff_seconds(attempt, error, base, cap, rng=random):
    """The wait before attempt+1: the server's Retry-After if given, else exponential with full jitter.

    attempt counts from 1. Never more than cap, so no wait outlives the broker's visibility timeout.
    """
    if error.retry_after is not None:
        # A little jitter on top, so many runs told "1 s" do not all come back in the same instant.
        return min(cap, error.retry_after * (1 + rng.uniform(0, 0.1)))
    return min(cap, rng.uniform(0, base * 2 ** (attempt - 1)) + base / 2)
