"""The browser demo page: ``GET /`` serves ``static/index.html``; ``/static/*`` its script and styles.

Plain files shipped as package data (no build step); the page posts to ``/v1/landmarks`` itself.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "install_demo"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


def install_demo(app: FastAPI) -> None:
    """Add the demo page's routes to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
