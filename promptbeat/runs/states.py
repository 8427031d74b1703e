"""A run's states and the transitions between them: the one definition everything else derives from."""
import enum


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    # Held back until its moment (not_before) for its wait_reason: its connection's rate limit, the
    # provider's request to slow down, jitter or a spread burst; no worker holds it meanwhile.
    WAITING = "waiting"
    RUNNING = "running"
    # A batch-mode run handed to the provider's Batch API (promptbeat.batches): its batch id is set once
    # its batch is sent, and its result arrives when beat's poll finds the batch ended.
    SUBMITTED = "submitted"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    # Its worker died mid-run and it may not be started again (its attempts are spent), its message was
    # lost and may not be sent again, or it passed its deadline with its worker stuck.
    LOST = "lost"
    # Stopped by an operator; its worker abandons the call and writes nothing more.
    CANCELLED = "cancelled"

    @property
    def is_final(self):
        return self in FINAL


# Which state may go to which. promptbeat.runs.store derives each write's WHERE from this table, so a
# run in any other state is left as it is. RUNNING -> QUEUED is a run whose worker died, put back to be
# started again (promptbeat.runs.recovery); QUEUED -> LOST, one whose message was lost past its attempts.
# QUEUED -> SUBMITTED is a batch-mode run collected by its worker; SUBMITTED -> LOST, one whose batch
# is gone or that outlived the batch window. A waiting run goes on as a queued one would; WAITING ->
# WAITING is a run whose jitter or spread ended waiting again for its place under its connection's rate limit.
TRANSITIONS = {
    RunStatus.QUEUED: frozenset({RunStatus.WAITING, RunStatus.RUNNING, RunStatus.SUBMITTED, RunStatus.SKIPPED,
                                 RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED}),
    RunStatus.WAITING: frozenset({RunStatus.WAITING, RunStatus.RUNNING, RunStatus.SUBMITTED, RunStatus.SKIPPED,
                                  RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED}),
    RunStatus.SUBMITTED: frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.QUEUED, RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.LOST,
                                  RunStatus.CANCELLED}),
    RunStatus.SUCCESS: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.SKIPPED: frozenset(),
    RunStatus.LOST: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}
# Not yet handed to a worker's call: a message carries it (promptbeat.runs.recovery watches its marker).
PENDING = (RunStatus.QUEUED, RunStatus.WAITING)
FINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
# A new run may retry one that ended in one of these.
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED})


def sources(target):
    """The states a run may move to target from, in the table's order."""
    return tuple(status for status, targets in TRANSITIONS.items() if target in targets)
