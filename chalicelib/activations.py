"""Activation, download and deactivation of licenses (the LAC end-user flows).

Seats cannot be oversold: a new activation is one DynamoDB transaction that puts the
activation only if it is absent and adds one to the order's counter only while it is
below ``bulk_max`` on an enabled order; a deactivation deletes the activation and
takes the seat back in one transaction too, never below zero and only within the
order's deactivation allowance.  No invariant rests on a read followed by a write.

Reads: every call starts with one ``BatchGetItem`` of the order and the host's
activation (one request, consistent reads), so a repeat activation or a download costs
one read request and no write, and a new activation one read plus one transaction.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, NoReturn

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import audit, errors, hostids, keystore, ratelimits, runtime, seats
from chalicelib.config import current
from chalicelib.models import CONFLICT_ATTEMPTS, Activation, AuditHead, Order, connection

STATES = ("success", "failed", "in_progress")


@dataclass(frozen=True)
class Lookup:
    """An order and, if this host has one, its activation, read together."""

    order: Order
    activation: Activation | None
    hostids: tuple[hostids.HostId, ...]
    hostids_key: str
    audit_head: AuditHead | None = None


KEY_PATTERN = re.compile(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){3}")


def normalise_key(activation_key: str) -> str:
    """The stored form of an activation key, or ``InvalidActivationKey`` without any lookup."""
    key = activation_key.strip().upper()
    if not KEY_PATTERN.fullmatch(key):
        raise errors.InvalidActivationKey()
    return key


def _read(activation_key: str, segment: str) -> Lookup:
    """Read the order and this host's activation in one request (consistent reads).

    The key is checked before the host ids: an unknown key is reported as such even
    when the host ids are garbled too (the extra order read happens only then).
    ``BatchGetItem`` rather than ``TransactGetItems``: no snapshot across the two items
    is needed (the seat transaction's conditions decide), and unlike a transactional
    read it costs one read unit per item and is never cancelled by a concurrent
    activation writing the order.
    """
    key = normalise_key(activation_key)
    try:
        ids = hostids.parse_hostids(segment)
        hostids_key = hostids.canonical(ids)
    except errors.HostIdFormat:
        order_for_key(key, check_enabled=False)
        raise
    order_get = Order.get_operation_kwargs_from_class(key)
    activation_get = Activation.get_operation_kwargs_from_class(key, hostids_key)
    head_get = audit.head_key(entity_of(key, hostids_key))  # the host's audit chain, for the change to come
    found = batch_get(connection().dispatch, {
        order_get["TableName"]: {"Keys": [order_get["Key"]], "ConsistentRead": True},
        activation_get["TableName"]: {"Keys": [activation_get["Key"]], "ConsistentRead": True},
        head_get["TableName"]: {"Keys": [head_get["Key"]], "ConsistentRead": True},
    })
    orders = found.get(order_get["TableName"], [])
    if not orders:
        raise errors.InvalidActivationKey()
    stored = found.get(activation_get["TableName"], [])
    activation = Activation.from_raw_data(stored[0]) if stored else None
    heads = found.get(head_get["TableName"], [])
    return Lookup(Order.from_raw_data(orders[0]), activation, ids, hostids_key,
                  audit.head_from_raw(heads[0] if heads else None))


def entity_of(activation_key: str, hostids_key: str) -> str:
    """The audit entity of one host's seat on an order: its activations, deactivations, revocations."""
    return f"activation#{activation_key}#{hostids_key}"


def batch_get(dispatch: Callable[[str, dict[str, Any]], dict[str, Any]],
              request_items: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``BatchGetItem`` until DynamoDB has answered every key (it may leave some unprocessed)."""
    found: dict[str, list[dict[str, Any]]] = {}
    pending = request_items
    for tries in range(CONFLICT_ATTEMPTS):
        response = dispatch("BatchGetItem", {"RequestItems": pending})
        for table, items in response.get("Responses", {}).items():
            found.setdefault(table, []).extend(items)
        pending = response.get("UnprocessedKeys") or {}
        if not pending:
            return found
        time.sleep(random.uniform(0, 0.01 * 2 ** min(tries, 6)))
    raise RuntimeError("DynamoDB kept leaving keys of a BatchGetItem unprocessed")


def _enabled(lookup: Lookup) -> Lookup:
    if not lookup.order.enabled:
        raise errors.OrderDisabled()
    return lookup


def _expiration(order: Order) -> date | None:
    return date.fromisoformat(order.expiration_date) if order.expiration_date else None


def _license_file(order: Order, key: str, generated_at: datetime) -> tuple[str, str]:
    from chalicelib.licensefile import FeatureSpec, render_license

    signing_key = keystore.signing_keys()[0]
    network = order.license_type == "network"
    features = [FeatureSpec(str(f["name"]), str(f["version"]), int(f["count"]) if network else None)
                for f in order.features]
    vendor = current().vendor
    text = render_license(issuer=vendor, vendor=vendor, activation_key=order.activation_key,
                          features=features, hostids_canonical=key, generated_at=generated_at,
                          expiration_date=_expiration(order), signing_key=signing_key)
    return text, signing_key.kid


def activate(activation_key: str, segment: str) -> Activation:
    """Take a seat for this host and sign its license; a repeat returns the same license.

    Each attempt with a well-formed key counts against the stage's activation rate limit
    first (one UpdateItem when a limit is set), before the key is looked up.
    """
    ratelimits.take(f"activate#{normalise_key(activation_key)}", current().activation_rate_limit)
    for _ in range(CONFLICT_ATTEMPTS):
        lookup = _enabled(_read(activation_key, segment))
        if lookup.activation is not None:
            return lookup.activation
        hostids.check_template(lookup.hostids, lookup.order.hostid.as_dict())
        activation = _new_activation(lookup)
        try:
            taken = _take_seat(activation, lookup.audit_head)
        except TransactWriteError as exc:
            host_reason, order_reason = (audit.change_reasons(exc, deletes_and_puts=1) + [None, None])[:2]
            if host_reason == "ConditionalCheckFailed":
                continue  # the same host won a race: read its license (or try again if it is gone)
            if order_reason == "ConditionalCheckFailed":
                latest = _read(activation_key, segment).order
                if not latest.enabled:
                    raise errors.OrderDisabled() from None
                seats.refused(latest)
                raise errors.BulkExceeded() from None
            raise
        seats.activated(lookup.order)
        return taken
    raise RuntimeError("activation kept racing with deactivations of the same host")


def _new_activation(lookup: Lookup) -> Activation:
    from chalicelib.licensefile import filename_for

    generated_at = runtime.now()
    content, kid = _license_file(lookup.order, lookup.hostids_key, generated_at)
    return Activation(
        lookup.order.activation_key, lookup.hostids_key,
        hostids=[{"nameRaw": h.name_raw, "value": h.value} for h in lookup.hostids],
        activation_time=int(generated_at.timestamp() * 1000), content=content,
        filename=filename_for(generated_at), kid=kid, state="success",
    )


def _take_seat(activation: Activation, head: AuditHead | None) -> Activation:
    # The whole invariant: the host has no seat yet, and the order still has one to give.
    seat_is_free = ((Order.activated_licenses < Order.bulk_max) & (Order.enabled == True)  # noqa: E712
                    & Order.activation_key.exists())

    def change(write: TransactWrite) -> None:
        write.save(activation, condition=Activation.hostids_key.does_not_exist())
        write.update(Order(activation.activation_key), actions=[Order.activated_licenses.add(1)],
                     condition=seat_is_free)

    audit.transact(entity_of(activation.activation_key, activation.hostids_key), "activated",
                   {"hostids": activation.hostids, "kid": activation.kid}, change, head=head)
    return activation


def download(activation_key: str, segment: str) -> tuple[Order, Activation]:
    lookup = _enabled(_read(activation_key, segment))
    if lookup.activation is None:
        raise errors.LicenseDoesNotExist()
    return lookup.order, lookup.activation


def queue_status(activation_key: str, segment: str) -> Activation:
    """Generation is synchronous: a requested activation is always finished."""
    lookup = _enabled(_read(activation_key, segment))
    if lookup.activation is None:
        raise errors.ActivationNotRequested()
    return lookup.activation


def generation_errors(activation_key: str, segment: str) -> NoReturn:
    """A failed generation rolls back and leaves nothing stored, so there are never errors to show."""
    _enabled(_read(activation_key, segment))
    raise errors.NoErrors()


def deactivate(activation_key: str, segment: str) -> None:
    """Give the host's seat back, within the order's deactivation allowance."""
    lookup = _read(activation_key, segment)
    if not lookup.order.enabled:
        raise errors.CannotDeactivate()
    if lookup.activation is None:
        raise errors.LicenseDoesNotExist()
    # A seat to give back, an allowance left, and the order still enabled.
    may_deactivate = ((Order.activated_licenses > 0) & (Order.enabled == True)  # noqa: E712
                      & (Order.deactivations_used < Order.deactivations_allowed))
    _free_seat(lookup, may_deactivate, [Order.deactivations_used.add(1)], errors.CannotDeactivate, "deactivated")
    seats.released(lookup.order)


def revoke(activation_key: str, segment: str) -> None:
    """Operator action: free a host's seat whatever the order's allowance (not counted in it)."""
    lookup = _read(activation_key, segment)
    if lookup.activation is None:
        raise errors.LicenseDoesNotExist()
    _free_seat(lookup, Order.activated_licenses > 0, [], errors.LicenseDoesNotExist, "revoked")
    seats.released(lookup.order)


def _free_seat(lookup: Lookup, condition: Any, extra_actions: list[Any],
               refused: Callable[[], errors.KeyturnError], action: str) -> None:
    order_key = lookup.order.activation_key

    def change(write: TransactWrite) -> None:
        write.delete(Activation(order_key, lookup.hostids_key), condition=Activation.hostids_key.exists())
        write.update(Order(order_key), condition=condition & Order.activation_key.exists(),
                     actions=[Order.activated_licenses.add(-1), *extra_actions])

    hostids_sent = lookup.activation.hostids if lookup.activation is not None else []
    try:
        audit.transact(entity_of(order_key, lookup.hostids_key), action, {"hostids": hostids_sent}, change,
                       head=lookup.audit_head)
    except TransactWriteError as exc:
        host_reason, order_reason = (audit.change_reasons(exc, deletes_and_puts=1) + [None, None])[:2]
        if host_reason == "ConditionalCheckFailed":
            raise errors.LicenseDoesNotExist() from None
        if order_reason == "ConditionalCheckFailed":
            raise refused() from None
        raise


def licenses_in_states(activation_key: str, states: list[str]) -> tuple[Order, list[Activation]]:
    """The order's licenses in any of ``states`` (``success``, ``failed``, ``in_progress``)."""
    order = order_for_key(activation_key)
    if not states or any(state not in STATES for state in states):
        raise errors.UnsupportedState()
    found = [a for a in Activation.query(order.activation_key, consistent_read=True) if a.state in states]
    if not found:
        raise errors.NoLicensesForState()
    return order, sorted(found, key=lambda a: (a.activation_time, a.hostids_key))


def order_for_key(activation_key: str, *, check_enabled: bool = True) -> Order:
    try:
        order = Order.get(normalise_key(activation_key), consistent_read=True)
    except DoesNotExist:
        raise errors.InvalidActivationKey() from None
    if check_enabled and not order.enabled:
        raise errors.OrderDisabled()
    return order


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
