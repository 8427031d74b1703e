"""Beat's liveness for its healthcheck: a file the beat loop touches, fresh only while the loop runs.

The loop touches it at every tick while it holds the RedBeat lock and at every try while it waits for
the lock, so a standby replica is healthy too; a wedged or dead loop leaves it to go stale.
`python -m beat.health` exits 0 while it is fresh and 1 otherwise (the compose healthcheck).
"""
import os
import sys
import tempfile
import time
from pathlib import Path

from promptbeat.settings import Settings

# Under the temporary directory: one file per container (tests give each beat process its own TMPDIR).
HEARTBEAT_FILE = Path(tempfile.gettempdir()) / "promptbeat-beat.heartbeat"


def touch():
    """Record that the beat loop ran just now."""
    HEARTBEAT_FILE.touch()


def stale_after(settings):
    """Seconds of silence after which the loop is taken for dead: past the lock timeout a standby takes over anyway."""
    return settings.beat_lock_timeout + settings.beat_max_loop_interval


def age():
    """Seconds since the loop last ran, or None when it never did."""
    try:
        return time.time() - HEARTBEAT_FILE.stat().st_mtime
    except FileNotFoundError:
        return None


def main():
    limit = stale_after(Settings.from_environ(os.environ))
    seconds = age()
    if seconds is None:
        print("beat has not started its loop", file=sys.stderr)
        return 1
    if seconds > limit:
        print(f"beat's loop last ran {seconds:.0f}s ago (limit {limit}s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
