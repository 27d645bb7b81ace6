"""Container healthcheck: exit 0 only when the service says it is ready (no curl in the images)."""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("SINDER_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=3) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:  # 503 while loading or draining, refused before start
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)
