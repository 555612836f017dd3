"""Container healthcheck: exit 0 when arbbot's HTTP endpoint on loopback answers 200, else 1.

Usage: `python deploy/healthcheck.py [PATH]` (default `/healthz`; the port is `ARBBOT_HTTP_PORT`, default 8787).
Standard library only, and no proxy: an HTTP(S)_PROXY set for reaching the exchanges must not carry a probe of
127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = 8787
TIMEOUT_S = 4.0


def probe(url: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """GET `url` directly; (answered 200, one line saying what happened)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return False, f"{url}: {reason}"
    return status == 200, f"{url}: HTTP {status}"


def main(argv: list[str]) -> int:
    """Probe the path in `argv[1]` (default /healthz) on this container's arbbot port; 0 if healthy."""
    path = argv[1] if len(argv) > 1 else "/healthz"
    port = os.environ.get("ARBBOT_HTTP_PORT") or str(DEFAULT_PORT)
    healthy, line = probe(f"http://127.0.0.1:{port}{path}")
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
