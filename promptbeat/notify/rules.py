"""When a finished run notifies its task's channels: the task's notify_on against what the run was."""
from dataclasses import dataclass

from promptbeat.models import NotifyOn
from promptbeat.runs.states import RunStatus

# A run that ended in one of these failed; the next success after one is a recovery.
FAILED = frozenset({RunStatus.FAILED, RunStatus.LOST})


@dataclass(frozen=True)
class RunFacts:
    """What a rule looks at: the run's status and change, the status of the task's previous finished run, and
    whether this run paused its task or was stopped by a budget."""

    status: RunStatus
    changed: bool | None
    previous_status: RunStatus | None
    auto_paused: bool = False
    # A budget stopped it before its call (promptbeat.runs.budget).
    budget_stopped: bool = False


def reasons(notify_on, facts):
    """The rules of notify_on that this run meets, in notify_on's order; empty means no notification.

    A first run (changed is None: nothing to compare with) is not a change: `change` tells of a difference,
    and a task that wants its first answer too also picks `every` or is run by hand once.
    """
    met = []
    for rule in notify_on or ():
        rule = NotifyOn(rule)
        if _meets(rule, facts) and rule not in met:
            met.append(rule)
    return met


def _meets(rule, facts):
    if facts.budget_stopped:
        # A skipped run tells no other rule, as a run skipped for its overlap or bounds does not.
        return rule == NotifyOn.BUDGET or (rule == NotifyOn.AUTO_PAUSE and facts.auto_paused)
    success = facts.status == RunStatus.SUCCESS
    if rule == NotifyOn.EVERY:
        return True
    if rule == NotifyOn.CHANGE:
        return success and facts.changed is True
    if rule == NotifyOn.FAILURE:
        return facts.status in FAILED
    if rule == NotifyOn.RECOVERY:
        return success and facts.previous_status in FAILED
    if rule == NotifyOn.BUDGET:
        return facts.budget_stopped
    return facts.auto_paused
