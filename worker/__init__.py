"""The worker role: `celery -A worker worker` loads worker.celery, which builds the app (importing worker builds none)."""
