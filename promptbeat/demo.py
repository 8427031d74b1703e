"""The demo's example tasks, created through the same service as the pages so they run like any other."""
from promptbeat import service
from promptbeat.extensions import db
from promptbeat.fakellm import ERROR_MODEL
from promptbeat.models import Task

# Interval tasks run at once when created, so the first runs (and the failure) show within seconds.
EXAMPLE_TASKS = (
    {"name": "Demo: every minute", "prompt": "Write one line about the minute that just passed.",
     "model": "fake-model", "schedule_type": "interval", "interval_minutes": 1, "enabled": True},
    {"name": "Demo: daily at 09:00", "prompt": "Summarise yesterday in three bullet points.",
     "model": "fake-model", "schedule_type": "fixed_time", "time": "09:00", "timezone": "Europe/London",
     "enabled": True},
    {"name": "Demo: weekdays 09:00 in Shanghai", "prompt": "Good morning, Shanghai: what is on today?",
     "model": "fake-model", "schedule_type": "crontab", "cron": "0 9 * * 1-5", "timezone": "Asia/Shanghai",
     "enabled": True},
    # The fake server answers this model with HTTP 500: a run that fails, and says why.
    {"name": "Demo: failing endpoint", "prompt": "This endpoint always fails.", "model": ERROR_MODEL,
     "schedule_type": "interval", "interval_minutes": 5, "max_attempts": 1, "enabled": True},
)


def seed():
    """Create the example tasks missing by name; returns the tasks created (none on a second start)."""
    existing = set(db.session.execute(
        db.select(Task.name).where(Task.name.in_([task["name"] for task in EXAMPLE_TASKS]))).scalars())
    return [service.create_task(dict(task)) for task in EXAMPLE_TASKS if task["name"] not in existing]
