"""The worker role's app: `celery -A worker worker`, with the worker's replacements of library internals."""
import logging

from worker import broker
from promptbeat.llm import client as llm
from promptbeat.app import create_app
from promptbeat.settings import Settings, engine_options
from worker import events, hygiene, logs

logger = logging.getLogger(__name__)

settings = Settings.from_environ()
# Before the app is built, so that no broker connection has resolved kombu's transport yet. Each is
# installed only if its setting is on and the installed library is one it was written for.
fast_broker = settings.fast_broker and broker.install()
fast_llm_calls = settings.fast_llm_calls and llm.install()
# Each write a worker makes is one statement that stands alone, so it runs in autocommit, sparing
# every write the round trips of a BEGIN and a COMMIT (docs/performance.md).
flask_app = create_app(settings, SQLALCHEMY_ENGINE_OPTIONS=engine_options(
    settings.database_url, settings.db_pool_size, autocommit=True))
logger.info("fast broker transport: %s; fast LLM calls: %s",
            "on" if fast_broker else "off", "on" if fast_llm_calls else "off")
celery_app = flask_app.extensions["celery"]
hygiene.connect(flask_app)
logs.quiet_fixed_jobs(celery_app)
celery_app.steps["consumer"].add(events.BatchTaskEvents)
app = celery_app
