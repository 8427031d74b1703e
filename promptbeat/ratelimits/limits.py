"""What a connection's limits are, and why a run waits: typed values the rest of the limiter passes around."""
import enum
from dataclasses import dataclass


class WaitReason(enum.StrEnum):
    """Why a run is `waiting` (shown on its page and in the API)."""

    # The connection's own requests- or tokens-per-minute limit: the run waits for its place in line.
    RATE_LIMIT = "rate_limit"
    # The provider said to slow down (a 429's Retry-After, or x-ratelimit-remaining-* at 0).
    PROVIDER = "provider"
    # The task's jitter, or the spreading of a burst of runs due in the same minute.
    JITTER = "jitter"
    SPREAD = "spread"
    # An interval task's first run, delayed by its first_run_delay_seconds.
    FIRST_RUN_DELAY = "first_run_delay"


@dataclass(frozen=True)
class RateLimits:
    """The limits of one endpoint (a connection), under the Redis key its buckets share."""

    key: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None

    @property
    def paced(self):
        """Whether calls are paced by a per-minute limit (reserved ahead of the call)."""
        return bool(self.rpm or self.tpm)

    @classmethod
    def of_connection(cls, connection):
        """The connection's limits, or None when it has none."""
        if not (connection.rpm_limit or connection.tpm_limit or connection.max_concurrency):
            return None
        return cls(key=f"connection:{connection.id}", rpm=connection.rpm_limit, tpm=connection.tpm_limit,
                   max_concurrency=connection.max_concurrency)


@dataclass(frozen=True)
class Reservation:
    """A run's place in line: how long until its call may go, and why it waits (None: it need not)."""

    wait_seconds: float
    reason: WaitReason | None
