"""The container healthcheck: ``python -m agent_manager.deploy.healthcheck [URL]``.

Exits 0 when the server answers ``GET /healthz`` with 200, else 1. It needs nothing
but the standard library (the image has no curl). The default URL is this
container's own server: ``http://127.0.0.1:$AM_PORT/healthz``.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def healthy(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:  # URLError, HTTPError and timeouts are all OSErrors
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else f"http://127.0.0.1:{os.environ.get('AM_PORT', '8001')}/healthz"
    return 0 if healthy(url) else 1


if __name__ == "__main__":
    sys.exit(main())
