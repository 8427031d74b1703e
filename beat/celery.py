"""The beat role's app: `celery -A beat beat`, with promptbeat's RedBeat scheduler preset."""
from promptbeat.app import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
celery_app.conf.beat_scheduler = "beat.scheduler:PromptbeatScheduler"
app = celery_app
