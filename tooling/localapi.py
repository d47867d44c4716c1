"""``chalice local`` for the local stack: a listen backlog fit for parallel clients, and
a ready file written once the port is bound.

Chalice's dev server inherits socketserver's backlog of 5 pending connections, so a
burst of 30 clients (the concurrency tests, a load test) got connections reset.  And
the orchestrator must know that *this* server holds the port, not another program
answering there, so the server writes ``$KEYTURN_API_READY_FILE`` (its pid and port)
after binding.  Otherwise this runs the unchanged ``chalice`` command line:
``python -m tooling.localapi local --no-autoreload ...``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from chalice import local
from chalice.cli import main

BACKLOG = 128


def _announce_then_serve(original: Any) -> Any:
    def serve_forever(self: local.LocalDevServer) -> None:
        ready = os.environ.get("KEYTURN_API_READY_FILE")
        if ready:
            temporary = ready + ".tmp"
            with open(temporary, "w") as handle:
                json.dump({"pid": os.getpid(), "port": self.server.server_address[1]}, handle)
            os.replace(temporary, ready)
        original(self)

    return serve_forever


if __name__ == "__main__":
    local.ThreadedHTTPServer.request_queue_size = BACKLOG
    local.LocalDevServer.serve_forever = _announce_then_serve(local.LocalDevServer.serve_forever)  # type: ignore[method-assign]
    sys.exit(main())
