"""Task events sent in batches under the pools that run without Celery's event loop (gevent, eventlet, solo)."""
from celery import bootsteps

# How long a task event may wait before it is sent with the others of that moment.
FLUSH_SECONDS = 0.1


class BatchTaskEvents(bootsteps.StartStopStep):
    """Buffer task events and send them every FLUSH_SECONDS, one message per batch.

    Under prefork and threads Celery's consumer runs an event loop and already sends each loop's
    task events as one message. Under gevent it has no loop and sends every event as a message of
    its own: three Redis round trips per run, where one message per batch of runs would do
    (docs/performance.md). Flower reads batches as it reads the event loop's.
    """

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.flusher = None

    def start(self, c):
        dispatcher = c.event_dispatcher
        # The event loop batches already; a worker without task events has nothing to batch.
        if c.hub is not None or dispatcher is None or not dispatcher.enabled:
            return
        if dispatcher.groups and "task" not in dispatcher.groups:
            return
        dispatcher.buffer_group = frozenset({"task"})
        self.flusher = c.timer.call_repeatedly(FLUSH_SECONDS, dispatcher.flush)

    def stop(self, c):
        # Runs before the Events step closes the dispatcher, so the last batch is not lost.
        if self.flusher is None:
            return
        self.flusher.cancel()
        self.flusher = None
        if c.event_dispatcher is not None:
            c.event_dispatcher.flush()
