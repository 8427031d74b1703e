"""The outcome of one delivery attempt, whatever the channel."""
from dataclasses import dataclass

DETAIL_CHARS = 500


@dataclass(frozen=True)
class Outcome:
    """Delivered or not; the HTTP status or SMTP reply code; what the other side said; whether trying again may help."""

    delivered: bool
    code: int | None = None
    detail: str | None = None
    retryable: bool = False

    @classmethod
    def failure(cls, detail, code=None, retryable=True):
        return cls(False, code, str(detail)[:DETAIL_CHARS], retryable)
