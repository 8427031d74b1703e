"""Gunicorn settings for the web role, from the environment: `gunicorn -c python:web.gunicorn_conf web.wsgi:app`."""
import os

bind = os.environ.get("WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
# Requests are short; a stuck one should not hold a worker for long.
timeout = 30
# On SIGTERM, finish in-flight requests within this many seconds (compose's stop_grace_period is longer).
graceful_timeout = 20
accesslog = "-"
errorlog = "-"
# Heartbeat files on tmpfs: a container's overlay filesystem can stall them and get workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Gunicorn 27's control socket (for gunicornc) is not used here; left on it tries to create ~/.gunicorn,
# which the image's user cannot write, and logs an error at every start.
control_socket_disable = True
