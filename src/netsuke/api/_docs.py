"""The OpenAPI docs pages, ``/api/v1/docs`` (Swagger UI) and ``/api/v1/redoc`` (ReDoc), with
every asset served by the node itself from ``static/vendor`` (no CDN, no web fonts), so they
work offline and behind a firewall. Versions: Swagger UI 5.36.0, ReDoc 2.5.4
(``static/vendor/README.md``). Both pages carry a Content-Security-Policy that lets them load
nothing from elsewhere (ReDoc's sidebar badge points at its vendor's CDN: the browser never
asks for it, and the badge hides itself)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse

__all__ = ["DOCS_ASSETS", "DOCS_CSP", "install_docs"]

DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'self'"
)

VENDOR = "/static/vendor"
DOCS_ASSETS = {
    "swagger_js": f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
    "swagger_css": f"{VENDOR}/swagger-ui/swagger-ui.css",
    "favicon": f"{VENDOR}/swagger-ui/favicon-32x32.png",
    "redoc_js": f"{VENDOR}/redoc/redoc.standalone.js",
}


def install_docs(app: FastAPI, prefix: str) -> None:
    """Serve ``{prefix}/docs`` and ``{prefix}/redoc`` for ``app.openapi_url``."""
    openapi_url = app.openapi_url or f"{prefix}/openapi.json"
    title = f"{app.title} API"

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _locked(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=title,
                swagger_js_url=DOCS_ASSETS["swagger_js"],
                swagger_css_url=DOCS_ASSETS["swagger_css"],
                swagger_favicon_url=DOCS_ASSETS["favicon"],
            )
        )

    @app.get(f"{prefix}/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _locked(
            get_redoc_html(
                openapi_url=openapi_url,
                title=title,
                redoc_js_url=DOCS_ASSETS["redoc_js"],
                redoc_favicon_url=DOCS_ASSETS["favicon"],
                with_google_fonts=False,
            )
        )


def _locked(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
