"""Health checks of the two services every role needs: the database and Redis."""
import logging

import redis as redis_lib
from sqlalchemy import text

from promptbeat.extensions import db

logger = logging.getLogger(__name__)
# A health check must answer quickly even when Redis hangs rather than refuses.
REDIS_TIMEOUT_SECONDS = 2.0


def redis_client(app):
    """A Redis client for checks and metrics, with short timeouts; one per app, shared by threads."""
    client = app.extensions.get("promptbeat_redis")
    if client is None:
        settings = app.config["PROMPTBEAT"]
        client = redis_lib.Redis.from_url(
            settings.redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        app.extensions["promptbeat_redis"] = client
    return client


def check_database():
    """'ok', or a short reason the database cannot be queried (details go to the log, not the caller)."""
    try:
        db.session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        db.session.rollback()
        logger.warning("health: database check failed: %s", exc)
        return f"unavailable ({type(exc).__name__})"


def check_redis(app):
    """'ok', or a short reason Redis does not answer PING."""
    try:
        redis_client(app).ping()
        return "ok"
    except Exception as exc:
        logger.warning("health: redis check failed: %s", exc)
        return f"unavailable ({type(exc).__name__})"


def check_all(app):
    """The status of each dependency, and whether all are ok."""
    checks = {"database": check_database(), "redis": check_redis(app)}
    return checks, all(value == "ok" for value in checks.values())
