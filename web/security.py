"""Hardening for the web role: security headers, cookie flags, proxies, sign-in rate limit, roles, audit."""
import functools
import logging
import unicodedata
from urllib.parse import urlsplit

import redis
from flask import abort, current_app, g, has_request_context, jsonify, request
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

audit_logger = logging.getLogger("promptbeat.audit")
logger = logging.getLogger(__name__)

# No inline scripts or handlers anywhere: every script is a file under /static.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def init_app(app):
    """Set cookie flags, trust the configured proxies, and add headers to every response."""
    settings = app.config["PROMPTBEAT"]
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.https,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.https,
        PREFERRED_URL_SCHEME="https" if settings.https else "http",
    )
    if settings.proxy_hops:
        # Behind a reverse proxy, X-Forwarded-Proto tells us the page came over HTTPS.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops,
                                x_host=settings.proxy_hops)

    @app.after_request
    def add_security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.path.startswith(("/tasks", "/api", "/account")) or request.path == "/":
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def audit(action, **details):
    """One log line per change: who did what to which object."""
    user = getattr(g, "api_user", None) or (current_user if current_user and current_user.is_authenticated else None)
    who = user.email if user is not None else "-"
    via = "api" if getattr(g, "api_user", None) is not None else "web" if has_request_context() else "cli"
    parts = " ".join(f"{key}={value!r}" for key, value in details.items())
    audit_logger.info("user=%s via=%s action=%s %s", who, via, action, parts)


def admin_required(view):
    """Only admins may change things: viewers get 403 (JSON under /api)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        user = getattr(g, "api_user", None) or current_user
        if not getattr(user, "is_admin", False):
            if request.blueprint == "api":
                return jsonify(error="forbidden", message="Your role (viewer) cannot change anything."), 403
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def safe_next(target):
    r"""`target` if it is a path on this site, else None: the one check for every `next` and return address.

    Browsers drop tabs and newlines from a URL and read a backslash as a slash, so `/<TAB>/evil.example`
    and `/\evil.example` lead to another site: control characters, backslashes and scheme-relative
    starts are refused rather than cleaned.
    """
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


class SignInLimiterUnavailable(Exception):
    """The failed sign-in count cannot be read, so sign-in must wait."""


class SignInLimiter:
    """At most N failed sign-ins per address per window, counted in Redis so every web process shares them."""

    def __init__(self, redis_url, attempts, window_seconds, prefix):
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.attempts, self.window, self.prefix = attempts, window_seconds, prefix

    def _key(self, address):
        return f"{self.prefix}signin:{address}"

    def blocked(self, address):
        """Whether the address used up its failed sign-ins; SignInLimiterUnavailable when Redis does not answer."""
        try:
            return int(self.client.get(self._key(address)) or 0) >= self.attempts
        except redis.RedisError as error:
            logger.warning("sign-in limiter unavailable; refusing sign-in", exc_info=True)
            raise SignInLimiterUnavailable(str(error)) from error

    def failed(self, address):
        try:
            key = self._key(address)
            # The window starts at the first failure and is not extended by later ones. A window fixed
            # to the clock (a key per period) would reset at each boundary: up to twice N guesses.
            with self.client.pipeline() as pipe:
                pipe.set(key, 0, ex=self.window, nx=True)
                pipe.incr(key)
                pipe.execute()
        except redis.RedisError:
            logger.warning("sign-in limiter unavailable; not counting", exc_info=True)


def signin_limiter():
    """The app's limiter, built on first use."""
    limiter = current_app.extensions.get("signin_limiter")
    if limiter is None:
        settings = current_app.config["PROMPTBEAT"]
        limiter = SignInLimiter(settings.redis_url, settings.signin_attempts, settings.signin_window_seconds,
                                settings.redbeat_key_prefix)
        current_app.extensions["signin_limiter"] = limiter
    return limiter
