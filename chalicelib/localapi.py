"""``chalice local`` for the local stack, with a listen backlog fit for parallel clients.

Chalice's dev server inherits socketserver's backlog of 5 pending connections, so a
burst of 30 clients (the concurrency tests, a load test) gets connections reset.
This module raises the backlog, then runs the unchanged ``chalice`` command line:
``python -m chalicelib.localapi local --no-autoreload ...``.
"""

from __future__ import annotations

import sys

from chalice import local
from chalice.cli import main

BACKLOG = 128

if __name__ == "__main__":
    local.ThreadedHTTPServer.request_queue_size = BACKLOG
    sys.exit(main())
