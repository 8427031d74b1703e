"""Endpoints without sign-in: /healthz for orchestrators, /metrics for Prometheus, /favicon.ico for browsers."""
import hmac
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from promptbeat import health
from promptbeat.metrics import PromptbeatCollector

bp = Blueprint("ops", __name__)
FAVICON = Path(__file__).resolve().parent / "static" / "favicon.svg"


@bp.get("/healthz")
def healthz():
    checks, healthy = health.check_all(current_app)
    return jsonify(status="ok" if healthy else "unavailable", **checks), 200 if healthy else 503


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for it on pages without a <link rel=icon> (JSON, files): the same icon, as SVG."""
    return Response(FAVICON.read_bytes(), mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@bp.get("/metrics")
def metrics():
    settings = current_app.config["PROMPTBEAT"]
    if not settings.metrics_enabled:
        abort(404)
    if settings.metrics_token and not _bearer_matches(settings.metrics_token):
        return "A bearer token is required for /metrics (PROMPTBEAT_METRICS_TOKEN).\n", 401, {
            "WWW-Authenticate": 'Bearer realm="metrics"', "Content-Type": "text/plain"}
    return generate_latest(_registry(current_app)), 200, {"Content-Type": CONTENT_TYPE_LATEST}


def _bearer_matches(expected):
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def _registry(app):
    # One registry per app (not prometheus_client's global one), so several apps in one process never clash.
    registry = app.extensions.get("promptbeat_metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PromptbeatCollector(app))
        app.extensions["promptbeat_metrics"] = registry
    return registry
