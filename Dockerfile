# One image for every role: web, worker, beat, flower and the migrate step differ only in their command.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 promptbeat \
    && useradd --system --uid 10001 --gid promptbeat --home-dir /app --shell /usr/sbin/nologin promptbeat

WORKDIR /app
# Dependencies come from pyproject.toml; the package is installed (not editable) into the system site-packages.
COPY pyproject.toml README.md ./
COPY promptbeat ./promptbeat
COPY web ./web
COPY worker ./worker
COPY beat ./beat
RUN pip install . \
    && mkdir -p /app/instance /data \
    && chown promptbeat:promptbeat /app/instance /data

# No secret is baked in: SECRET_KEY, database and API credentials come from the environment at run time.
USER promptbeat
EXPOSE 8000 5555
CMD ["gunicorn", "-c", "python:web.gunicorn_conf", "web.wsgi:app"]
