"""The worker role: `celery -A worker worker` (and `celery -A worker flower`)."""
from promptbeat.app import create_app
from worker import hygiene

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
hygiene.connect(flask_app)
