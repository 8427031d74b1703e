"""User-given regular expressions, compiled by RE2: matching time is linear in the text, so none can hang a run."""
import functools

import re2

MAX_PATTERNS = 20
MAX_PATTERN_CHARS = 200
_OPTIONS = re2.Options()
# Plenty for the patterns above; a pattern whose program needs more is refused rather than slow to build.
_OPTIONS.max_mem = 8 << 20
# A refused pattern is the user's mistake, answered on its field; not a line on the process's stderr.
_OPTIONS.log_errors = False


class PatternError(ValueError):
    """A pattern RE2 cannot compile (backreferences and lookaround are not supported), or over the bounds."""


@functools.lru_cache(maxsize=1024)
def compiled(pattern):
    """The pattern compiled by RE2; raises PatternError with RE2's reason."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"{pattern[:60]!r} is not a regular expression RE2 accepts ({reason}); "
                           "backreferences and lookaround are not supported.") from None


def check_list(value):
    """A list of patterns as stored (None when empty); raises PatternError naming what is wrong."""
    if value in (None, "", []):
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PatternError("Must be a list of regular expressions (text).")
    patterns = [item.strip() for item in value if item.strip()]
    if len(patterns) > MAX_PATTERNS:
        raise PatternError(f"At most {MAX_PATTERNS} patterns.")
    for pattern in patterns:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise PatternError(f"Each pattern must be at most {MAX_PATTERN_CHARS} characters.")
        if any(ord(char) < 32 and char != "\t" for char in pattern):
            raise PatternError("A pattern must be one line, without control characters.")
        compiled(pattern)
    return patterns or None


def matcher(patterns):
    """One function telling whether text matches any of the patterns (never, for none)."""
    if not patterns:
        return lambda text: False
    combined = compiled("|".join(f"(?:{pattern})" for pattern in patterns))
    return lambda text: combined.search(text) is not None
