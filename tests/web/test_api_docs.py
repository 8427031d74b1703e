"""The /api index, the /api/docs page with its pinned viewer, and the favicon."""
import re
from importlib import metadata
from pathlib import Path

from web.api_docs import SWAGGER_UI_VERSION, VENDOR
from web.security import CONTENT_SECURITY_POLICY

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"


def test_api_index_names_the_version_and_links_to_the_docs(client):
    response = client.get("/api")
    assert response.status_code == 200
    body = response.get_json()
    assert body["version"] == metadata.version("promptbeat")
    assert body["docs"].endswith("/api/docs") and body["openapi"].endswith("/api/openapi.json")
    assert client.get(body["openapi"]).status_code == 200


def test_the_vendored_viewer_is_the_pinned_version_with_its_license():
    folder = STATIC / VENDOR
    assert {path.name for path in folder.iterdir()} == {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"}
    bundle = (folder / "swagger-ui-bundle.js").read_text()
    assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in bundle
    assert "Apache License" in (folder / "LICENSE").read_text()


def test_the_docs_page_loads_the_viewer_from_files_without_inline_script(signed_in):
    page = signed_in.get("/api/docs").get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="/static/' in attributes and not body.strip() for attributes, body in scripts)
    assert f"swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}" in page
    assert 'data-spec-url="/api/openapi.json"' in page
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert 'href="/api/docs"' in signed_in.get("/").get_data(as_text=True)


def test_the_docs_page_needs_sign_in(client):
    response = client.get("/api/docs")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_favicon_on_every_page_and_at_the_browsers_default_address(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.get_data().startswith(b"<svg")
    assert 'rel="icon" href="/static/favicon.svg"' in client.get("/login").get_data(as_text=True)
    with client.get("/static/favicon.svg") as static:
        assert static.status_code == 200
