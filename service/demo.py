"""The browser demo page: ``GET /`` serves ``static/index.html``; ``/static/*`` its script and styles.

Plain files shipped as package data (no build step); the page posts to ``/v1/landmarks`` itself.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["PAGE_HEADERS", "STATIC_DIR", "install_demo"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter()

# The page loads only its own script and stylesheet, draws on a canvas and posts to the service itself.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


def install_demo(app: FastAPI) -> None:
    """Add the demo page's routes to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
