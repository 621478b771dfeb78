"""Container health check: exit 0 when the service answers ``GET /readyz`` with a 2xx status.

Used by the images' HEALTHCHECK (standard library only, so it works in every image). The port is
WINGMARK_PORT (default 8000); WINGMARK_HEALTHCHECK_URL overrides the whole address.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def readyz_url() -> str:
    """The address to probe, from the environment."""
    override = os.environ.get("WINGMARK_HEALTHCHECK_URL")
    if override:
        return override
    port = os.environ.get("WINGMARK_PORT", "8000")
    return f"http://127.0.0.1:{port}/readyz"


def main() -> int:
    url = readyz_url()
    timeout = float(os.environ.get("WINGMARK_HEALTHCHECK_TIMEOUT", "4"))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:  # 4xx/5xx, e.g. 503 while models load
        print(f"unhealthy: {url} answered {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # refused, timed out, bad address
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if not 200 <= status < 300:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
