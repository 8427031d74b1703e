"""The beat role: `celery -A beat beat` loads beat.celery, which builds the app (importing beat alone builds none)."""
