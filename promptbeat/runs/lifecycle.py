"""A task's life around its runs: bounds before a run; counts, auto-pause and completion after."""
import logging

from promptbeat.models import ScheduleType, Trigger, utcnow

logger = logging.getLogger(__name__)


def out_of_bounds(task, slot):
    """Why a counted run must not start (completed, slot before start or after end, max runs), else None."""
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


def stop_after_run(counters, trigger, error=None):
    """How a task stops after a counted run, from its counters once the run is counted: column values, or None.

    counters has the task's id, run_count, consecutive_failures, auto_pause_after, max_runs and schedule_type.
    """
    if counters.auto_pause_after and counters.consecutive_failures >= counters.auto_pause_after:
        logger.warning("task %s paused after %d consecutive failures", counters.id, counters.consecutive_failures)
        return {"enabled": False,
                "pause_note": (f"Paused automatically after {counters.consecutive_failures} consecutive failures. "
                               f"Last error: {error}")}
    finished_once = counters.schedule_type == ScheduleType.ONCE and trigger == Trigger.SCHEDULED
    if finished_once or (counters.max_runs and counters.run_count >= counters.max_runs):
        logger.info("task %s completed after %d run(s)", counters.id, counters.run_count)
        return {"enabled": False, "completed_at": utcnow()}
    return None
