"""The API reference page at /api/docs: the OpenAPI document in a vendored, version-pinned Swagger UI."""
from flask import Blueprint, render_template, url_for

# The one place the vendored viewer's version is named: web/static/vendor/swagger-ui/ holds
# swagger-ui-dist's swagger-ui-bundle.js and swagger-ui.css of this version, with its LICENSE and NOTICE.
# To update: `npm pack swagger-ui-dist@<version>`, copy those four files over, change this line.
SWAGGER_UI_VERSION = "5.36.0"
VENDOR = "vendor/swagger-ui"

bp = Blueprint("api_docs", __name__)


@bp.get("/api/docs")
def page():
    """For signed-in people, like every page; the document itself is public at /api/openapi.json."""
    return render_template("api_docs.html", spec_url=url_for("api.openapi"), vendor=VENDOR,
                           version=SWAGGER_UI_VERSION)
