"""Process hygiene: no connection crosses a fork, a clean exit ends its heartbeat, psycopg2 and polls fit gevent.

No session outlives a task either: every task runs in its own application context
(promptbeat.celery_app), and Flask-SQLAlchemy removes the session when that context ends.
"""
import logging

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from promptbeat.runs import liveness
from promptbeat.extensions import db
from worker import greenpoll

logger = logging.getLogger(__name__)


def connect(flask_app):
    """Hook the signals for this app, and under gevent make psycopg2 and polls fit its loop.

    Readiness checks go to the operating system only with PROMPTBEAT_FAST_GEVENT_POLL on (worker.greenpoll).
    """
    if _gevent_patched():
        make_psycopg2_cooperative()
        if flask_app.config["PROMPTBEAT"].fast_gevent_poll and greenpoll.install():
            logger.info("gevent pool: readiness checks poll the operating system directly")

    @worker_process_init.connect(weak=False)
    def dispose_engine_after_fork(**kwargs):
        # Connections opened by the parent before fork must not be shared with children.
        with flask_app.app_context():
            db.engine.dispose(close=False)

    # A process that exits cleanly stops being a runner at once (a prefork child, or the worker itself
    # under the other pools); one that dies is noticed when its heartbeat ages (promptbeat.runs.recovery).
    worker_process_shutdown.connect(_stop_runner, weak=False)
    worker_shutdown.connect(_stop_runner, weak=False)


def _stop_runner(**kwargs):
    liveness.stop()


def make_psycopg2_cooperative():
    """Under the gevent pool, make psycopg2 wait through gevent so a query never blocks every greenlet.

    Celery's `-P gevent` patches the standard library before this module is imported; psycopg2 is a C
    extension that the patch cannot reach, but it accepts a wait callback.
    """
    from gevent.socket import wait_read, wait_write
    from psycopg2 import OperationalError, extensions

    def wait_through_gevent(connection):
        """Drive the connection, waiting on its socket in gevent's loop.

        psycopg2.extras.wait_select does the same through the patched select(), which builds a watcher
        set and a result object for every wait, a cost paid on every query (docs/performance.md).
        """
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            if state == extensions.POLL_READ:
                wait_read(connection.fileno())
            elif state == extensions.POLL_WRITE:
                wait_write(connection.fileno())
            else:
                raise OperationalError(f"unexpected state from psycopg2's poll(): {state}")

    extensions.set_wait_callback(wait_through_gevent)
    logger.info("gevent pool: psycopg2 waits cooperatively")


def _gevent_patched():
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")
