"""What the provider says about its limits: x-ratelimit-* headers on an answer, Retry-After on a 429."""
import re

# Go-style durations as OpenAI sends them in x-ratelimit-reset-*: "20ms", "1s", "6m0s", "1h2m3.5s".
DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")
# The headers the limiter reads; the client keeps only these of an answer.
HEADERS = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests",
           "x-ratelimit-reset-tokens", "retry-after-ms", "retry-after")
# A provider's hint beyond this is not believed: a broken header must not stop a connection for a day.
MAX_BLOCK_SECONDS = 3600.0


def duration_seconds(text):
    """Seconds in a duration header ("6m0s", "20ms", "1.5s", or a bare number of seconds); None if unreadable."""
    if text is None:
        return None
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        match = DURATION.match(text)
        if not match or not any(match.groups()):
            return None
        hours, minutes, seconds, millis = (float(part or 0) for part in match.groups())
        value = hours * 3600 + minutes * 60 + seconds + millis / 1000
    return value if 0 <= value < float("inf") else None


def _count(text):
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def block_seconds(headers, retry_after=None):
    """How long the whole connection should hold its calls, by what the provider said; 0 for not at all.

    retry_after is a 429's hint (retry-after-ms or Retry-After, read by the client); an answer's
    x-ratelimit-remaining-requests or -tokens at 0 holds calls until the matching reset.
    """
    wait = retry_after or 0.0
    for kind in ("requests", "tokens"):
        if _count(headers.get(f"x-ratelimit-remaining-{kind}")) == 0:
            wait = max(wait, duration_seconds(headers.get(f"x-ratelimit-reset-{kind}")) or 0.0)
    return min(wait, MAX_BLOCK_SECONDS)
