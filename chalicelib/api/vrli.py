"""The Log Insight-compatible API: /api/v1/sessions, /api/v1/licenses (wire contract A).

Every route but login, auth-providers and version needs ``Authorization: Bearer <id>``;
the 401/440 answers are made here, not by an API Gateway authorizer, which can only
answer 401/403/500.  Domain errors become vRLI bodies in :func:`error_response` only.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

from chalice.app import Blueprint, Response

from chalicelib import audit, config, errors, licenses, runtime, sessions
from chalicelib.api.common import handle_errors, json_object, json_response, string_field, text_response
from chalicelib.logs import logger, mask
from chalicelib.models import Session

PREFIX = "/api/v1"
vrli = Blueprint(__name__)

_PROVIDER_PATTERN = re.compile(r"^(Local|ActiveDirectory|vIDM)$")


def _message(message: str, code: str | None = None, details: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"errorMessage": message}
    if code:
        body["errorCode"] = code
    if details:
        body["errorDetails"] = details
    return body


# Status and body for each domain error, in the vRLI wire format (contract A).
_ERRORS: dict[errors.Code, Callable[[errors.KeyturnError], Response]] = {
    errors.Code.BAD_JSON: lambda e: json_response(_message(e.message, "JSON_FORMAT_ERROR", e.detail), 400),
    errors.Code.BAD_FIELD: lambda e: json_response(_message(e.message, "FIELD_ERROR", e.detail), 400),
    errors.Code.BAD_CREDENTIALS: lambda e: json_response(_message(e.message, "FIELD_ERROR"), 401),
    errors.Code.INVALID_SESSION: lambda e: text_response(e.message, 401),
    errors.Code.SESSION_EXPIRED: lambda e: text_response(e.message, 440),
    errors.Code.INVALID_SERIAL: lambda e: json_response(_message(e.message), 400),
    errors.Code.LICENSE_EXISTS: lambda e: json_response(_message(e.message), 409),
    errors.Code.LICENSE_NOT_FOUND: lambda e: json_response(_message(e.message), 404),
    errors.Code.UNSUPPORTED_MEDIA_TYPE: lambda e: json_response(_message(e.message, "JSON_FORMAT_ERROR"), 415),
    errors.Code.METHOD_NOT_ALLOWED: lambda e: json_response(_message(e.message), 405),
}


def error_response(exc: errors.KeyturnError) -> Response:
    translate = _ERRORS.get(exc.code)
    if translate is None:  # an error this API has no wire form for is an internal one
        return json_response(_message(errors.Internal.message, "LICENSE_ERROR"), 500)
    return translate(exc)


def endpoint(path: str, methods: list[str], *, auth: bool = True) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """A vRLI route: errors translated here; with ``auth``, the view gets the live session."""

    def register(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def routed(**kwargs: Any) -> Response:
            def call() -> Response:
                if auth:
                    header = vrli.current_request.headers.get("authorization")
                    session = sessions.authenticate(sessions.bearer_token(header))
                    logger.thread_safe_append_keys(user_id=session.user_id)
                    with audit.acting_as(f"user:{session.username}"):
                        return view(session, **kwargs)
                return view(**kwargs)

            try:
                return handle_errors(error_response, call, vrli.current_request)
            finally:
                logger.thread_safe_remove_keys(["user_id"])

        vrli.route(path, methods=methods)(routed)
        return routed

    return register


@endpoint("/sessions", ["POST"], auth=False)
def login() -> Response:
    body = json_object(vrli.current_request)
    username = string_field(body, "username")
    password = string_field(body, "password")
    provider = string_field(body, "provider")
    if not _PROVIDER_PATTERN.fullmatch(provider):
        raise errors.BadField(detail={"field": "provider",
                                      "reason": "The provider must be one of Local, ActiveDirectory, vIDM."})
    opened = sessions.login(username, password, provider)
    logger.info("login", extra={"username": username, "session": mask(opened.session_id)})
    # Key order matters: shell clients cut this line at its 8th double quote.
    return json_response({"userId": opened.user_id, "sessionId": opened.session_id, "ttl": opened.ttl})


@endpoint("/sessions/current", ["GET"])
def current_session(session: Session) -> Response:
    return json_response({"userId": session.user_id, "ttl": config.current().session_ttl})


@endpoint("/sessions/current", ["DELETE"])
def logout(session: Session) -> Response:
    token = sessions.bearer_token(vrli.current_request.headers.get("authorization"))
    assert token is not None  # authenticated above
    sessions.logout(token)
    return Response(body="", status_code=200)


@endpoint("/auth-providers", ["GET"], auth=False)
def auth_providers() -> Response:
    return json_response({"providers": [sessions.LOCAL_PROVIDER]})


@endpoint("/version", ["GET"], auth=False)
def version() -> Response:
    return json_response({"releaseName": "GA", "version": config.VERSION})


@endpoint("/licenses", ["POST"])
def add_license(session: Session) -> Response:
    body = json_object(vrli.current_request)
    key = body.get("key")
    if key is not None and not isinstance(key, str):
        raise errors.BadField(detail={"field": "key", "reason": "The field must be a string."})
    item = licenses.add(key, added_by=session.username)
    logger.info("license added", extra={"license_id": item.license_id, "key": mask(item.license_key)})
    return json_response({"license": licenses.to_wire(item, runtime.now())}, 201)


@endpoint("/licenses", ["GET"])
def list_licenses(session: Session) -> Response:
    return json_response(licenses.collection(licenses.all_keys(), runtime.now()))


@endpoint("/licenses/{license_id}", ["GET"])
def get_license(session: Session, license_id: str) -> Response:
    return json_response({"license": licenses.to_wire(licenses.find(license_id), runtime.now())})


@endpoint("/licenses/{license_id}", ["DELETE"])
def delete_license(session: Session, license_id: str) -> Response:
    licenses.delete(license_id)
    logger.info("license deleted", extra={"license_id": license_id})
    return Response(body="", status_code=200)
