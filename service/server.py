"""``wingmark serve``: run the HTTP service under uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from service.connections import http_protocol
from service.settings import Settings, get_settings

__all__ = ["raise_fd_limit", "serve_main", "uvicorn_options"]


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-file limit towards the hard one so that ``needed`` descriptors fit: past the
    limit, accept() fails and a client is dropped with no answer, while under it a client beyond
    ``limit_concurrency`` is answered 503 problem+json (``service.overload``). Returns the soft limit
    now in force."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
        if soft < needed:
            logging.getLogger("wingmark.service").warning(
                "open-file limit %d is under the %d that limit_concurrency needs: lower it", soft, needed
            )
    return int(soft)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments from the settings (all but the app)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": http_protocol(settings.uvicorn_http, settings.head_timeout_s, settings.limit_concurrency),
        "timeout_keep_alive": settings.timeout_keep_alive_s,
        # uvicorn's own limit answers plain text: the app (service.overload) and the protocol limit instead
        "limit_concurrency": None,
        "h11_max_incomplete_event_size": settings.max_head_bytes,
        "backlog": settings.backlog,
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

    raise_fd_limit(settings.limit_concurrency + 64)

    from service.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = {**uvicorn_options(settings), "host": args.host, "port": args.port, "log_level": args.log_level}
    config = uvicorn.Config(create_app(settings), **options)
    server = uvicorn.Server(config)
    server.run()
    return 0
