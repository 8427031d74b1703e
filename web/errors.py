"""Error answers: JSON under /api, the error page elsewhere; a lost database is a 503 to retry, not a 500."""
import logging

from flask import g, jsonify, render_template, request
from flask_babel import gettext as _
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

logger = logging.getLogger(__name__)
# Long enough for a pool to reconnect or PostgreSQL to restart; short enough that a person just retries.
DATABASE_RETRY_AFTER_SECONDS = 5


def _is_api():
    return request.path.startswith("/api/")


def method_not_allowed(error):
    """405 with the `Allow` header the HTTP spec requires, which a replaced response would lose."""
    if _is_api():
        response = jsonify(error="method_not_allowed", message=error.description)
    else:
        response = render_template("error.html", message=error.description)
    return response, 405, {"Allow": ", ".join(sorted(error.valid_methods or ()))}


def forbidden(error):
    return render_template("error.html", message=_("Your role (viewer) can look but not change anything.")), 403


def not_found(error):
    if _is_api():
        return jsonify(error="not_found", message="No such API path."), 404
    return render_template("error.html", message=_("Not found.")), 404


def bad_request(error):
    return render_template("error.html", message=error.description), 400


def database_unavailable(error):
    """503 with Retry-After when the database connection is lost or refused, instead of a traceback."""
    if isinstance(error, DBAPIError) and not (isinstance(error, OperationalError) or error.connection_invalidated):
        raise error  # a real bug (a constraint, a bad statement): let it be a 500 with its traceback
    logger.warning("database unavailable during %s %s: %s", request.method, request.path, error)
    # The answer must not need the database again: no user to load (auth.load_user), the language from the
    # browser, and no rollback here, which would expire what was loaded; the session ends after the request.
    g.database_unavailable = True
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
    if _is_api():
        return jsonify(error="unavailable", message="The database is unavailable; try again shortly."), 503, headers
    message = _("The database is unavailable at the moment. Try again in a few seconds.")
    return render_template("error.html", message=message), 503, headers


def init_app(app):
    app.register_error_handler(400, bad_request)
    app.register_error_handler(403, forbidden)
    app.register_error_handler(404, not_found)
    app.register_error_handler(405, method_not_allowed)
    # OperationalError (refused, dropped, timed out) is a DBAPIError; so is a closed connection's InterfaceError.
    app.register_error_handler(DBAPIError, database_unavailable)
    app.register_error_handler(DisconnectionError, database_unavailable)
