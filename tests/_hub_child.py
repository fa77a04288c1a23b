"""Run ``hub.ensure_weights`` (or ``hub.fetch``) in a fresh process, as a run's parent would.

The hub clients read their endpoint and offline settings from the environment when they are
first imported, so every download test runs here, with the environment the test chose.
Prints one JSON line per event, then one line ``{"result": ...}``; exit 0 ok, 3 refused.

    python tests/_hub_child.py ensure|fetch BACKEND [--no-download]
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys


def main() -> int:
    from whisperjav_enhance import hub
    from whisperjav_enhance.errors import EnhanceError

    mode, backend = sys.argv[1], sys.argv[2]
    allow = "--no-download" not in sys.argv[3:]

    def on_event(event) -> None:
        print(json.dumps({"event": type(event).__name__, "pid": os.getpid(),
                          **dataclasses.asdict(event)}), flush=True)

    try:
        if mode == "ensure":
            hub.ensure_weights(backend, None, on_event, allow_download=allow)
            path = None
        else:
            path = hub.fetch(backend, on_event)
    except EnhanceError as exc:
        print(json.dumps({"result": "error", "type": type(exc).__name__, "message": str(exc)}),
              flush=True)
        return 3
    print(json.dumps({"result": "ok", "path": str(path) if path else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
