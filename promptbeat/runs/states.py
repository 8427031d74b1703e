"""A run's states and the transitions between them: the one definition everything else derives from."""
import enum


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    # The worker died mid-run (SIGKILL, OOM, lost host) and the run passed its deadline.
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def is_final(self):
        return self in FINAL


# Which state may go to which. promptbeat.runs.store derives each write's WHERE from this table, so a
# run in any other state is left as it is. RUNNING -> RUNNING is a redelivered message taking over a
# run whose worker died mid-call.
TRANSITIONS = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.SKIPPED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.RUNNING, RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.LOST,
                                  RunStatus.CANCELLED}),
    RunStatus.SUCCESS: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.SKIPPED: frozenset(),
    RunStatus.LOST: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}
FINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
# A new run may retry one that ended in one of these.
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED})


def sources(target):
    """The states a run may move to target from, in the table's order."""
    return tuple(status for status, targets in TRANSITIONS.items() if target in targets)
