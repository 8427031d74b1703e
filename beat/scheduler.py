"""RedBeat scheduler that reconciles its entries from the database while it holds the lock."""
import logging
import time

from redbeat import RedBeatScheduler

from promptbeat.entries import TaskEntry
from promptbeat.extensions import db
from promptbeat.models import Task
from promptbeat.sync import reconcile

logger = logging.getLogger(__name__)


class PromptbeatScheduler(RedBeatScheduler):
    """Fires task entries; reconciles them from the database at start and every few seconds."""

    Entry = TaskEntry

    def __init__(self, app, **kwargs):
        self._next_reconcile = 0.0
        super().__init__(app, **kwargs)

    def tick(self, **kwargs):
        # tick runs only after beat_init took the RedBeat lock, so a standby never writes.
        if time.monotonic() >= self._next_reconcile:
            self.reconcile_now()
        return super().tick(**kwargs)

    def reconcile_now(self):
        """Rewrite entries from the database; a failure is logged and retried next tick."""
        settings = self.app.flask_app.config["PROMPTBEAT"]
        try:
            with self.app.flask_app.app_context():
                tasks = db.session.execute(db.select(Task).where(Task.enabled.is_(True))).scalars().all()
                result = reconcile(self.app, tasks)
                db.session.remove()
        except Exception:
            logger.exception("reconcile failed; retrying in 5 s")
            self._next_reconcile = time.monotonic() + 5
            return None
        self._next_reconcile = time.monotonic() + settings.reconcile_seconds
        if result.added or result.updated or result.removed:
            logger.info("reconcile: %s", result)
        return result

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        # Tell the worker when beat fired, so the task's phase in the database follows beat's.
        entry.kwargs = {**(entry.kwargs or {}), "fired_at": self.app.now().isoformat()}
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
