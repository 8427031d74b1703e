"""The web role: forms and a JSON API on the shared core. `flask --app web run`."""
from flask import render_template

from promptbeat.app import create_app as create_core_app
from web import api, auth, cli, connection_views, ops, views
from web.auth import csrf, login_manager


def create_app(settings=None, **overrides):
    """Build the web app: the core plus sign-in, CSRF, pages, the API and admin commands."""
    app = create_core_app(settings, import_name=__name__, **overrides)
    login_manager.init_app(app)
    csrf.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(connection_views.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    csrf.exempt(api.bp)  # the API authenticates with bearer tokens, never with cookies
    cli.register(app)
    views.register_filters(app)

    @app.errorhandler(404)
    def not_found(error):
        return render_template("error.html", message="Not found."), 404

    return app
