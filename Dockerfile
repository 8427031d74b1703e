# One image for every role: web, worker, beat, flower and the migrate step differ only in their command.
# Dependencies come from the lock (requirements.txt) in a layer of their own, before the code, so a code
# change rebuilds only the last layers. Everything installs from wheels, so there is no build stage:
# nothing is compiled that a second stage could leave behind.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 promptbeat \
    && useradd --system --uid 10001 --gid promptbeat --home-dir /app --shell /usr/sbin/nologin promptbeat

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code runs from /app (PYTHONPATH), not installed: nothing to build, and only these layers change.
COPY promptbeat ./promptbeat
COPY web ./web
COPY worker ./worker
COPY beat ./beat
RUN mkdir -p /app/instance /data && chown promptbeat:promptbeat /app/instance /data

# No secret is baked in: SECRET_KEY, database and API credentials come from the environment at run time.
USER promptbeat
EXPOSE 8000 5555
CMD ["gunicorn", "-c", "python:web.gunicorn_conf", "web.wsgi:app"]
