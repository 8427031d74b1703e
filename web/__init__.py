"""The web role: pages and a JSON API on the shared core. `flask --app web run`."""
from flask import jsonify, render_template, request
from flask_babel import gettext as _

from promptbeat.app import create_app as create_core_app
from web import account, api, auth, cli, connection_views, i18n, ops, security, views
from web.auth import csrf, login_manager


def create_app(settings=None, **overrides):
    """Build the web app: the core plus sign-in, CSRF, hardening, languages, pages, the API and admin commands."""
    app = create_core_app(settings, import_name=__name__, **overrides)
    security.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    i18n.init_app(app)
    app.before_request(auth.require_sign_in)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(connection_views.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    csrf.exempt(api.bp)  # the API authenticates with bearer tokens, never with cookies
    cli.register(app)
    views.register_filters(app)

    @app.errorhandler(405)
    def method_not_allowed(error):
        if request.path.startswith("/api/"):
            return jsonify(error="method_not_allowed", message=error.description), 405
        return render_template("error.html", message=error.description), 405

    @app.errorhandler(403)
    def forbidden(error):
        return render_template("error.html", message=_("Your role (viewer) can look but not change anything.")), 403

    @app.errorhandler(404)
    def not_found(error):
        if request.path.startswith("/api/"):
            return jsonify(error="not_found", message="No such API path."), 404
        return render_template("error.html", message=_("Not found.")), 404

    return app
