"""The worker role's app: `celery -A worker worker` (and `celery -A worker flower`)."""
from promptbeat.app import create_app
from promptbeat.settings import Settings, engine_options
from worker import events, hygiene

settings = Settings.from_environ()
# Each write a worker makes is one statement that stands alone, so it runs in autocommit: at hundreds
# of runs a second, BEGIN and COMMIT round trips were an eighth of the worker's CPU (docs/performance.md).
flask_app = create_app(settings, SQLALCHEMY_ENGINE_OPTIONS=engine_options(
    settings.database_url, settings.db_pool_size, autocommit=True))
celery_app = flask_app.extensions["celery"]
hygiene.connect(flask_app)
celery_app.steps["consumer"].add(events.BatchTaskEvents)
app = celery_app
