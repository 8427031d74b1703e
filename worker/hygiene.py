"""Fork hygiene: no database connection crosses a fork; under gevent, psycopg2 cooperates and polls stay cheap.

No session outlives a task either: every task runs in its own application context
(promptbeat.celery_app), and Flask-SQLAlchemy removes the session when that context ends.
"""
import logging

from celery.signals import worker_process_init

from promptbeat.extensions import db
from worker import greenpoll

logger = logging.getLogger(__name__)


def connect(flask_app):
    """Hook the signals for this app, and under gevent make psycopg2 and polls fit its loop."""
    if _gevent_patched():
        make_psycopg2_cooperative()
        if greenpoll.install():
            logger.info("gevent pool: readiness checks poll the operating system directly")

    @worker_process_init.connect(weak=False)
    def dispose_engine_after_fork(**kwargs):
        # Connections opened by the parent before fork must not be shared with children.
        with flask_app.app_context():
            db.engine.dispose(close=False)


def make_psycopg2_cooperative():
    """Under the gevent pool, make psycopg2 wait through gevent so a query never blocks every greenlet.

    Celery's `-P gevent` patches the standard library before this module is imported; psycopg2 is a C
    extension that the patch cannot reach, but it accepts a wait callback, and select() is patched.
    """
    import psycopg2.extensions
    import psycopg2.extras

    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    logger.info("gevent pool: psycopg2 waits cooperatively")


def _gevent_patched():
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")
