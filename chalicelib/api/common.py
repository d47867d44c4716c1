"""HTTP plumbing shared by both wire protocols: request ids, body parsing, responses.

Each protocol module supplies its own error translator (``error_response``); this
module only knows which one to use for a path, so Chalice's own errors (405, 415, an
unexpected 500) are rewritten by the one HTTP middleware into the right format.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from chalice.app import Request, Response

from chalicelib import audit, errors
from chalicelib.logs import logger

MAX_BODY_BYTES = 16 * 1024
REQUEST_ID_HEADER = "X-Request-Id"

ErrorTranslator = Callable[[errors.KeyturnError], Response]
_translators: list[tuple[str, ErrorTranslator]] = []

# Chalice's own error bodies ({"Code": ..., "Message": ...}) and what they mean here.
_CHALICE_ERRORS: dict[int, Callable[[], errors.KeyturnError]] = {
    405: errors.MethodNotAllowed,
    415: errors.UnsupportedMediaType,
}


def register_translator(path_prefix: str, translator: ErrorTranslator) -> None:
    _translators.append((path_prefix, translator))


def _translator_for(path: str) -> ErrorTranslator | None:
    for prefix, translator in _translators:
        if path.startswith(prefix):
            return translator
    return None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": content_type, **(headers or {})})


def text_response(body: str, status: int) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "text/plain; charset=utf-8"})


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json``, optionally with ``charset=utf-8`` (names case-insensitive), and nothing else.

    Chalice's own check is looser (``*/*``, ``text/plain, application/json`` and
    ``application/json; charset=utf-16`` all pass it), so requests with a body are checked here.
    """
    if content_type is None:
        return False
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "application/json":
        return False
    if not parameters.strip():
        return True
    name, equals, value = parameters.partition("=")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return bool(equals) and name.strip().lower() == "charset" and value.lower() == "utf-8"


def require_json_body(request: Request) -> None:
    """A request that carries a body must declare it JSON, else :class:`errors.UnsupportedMediaType` (415)."""
    if request.raw_body and not is_json_media_type(request.headers.get("content-type")):
        raise errors.UnsupportedMediaType()


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`errors.BadJson` saying what is wrong."""
    raw = request.raw_body or b""
    if isinstance(raw, str):
        raw = raw.encode()
    if not raw.strip():
        raise errors.BadJson(detail={"reason": "The request body is empty."})
    if len(raw) > MAX_BODY_BYTES:
        raise errors.BadJson(detail={"reason": f"The request body is larger than {MAX_BODY_BYTES} bytes."})
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise errors.BadJson(detail={"reason": "The request body is not UTF-8."}) from None
    except json.JSONDecodeError as exc:
        raise errors.BadJson(detail={"reason": f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."}) from None
    except RecursionError:
        raise errors.BadJson(detail={"reason": "The JSON is nested too deeply."}) from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise errors.BadJson(detail={"reason": f"Malformed JSON: {exc}."}) from None
    if not isinstance(body, dict):
        raise errors.BadJson(detail={"reason": "The request body must be a JSON object."})
    return body


def string_field(body: dict[str, Any], name: str) -> str:
    """A required string field, or :class:`errors.BadField` naming it."""
    if name not in body or body[name] is None:
        raise errors.BadField(detail={"field": name, "reason": "The field is required."})
    value = body[name]
    if not isinstance(value, str):
        raise errors.BadField(detail={"field": name, "reason": "The field must be a string."})
    return value


def handle_errors(translator: ErrorTranslator, view: Callable[..., Response], request: Request,
                  **kwargs: Any) -> Response:
    """Check the body's type, run a view; domain errors become the protocol's bodies, anything else a bare 500."""
    try:
        require_json_body(request)
        return view(**kwargs)
    except errors.KeyturnError as exc:
        if exc.code == errors.Code.INTERNAL:
            logger.error("internal error", extra={"error_code": exc.code.value})
        return translator(exc)
    except Exception:
        logger.exception("unhandled error")
        return translator(errors.Internal())


def http_middleware(event: Request | None, get_response: Callable[[Request | None], Response]) -> Response:
    """Give every routed request an id, log it, and keep Chalice's own bodies off the wire."""
    context = getattr(event, "context", None) or {}
    request_id = str(context.get("requestId") or uuid.uuid4())
    logger.thread_safe_append_keys(request_id=request_id)  # chalice local serves requests in threads
    path = getattr(event, "path", "") or ""
    source_ip = ((context.get("identity") or {}).get("sourceIp")) or "unknown"
    try:
        try:
            with audit.acting_as(f"client:{source_ip}"):  # a logged-in user's routes narrow it to the user
                response = get_response(event)
        except Exception:
            logger.exception("unhandled error outside a view")
            response = Response(body={"Code": "InternalServerError"}, status_code=500)
        translator = _translator_for(path)
        if translator is not None and isinstance(response.body, dict) and "Code" in response.body:
            make_error = _CHALICE_ERRORS.get(response.status_code, errors.Internal)
            allow = response.headers.get("Allow")
            response = translator(make_error())
            if allow:
                response.headers["Allow"] = allow
        if getattr(event, "method", "") == "HEAD":  # errors too: HEAD never has a body
            response.body = ""
        response.headers[REQUEST_ID_HEADER] = request_id
        logger.info("request", extra={"method": getattr(event, "method", ""), "path": path,
                                      "status": response.status_code})
        return response
    finally:
        logger.thread_safe_remove_keys(["request_id"])
