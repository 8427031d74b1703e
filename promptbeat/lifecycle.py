"""A task's life around its runs: bounds before a run; counts, auto-pause and completion after."""
import logging

from promptbeat.models import ExecutionStatus, ScheduleType, Trigger, utcnow

logger = logging.getLogger(__name__)


def out_of_bounds(task, slot):
    """Why a scheduled run must not start (completed, before start, after end, max runs), else None."""
    if task.completed_at is not None:
        return "Skipped: the task has completed."
    if slot is not None and task.start_at and slot < task.start_at:
        return "Skipped: the slot is before the task's start time."
    if slot is not None and task.end_at and slot > task.end_at:
        return "Skipped: the slot is after the task's end time."
    if task.max_runs and task.run_count >= task.max_runs:
        return f"Skipped: the task already ran its maximum of {task.max_runs} runs."
    return None


def counts(trigger):
    """Whether a run with this trigger counts towards the task's runs and failures (Run now does not)."""
    return trigger != Trigger.MANUAL


def record_outcome(task, trigger, status, error=None):
    """Update counters after a finished run; returns True when the task stopped (paused or completed)."""
    if not counts(trigger) or status == ExecutionStatus.SKIPPED:
        return False
    task.run_count = (task.run_count or 0) + 1
    if status == ExecutionStatus.FAILED:
        task.consecutive_failures = (task.consecutive_failures or 0) + 1
    else:
        task.consecutive_failures = 0

    if task.auto_pause_after and task.consecutive_failures >= task.auto_pause_after:
        task.enabled = False
        task.pause_note = (f"Paused automatically after {task.consecutive_failures} consecutive failures. "
                           f"Last error: {error}")
        logger.warning("task %s paused after %d consecutive failures", task.id, task.consecutive_failures)
        return True
    finished_once = task.schedule_type == ScheduleType.ONCE and trigger == Trigger.SCHEDULED
    if finished_once or (task.max_runs and task.run_count >= task.max_runs):
        task.completed_at = utcnow()
        task.enabled = False
        logger.info("task %s completed after %d run(s)", task.id, task.run_count)
        return True
    return False
