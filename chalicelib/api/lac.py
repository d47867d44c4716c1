"""The LM-X License Activation Center-compatible API under /rest/v1 (wire contract B).

No authentication: the activation key is the credential.  Bodies are HAL+json with
absolute ``_links`` built from the stage's base URL (see :func:`base_url`); every
domain error becomes ``{"message": ...}`` in :func:`error_response` only.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timezone
from typing import Any, Callable

from chalice.app import Blueprint, Request, Response

from chalicelib import activations, config, errors, keystore
from chalicelib.api.common import handle_errors, json_response
from chalicelib.hostids import HOSTID_TYPES, encode_segment
from chalicelib.logs import logger, mask
from chalicelib.models import Activation, Order

PREFIX = "/rest/v1"
HAL = "application/hal+json"
lac = Blueprint(__name__)

_STATUS: dict[errors.Code, int] = {
    errors.Code.BAD_JSON: 400,
    errors.Code.BAD_FIELD: 400,
    errors.Code.HOSTID_FORMAT: 400,
    errors.Code.HOSTID_TYPE_UNSUPPORTED: 400,
    errors.Code.HOSTID_MISSING: 400,
    errors.Code.HOSTID_TOO_MANY: 400,
    errors.Code.UNSUPPORTED_STATE: 400,
    errors.Code.ORDER_DISABLED: 403,
    errors.Code.BULK_EXCEEDED: 403,
    errors.Code.CANNOT_DEACTIVATE: 403,
    errors.Code.INVALID_ACTIVATION_KEY: 404,
    errors.Code.ACTIVATION_NOT_REQUESTED: 404,
    errors.Code.LICENSE_DOES_NOT_EXIST: 404,
    errors.Code.NO_LICENSES_FOR_STATE: 404,
    errors.Code.NO_ERRORS: 404,
    errors.Code.METHOD_NOT_ALLOWED: 405,
    errors.Code.UNSUPPORTED_MEDIA_TYPE: 415,
    errors.Code.TOO_MANY_ATTEMPTS: 429,
}


def error_response(exc: errors.KeyturnError) -> Response:
    status = _STATUS.get(exc.code)
    if status is None:
        return _hal({"message": "Internal server error."}, 500)
    if isinstance(exc, errors.TooManyAttempts):
        return _hal({"message": exc.message}, status, {"Retry-After": str(exc.retry_after)})
    return _hal({"message": exc.message}, status)


def _hal(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(body, status, {"Vary": "Accept", **(headers or {})}, content_type=HAL)


def endpoint(path: str, methods: list[str]) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    def register(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def routed(**kwargs: Any) -> Response:
            return handle_errors(error_response, view, lac.current_request, **kwargs)

        lac.route(path, methods=methods)(routed)
        return routed

    return register


# --- URLs and bodies ----------------------------------------------------------------

_DOMAIN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def base_url(request: Request) -> str:
    """``scheme://host[/stage]`` of links: the stage's public base URL, else API Gateway's own names.

    Never a client's ``Host`` or ``X-Forwarded-Proto``: those would let any client put
    its own scheme and host (``javascript://``, ``https://evil.example``) into the
    ``Location`` and ``_links`` we answer.  API Gateway's request context names the
    domain it was called on (its own or a custom domain it serves) and the stage; the
    stage is part of the path only when the client called the stage URL.  It speaks
    HTTPS only.
    """
    configured = config.current().public_base_url
    if configured:
        return configured
    context = request.context or {}
    domain = str(context.get("domainName") or "")
    if not _DOMAIN_NAME.fullmatch(domain):
        raise config.ConfigError("no base URL for links: set KEYTURN_PUBLIC_BASE_URL (make run sets it), "
                                 "or serve through API Gateway")
    stage, path = context.get("stage"), str(context.get("path") or "")
    prefix = f"/{stage}" if stage and path.startswith(f"/{stage}/") else ""
    return f"https://{domain}{prefix}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _day(value: str | None) -> str | None:
    """An order date (the last valid day) as the contract's timestamp: midnight UTC of that day."""
    return None if value is None else _iso(datetime.combine(date.fromisoformat(value), datetime.min.time(),
                                                            tzinfo=timezone.utc))


def order_body(order: Order, base: str) -> dict[str, Any]:
    product = order.product.as_dict()
    template = order.hostid.as_dict()
    return {
        "activationKey": order.activation_key,
        "customer": {"name": order.customer["name"]},
        "product": {"name": product["name"], "version": product["version"], "template": product["template"],
                    "licenseGeneratorType": product.get("licenseGeneratorType", "lm_x")},
        "licenseType": order.license_type,
        "creationTime": _iso(activations.utc(int(order.created_at))),
        "activatedLicenses": int(order.activated_licenses),
        "bulkMax": int(order.bulk_max),
        "hostid": {"types": [{"nameRaw": t["nameRaw"], "name": HOSTID_TYPES[t["nameRaw"]],
                              "min": int(t["min"]), "max": int(t["max"])} for t in template["types"]],
                   "min": int(template["min"])},
        "_links": {"self": {"href": f"{base}{PREFIX}/license-orders/{order.activation_key}"}},
    }


def license_body(order: Order, activation: Activation, base: str, segment: str, *, embedded: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "activationKey": order.activation_key,
        "activationTime": _iso(activations.utc(int(activation.activation_time))),
        "expirationDate": _day(order.expiration_date),
        "maintenanceEndDate": _day(order.maintenance_end_date),
        "hostids": [{"nameRaw": h["nameRaw"], "name": HOSTID_TYPES[h["nameRaw"]], "value": h["value"]}
                    for h in activation.hostids],
        "content": activation.content,
        "filename": activation.filename,
        "_links": {"self": {"href": f"{base}{PREFIX}/licenses/{order.activation_key}/{segment}"},
                   "license-order": {"href": f"{base}{PREFIX}/license-orders/{order.activation_key}"}},
    }
    if embedded:
        body["_embedded"] = {"license-orders": [order_body(order, base)]}
    return body


def _segment_of(activation: Activation) -> str:
    """A path segment for a stored activation (list views have no request segment)."""
    return encode_segment(",".join(f"{h['nameRaw']}={h['value']}" for h in activation.hostids))


# --- routes -------------------------------------------------------------------------

@endpoint("/licenses/{key}/{hostids}", ["PUT"])
def activate(key: str, hostids: str) -> Response:
    base = base_url(lac.current_request)  # first: a missing base URL must not leave a seat taken behind a 500
    try:
        activation = activations.activate(key, hostids)
    except errors.InvalidActivationKey as exc:  # the contract's one 400 for an unknown key
        return _hal({"message": exc.message}, 400)
    logger.info("activated", extra={"key": mask(key), "hostids": activation.hostids_key})
    location = f"{base}{PREFIX}/license-queue/{key}/{hostids}"
    return Response(body="", status_code=202, headers={"Location": location, "Vary": "Accept"})


@endpoint("/license-queue/{key}/{hostids}", ["GET"])
def queue(key: str, hostids: str) -> Response:
    activations.queue_status(key, hostids)
    location = f"{base_url(lac.current_request)}{PREFIX}/licenses/{key}/{hostids}"
    return Response(body="", status_code=303, headers={"Location": location, "Vary": "Accept"})


@endpoint("/licenses/{key}/{hostids}", ["GET"])
def download(key: str, hostids: str) -> Response:
    order, activation = activations.download(key, hostids)
    return _hal(license_body(order, activation, base_url(lac.current_request), hostids))


@endpoint("/licenses/{key}/{hostids}", ["DELETE"])
def deactivate(key: str, hostids: str) -> Response:
    activations.deactivate(key, hostids)
    logger.info("deactivated", extra={"key": mask(key)})
    return Response(body="", status_code=204, headers={"Vary": "Accept"})


@endpoint("/licenses/{key}", ["GET"])
def licenses_by_state(key: str) -> Response:
    request = lac.current_request
    raw = request.query_params.get("state") if request.query_params else None
    states = [s.strip() for s in raw.split(",")] if raw is not None else list(activations.STATES)
    order, found = activations.licenses_in_states(key, states)
    base = base_url(request)
    query = f"?state={raw}" if raw is not None else ""
    return _hal({
        "_links": {"self": {"href": f"{base}{PREFIX}/licenses/{order.activation_key}{query}"}},
        "_embedded": {"licenses": [license_body(order, a, base, _segment_of(a), embedded=False) for a in found]},
    })


@endpoint("/license-orders/{key}", ["GET", "HEAD"])
def license_order(key: str) -> Response:
    # HEAD: the HTTP middleware empties the body (chalice local would send one).
    return _hal(order_body(activations.order_for_key(key), base_url(lac.current_request)))


@endpoint("/license-errors/{key}/{hostids}", ["GET"])
def license_errors(key: str, hostids: str) -> Response:
    activations.generation_errors(key, hostids)  # NoReturn: there are never errors to show


@endpoint("/signing-keys", ["GET"])
def signing_keys() -> Response:
    """Extension: the public keys that verify license files, by ``kid`` (KEYID)."""
    return _hal({"keys": [key.public_jwk_like() for key in keystore.signing_keys()]})
