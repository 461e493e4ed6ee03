"""Container health check for a joulestream service (no curl in the slim image).

Exit 0 when ``http://127.0.0.1:$JOULESTREAM_METRICS_PORT/healthz`` answers 200 (the service
is ready: connected, consuming or sampling), 1 otherwise, printing the service's reason.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("JOULESTREAM_METRICS_PORT", "")
    if not port.isdigit() or int(port) == 0:
        print("JOULESTREAM_METRICS_PORT must be a fixed port for a health check")
        return 1
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            print(r.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as e:  # 503: not ready, the body says why
        print(f"{e.code}: {e.read().decode(errors='replace')}")
    except OSError as e:
        print(f"{url}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
