"""The worker's log without a line for each fixed job: a sweep every few seconds would bury the runs' lines."""
import logging

# The Celery loggers that write a line as each task is received and as it ends.
TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


class FixedJobsAtDebug(logging.Filter):
    """Keeps the received/succeeded lines of the named tasks only when DEBUG is on."""

    def __init__(self, task_names):
        super().__init__()
        self.task_names = frozenset(task_names)

    def filter(self, record):
        if record.levelno > logging.INFO or not isinstance(record.args, dict):
            return True
        if record.args.get("name") not in self.task_names:
            return True
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_fixed_jobs(celery_app):
    """Log beat_schedule's jobs (the lost-run sweep...) at DEBUG; warnings and failures still show."""
    names = [job["task"] for job in (celery_app.conf.beat_schedule or {}).values()]
    quiet = FixedJobsAtDebug(names)
    for name in TASK_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
