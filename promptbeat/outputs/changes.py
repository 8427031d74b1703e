"""Change detection: a run's answer against the previous successful run's, as a flag and a bounded diff."""
import difflib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from promptbeat.outputs import patterns

# A diff is for reading: past this it is cut with a note, so two large answers never bloat a run's row.
MAX_DIFF_CHARS = 64_000
# difflib's matching grows with the square of the lines that differ; past this many on a side, the
# differing middle is shown as removed and added whole instead of matched line by line.
MAX_MATCHED_LINES = 2_000
CONTEXT_LINES = 3
# A side-by-side page shows at most this many rows: a page of two 1 MB answers would not be read.
MAX_SIDE_BY_SIDE_ROWS = 5_000
MAX_VALUE_CHARS = 200
CUT_NOTE = "… (diff cut at {limit} characters)"


@dataclass(frozen=True)
class Answer:
    """What a run answered: its text and, for a task with an output schema, the parsed value."""

    output: str
    parsed: Any = None
    structured: bool = False


@dataclass(frozen=True)
class Change:
    """Whether an answer changed since the previous one (None: there is none) and how."""

    changed: bool | None
    diff: str | None = None


def compare(previous, current, ignore_patterns=None):
    """Compare current with previous (an Answer, or None for a task's first successful run)."""
    if previous is None:
        return Change(None)
    ignored = patterns.matcher(ignore_patterns)
    if current.structured and previous.structured:
        lines = field_changes(previous.parsed, current.parsed, ignored)
        return Change(bool(lines), _bounded("\n".join(lines)) if lines else None)
    before, after = normalised(previous.output, ignored), normalised(current.output, ignored)
    if before == after:
        return Change(False)
    return Change(True, unified_diff(before, after))


def normalised(text, ignored=lambda line: False):
    """The lines compared: blanks collapsed, empty lines and lines matching an ignore pattern left out."""
    lines = (" ".join(line.split()) for line in (text or "").splitlines())
    return [line for line in lines if line and not ignored(line)]


def unified_diff(before, after):
    """A unified diff of two lists of lines, bounded in time (MAX_MATCHED_LINES) and size (MAX_DIFF_CHARS)."""
    head = _common_prefix(before, after)
    tail = _common_prefix(before[head:][::-1], after[head:][::-1])
    old, new = before[head:len(before) - tail], after[head:len(after) - tail]
    if len(old) <= MAX_MATCHED_LINES and len(new) <= MAX_MATCHED_LINES:
        start = max(0, head - CONTEXT_LINES)
        end_before, end_after = len(before) - max(0, tail - CONTEXT_LINES), len(after) - max(0, tail - CONTEXT_LINES)
        body = difflib.unified_diff(before[start:end_before], after[start:end_after], "previous", "current",
                                    n=CONTEXT_LINES, lineterm="")
        lines = _renumbered(body, start)
    else:
        lines = itertools.chain(["--- previous", "+++ current", f"@@ -{head + 1},{len(old)} +{head + 1},{len(new)} @@"],
                                ("-" + line for line in old), ("+" + line for line in new))
    return _bounded("\n".join(_up_to_limit(lines)))


def side_by_side(before, after):
    """Rows (kind, left, right) aligning two lists of lines for a side-by-side view; kind is equal,
    replace, delete or insert. Bounded like unified_diff: a long differing middle is one replace block."""
    head = _common_prefix(before, after)
    tail = _common_prefix(before[head:][::-1], after[head:][::-1])
    old, new = before[head:len(before) - tail], after[head:len(after) - tail]
    rows = [("equal", line, line) for line in before[:head]]
    if len(old) <= MAX_MATCHED_LINES and len(new) <= MAX_MATCHED_LINES:
        matcher = difflib.SequenceMatcher(None, old, new)
        for kind, i1, i2, j1, j2 in matcher.get_opcodes():
            rows.extend(_pairs(kind, old[i1:i2], new[j1:j2]))
    else:
        rows.extend(_pairs("replace", old, new))
    rows.extend(("equal", line, line) for line in before[len(before) - tail:])
    return rows


def _pairs(kind, left, right):
    if kind == "equal":
        return [("equal", a, b) for a, b in zip(left, right)]
    rows = []
    for i in range(max(len(left), len(right))):
        a, b = (left[i] if i < len(left) else None), (right[i] if i < len(right) else None)
        rows.append(("replace" if a is not None and b is not None else "delete" if a is not None else "insert", a, b))
    return rows


def field_changes(before, after, ignored=lambda path: False):
    """Lines naming each added (+), removed (-) and changed (~) path between two JSON values."""
    old, new = flatten(before), flatten(after)
    lines = []
    for path in sorted(old.keys() | new.keys()):
        if ignored(path):
            continue
        if path not in old:
            lines.append(f"+ {path}: {_shown(new[path])}")
        elif path not in new:
            lines.append(f"- {path}: {_shown(old[path])}")
        elif old[path] != new[path] or type(old[path]) is not type(new[path]):
            lines.append(f"~ {path}: {_shown(old[path])} → {_shown(new[path])}")
    return lines


def flatten(value):
    """{JSONPath: leaf value}; an empty object or list is a leaf. Iterative: answers may nest deeply."""
    leaves, stack = {}, [("$", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict) and node:
            stack.extend((f"{path}.{key}" if _plain_key(key) else f"{path}[{json.dumps(key)}]", child)
                         for key, child in node.items())
        elif isinstance(node, list) and node:
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(node))
        else:
            leaves[path] = node
    return leaves


def _plain_key(key):
    return key.isidentifier() and key.isascii()


def _shown(value):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def _common_prefix(a, b):
    count = 0
    for left, right in zip(a, b):
        if left != right:
            break
        count += 1
    return count


def _renumbered(lines, offset):
    """difflib's hunk headers count from the slice it was given; shift them to the whole answer's lines."""
    for line in lines:
        if line.startswith("@@ ") and offset:
            old, new = line[3:line.index(" @@")].split(" ")
            yield f"@@ {_shift(old, offset)} {_shift(new, offset)} @@"
        else:
            yield line


def _shift(part, offset):
    start, comma, length = part[1:].partition(",")
    sign = part[0]
    return f"{sign}{int(start) + offset}{comma}{length}"


def _up_to_limit(lines):
    """The lines until they pass MAX_DIFF_CHARS: the rest of a long diff is never built."""
    length = 0
    for line in lines:
        yield line
        length += len(line) + 1
        if length > MAX_DIFF_CHARS:
            return


def _bounded(text):
    if len(text) <= MAX_DIFF_CHARS:
        return text
    cut = text.rfind("\n", 0, MAX_DIFF_CHARS)
    return text[:cut if cut > 0 else MAX_DIFF_CHARS] + "\n" + CUT_NOTE.format(limit=MAX_DIFF_CHARS)
