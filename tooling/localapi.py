"""``chalice local`` for the local stack: a listen backlog fit for parallel clients, a
ready file written once the port is bound, and API Gateway's answers as deployed.

Chalice's dev server inherits socketserver's backlog of 5 pending connections, so a
burst of 30 clients (the concurrency tests, a load test) got connections reset.  And
the orchestrator must know that *this* server holds the port, not another program
answering there, so the server writes ``$KEYTURN_API_READY_FILE`` (its pid and port)
after binding.  An unknown route or method gets the deployed API's Gateway Response
(``tooling.template.UNKNOWN_ROUTE``: 404 in both APIs' error formats), not Chalice's
imitation of API Gateway's default 403 ``Missing Authentication Token``.  Otherwise this
runs the unchanged ``chalice`` command line:
``python -m tooling.localapi local --no-autoreload ...``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from chalice import local
from chalice.cli import main

from tooling.template import UNKNOWN_ROUTE

BACKLOG = 128


def _announce_then_serve(original: Any) -> Any:
    def serve_forever(self: local.LocalDevServer) -> None:
        host, port = self.server.server_address[:2]
        # Links (Location, HAL _links) name this server unless the shell chose a base URL:
        # never the client's Host header.  Read by the app when it binds, on the first request.
        os.environ.setdefault("KEYTURN_PUBLIC_BASE_URL", f"http://{host}:{port}")
        ready = os.environ.get("KEYTURN_API_READY_FILE")
        if ready:
            temporary = ready + ".tmp"
            with open(temporary, "w") as handle:
                json.dump({"pid": os.getpid(), "port": self.server.server_address[1]}, handle)
            os.replace(temporary, ready)
        original(self)

    return serve_forever


def _answer_unknown_routes_as_deployed(original: Any) -> Any:
    def send_error_response(self: local.ChaliceRequestHandler, error: local.LocalGatewayException) -> None:
        if isinstance(error, local.ForbiddenError):  # chalice local's "no such route" (with or without a token)
            body = UNKNOWN_ROUTE["ResponseTemplates"]["application/json"].encode()
            self._send_http_response(int(UNKNOWN_ROUTE["StatusCode"]), {"Content-Type": "application/json"}, body)
            return
        original(self, error)

    return send_error_response


if __name__ == "__main__":
    local.ThreadedHTTPServer.request_queue_size = BACKLOG
    local.ChaliceRequestHandler._send_error_response = _answer_unknown_routes_as_deployed(  # type: ignore[method-assign]
        local.ChaliceRequestHandler._send_error_response)
    local.LocalDevServer.serve_forever = _announce_then_serve(local.LocalDevServer.serve_forever)  # type: ignore[method-assign]
    sys.exit(main())
