"""``chalice local`` for the local stack: a listen backlog fit for parallel clients, a
ready file written once the port is bound, and API Gateway's answers as deployed.

Chalice's dev server inherits socketserver's backlog of 5 pending connections, so a
burst of 30 clients (the concurrency tests, a load test) got connections reset.  And
the orchestrator must know that *this* server holds the port, not another program
answering there, so the server writes ``$KEYTURN_API_READY_FILE`` (its pid and port)
after binding.  An unknown route or method gets the deployed API's Gateway Response
(``tooling.template.UNKNOWN_ROUTE``: 404 in both APIs' error formats), not Chalice's
imitation of API Gateway's default 403 ``Missing Authentication Token``.  What the HTTP
server answers itself (a method it has no handler for, such as TRACE, QUERY or FOO; an
oversized request line or header; a malformed request) is JSON in the API's format, not
``http.server``'s HTML pages: a method a route does not serve is 405 with ``Allow``, as
the app answers the methods it knows.  Its access log masks activation and license
keys, as the app's own log does.  Otherwise this runs the unchanged ``chalice`` command
line:
``python -m tooling.localapi local --no-autoreload ...``.
"""

from __future__ import annotations

import json
import os
import sys
from http import HTTPStatus
from typing import Any

from chalice import local
from chalice.cli import main

from chalicelib.logs import mask_keys
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


# What http.server answers itself, as the APIs word it.
_MESSAGES: dict[int, str] = {
    HTTPStatus.BAD_REQUEST: "Bad request.",
    HTTPStatus.REQUEST_URI_TOO_LONG: "The request URL is too long.",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "The request headers are too large.",
}
VRLI_PREFIX, LAC_PREFIX = "/api/v1/", "/rest/v1/"  # chalicelib.api.vrli.PREFIX, lac.PREFIX (not imported: no app)


def error_answer(path: str | None, status: int, message: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of an error the server answers itself, in the format of the path's API.

    A path of neither API (or none: a request line too long to read) gets both keys, as
    the deployed API's Gateway Responses do.
    """
    path = path or ""
    if path.startswith(VRLI_PREFIX):
        return {"Content-Type": "application/json"}, json.dumps({"errorMessage": message}).replace(": ", ":").encode()
    if path.startswith(LAC_PREFIX):
        return ({"Content-Type": "application/hal+json", "Vary": "Accept"},
                json.dumps({"message": message}).replace(": ", ":").encode())
    return {"Content-Type": "application/json"}, json.dumps({"errorMessage": message, "message": message}).encode()


def _route_methods(handler: local.ChaliceRequestHandler, path: str) -> list[str] | None:
    """The methods of the route ``path`` matches, or None when it matches none."""
    routes = handler.local_gateway._app_object.routes
    try:
        matched = local.RouteMatcher(list(routes)).match_route(path)
    except ValueError:
        return None
    return list(routes[matched.route])


def send_error_in_api_format(self: local.ChaliceRequestHandler, code: int, message: str | None = None,
                             explain: str | None = None) -> None:
    """``BaseHTTPRequestHandler.send_error``, answering JSON in the API's format instead of an HTML page."""
    path = getattr(self, "path", None) if getattr(self, "requestline", "") else None
    headers: dict[str, str] = {}
    if code == HTTPStatus.NOT_IMPLEMENTED and path is not None:  # a method http.server has no do_<METHOD> for
        methods = _route_methods(self, path.split("?")[0])
        if methods is None:
            status, (headers, body) = int(UNKNOWN_ROUTE["StatusCode"]), (
                {"Content-Type": "application/json"}, UNKNOWN_ROUTE["ResponseTemplates"]["application/json"].encode())
        else:
            status, (headers, body) = HTTPStatus.METHOD_NOT_ALLOWED, error_answer(path, 405, "Method not allowed.")
            headers["Allow"] = ", ".join(methods)
    else:
        status = code
        headers, body = error_answer(path, code, _MESSAGES.get(code, "The request was refused."))
    self.log_error("code %d, message %s", status, message or "")
    self.send_response(status)
    self.send_header("Connection", "close")
    self.close_connection = True
    for name, value in headers.items():
        self.send_header(name, value)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if getattr(self, "command", "") != "HEAD":
        self.wfile.write(body)


def _masked_access_log(original: Any) -> Any:
    def log_message(self: local.ChaliceRequestHandler, format: str, *args: Any) -> None:
        original(self, "%s", mask_keys(format % args))

    return log_message


if __name__ == "__main__":
    local.ThreadedHTTPServer.request_queue_size = BACKLOG
    local.ChaliceRequestHandler._send_error_response = _answer_unknown_routes_as_deployed(  # type: ignore[method-assign]
        local.ChaliceRequestHandler._send_error_response)
    local.ChaliceRequestHandler.send_error = send_error_in_api_format
    local.ChaliceRequestHandler.log_message = _masked_access_log(local.ChaliceRequestHandler.log_message)
    local.LocalDevServer.serve_forever = _announce_then_serve(local.LocalDevServer.serve_forever)  # type: ignore[method-assign]
    sys.exit(main())
