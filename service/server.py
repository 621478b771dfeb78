"""``wingmark serve``: run the HTTP service under uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from service.settings import Settings, get_settings

__all__ = ["serve_main", "uvicorn_options"]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments from the settings (all but the app)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": settings.uvicorn_http,
        "loop": settings.uvicorn_loop,
        "timeout_graceful_shutdown": int(settings.graceful_timeout_s),
        "proxy_headers": settings.proxy_headers,  # uvicorn itself trusts loopback's X-Forwarded-For
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "lifespan": "on",
    }


def serve_main(argv: list[str]) -> int:
    """Start uvicorn on WINGMARK_HOST:WINGMARK_PORT (flags override); returns when the server has stopped."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="wingmark serve", description="Run the wingmark landmark service.")
    parser.add_argument("--host", default=settings.host, help="bind address (WINGMARK_HOST)")
    parser.add_argument("--port", type=int, default=settings.port, help="port (WINGMARK_PORT)")
    parser.add_argument("--log-level", default=settings.log_level, help="uvicorn log level")
    args = parser.parse_args(argv)

    import uvicorn

    from service.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = {**uvicorn_options(settings), "host": args.host, "port": args.port, "log_level": args.log_level}
    config = uvicorn.Config(create_app(settings), **options)
    server = uvicorn.Server(config)
    server.run()
    return 0
