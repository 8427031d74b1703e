"""The web role: pages and a JSON API on the shared core. `flask --app web run`."""
from promptbeat.app import create_app as create_core_app
from web import (account, api, api_docs, auth, channel_views, cli, connection_views, errors, i18n, ops, run_history,
                 run_views, security, times, user_views, views)
from web.auth import csrf, login_manager


def create_app(settings=None, **overrides):
    """Build the web app: the core plus sign-in, CSRF, hardening, languages, pages, the API, errors and commands."""
    app = create_core_app(settings, import_name=__name__, **overrides)
    security.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    i18n.init_app(app)
    times.init_app(app)
    run_history.init_app(app)
    app.before_request(auth.require_sign_in)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(connection_views.bp)
    app.register_blueprint(channel_views.bp)
    app.register_blueprint(run_views.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(api_docs.bp)
    app.register_blueprint(user_views.bp)
    app.register_blueprint(ops.bp)
    csrf.exempt(api.bp)  # the API authenticates with bearer tokens, never with cookies
    cli.register(app)
    views.register_filters(app)
    errors.init_app(app)
    return app
