"""License orders: creation and the operator actions on them.

Plain functions shared by the operator CLI, the operator Lambda and provisioning.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import audit, errors, runtime
from chalicelib.models import Order

if TYPE_CHECKING:  # pydantic is imported only where orders are created
    from chalicelib.orderspec import OrderSpec

KEY_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
KEY_CHARS = 20  # 36**20 ~ 2**103: far above the 80 bits the contract asks for
_ATTEMPTS = 5


def new_activation_key() -> str:
    """``XXXXX-XXXXX-XXXXX-XXXXX`` of uniformly random ``0-9A-Z`` (rejection sampling)."""
    chars: list[str] = []
    while len(chars) < KEY_CHARS:
        for byte in runtime.random_bytes(KEY_CHARS):
            if byte < 252 and len(chars) < KEY_CHARS:  # 252 = 7 * 36: no modulo bias
                chars.append(KEY_ALPHABET[byte % 36])
    text = "".join(chars)
    return "-".join(text[i:i + 5] for i in range(0, KEY_CHARS, 5))


def create_order(data: Any, *, external_order_id: str | None = None) -> Order:
    """Validate ``data`` (see ``orderspec``) and store a new order under a fresh key."""
    from chalicelib.orderspec import parse_order

    return store(build_order(parse_order(data), external_order_id=external_order_id))


def build_order(spec: "OrderSpec", *, external_order_id: str | None = None) -> Order:
    """The order item for a validated ``OrderSpec`` (not yet stored)."""
    from chalicelib.hostids import HOSTID_TYPES

    return Order(
        new_activation_key(),
        customer={"name": spec.customer.name},
        product=spec.product.model_dump(),
        license_type=spec.licenseType,
        bulk_max=spec.bulkMax,
        activated_licenses=0,
        hostid={"types": [{"nameRaw": t.nameRaw, "name": HOSTID_TYPES[t.nameRaw], "min": t.min, "max": t.max}
                          for t in spec.hostid.types], "min": spec.hostid.min},
        features=[f.model_dump(exclude_none=True) for f in spec.features],
        expiration_date=spec.expirationDate.isoformat() if spec.expirationDate else None,
        maintenance_end_date=spec.maintenanceEndDate.isoformat() if spec.maintenanceEndDate else None,
        enabled=True,
        deactivations_allowed=spec.deactivationsAllowed,
        deactivations_used=0,
        created_at=runtime.now_ms(),
        external_order_id=external_order_id,
    )


def store(order: Order) -> Order:
    """Put a new order, with its first audit record; a (vanishingly unlikely) key collision draws a new key."""
    for _ in range(_ATTEMPTS):
        try:
            audit.transact(f"order#{order.activation_key}", "order-created", describe(order), functools.partial(
                _put_new, order), head=None)
            return order
        except TransactWriteError:
            if not _exists(order.activation_key):
                raise
            order.activation_key = new_activation_key()
    raise RuntimeError("could not draw an unused activation key")


def _put_new(order: Order, transaction: TransactWrite) -> None:
    transaction.save(order, condition=Order.activation_key.does_not_exist())


def _exists(activation_key: str) -> bool:
    try:
        Order.get(activation_key, consistent_read=True)
    except DoesNotExist:
        return False
    return True


def get_order(activation_key: str) -> Order:
    try:
        return Order.get(activation_key.strip().upper(), consistent_read=True)
    except DoesNotExist:
        raise errors.InvalidActivationKey() from None


def _update(activation_key: str, actions: list[Any], action: str, detail: dict[str, Any]) -> Order:
    """Apply ``actions`` to an existing order, audited; returns the order as stored afterwards."""
    key = activation_key.strip().upper()

    def change(transaction: TransactWrite) -> None:
        transaction.update(Order(key), actions=actions, condition=Order.activation_key.exists())

    try:
        audit.transact(f"order#{key}", action, detail, change)
    except TransactWriteError:
        if not _exists(key):
            raise errors.InvalidActivationKey() from None
        raise
    return get_order(key)


def set_enabled(activation_key: str, enabled: bool) -> Order:
    """Disable (every end-user call then answers 403) or enable an order again."""
    return _update(activation_key, [Order.enabled.set(enabled)], "order-enabled" if enabled else "order-disabled",
                   {"enabled": enabled})


def allow_deactivations(activation_key: str, total: int) -> Order:
    """Set the total number of deactivations end users may make (used ones count against it)."""
    if total < 0:
        raise ValueError("the deactivation allowance cannot be negative")
    return _update(activation_key, [Order.deactivations_allowed.set(total)], "deactivations-allowed",
                   {"deactivationsAllowed": total})


def describe(order: Order) -> dict[str, Any]:
    """Everything about an order, for operators (the CLI's show-order, the operator Lambda)."""
    return {
        "activationKey": order.activation_key,
        "customer": order.customer.as_dict(),
        "product": order.product.as_dict(),
        "licenseType": order.license_type,
        "bulkMax": int(order.bulk_max),
        "activatedLicenses": int(order.activated_licenses),
        "hostid": _plain(order.hostid.as_dict()),
        "features": _plain(list(order.features)),
        "expirationDate": order.expiration_date,
        "maintenanceEndDate": order.maintenance_end_date,
        "enabled": bool(order.enabled),
        "deactivationsAllowed": int(order.deactivations_allowed),
        "deactivationsUsed": int(order.deactivations_used),
        "createdAt": int(order.created_at),
        "externalOrderId": order.external_order_id,
    }


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as floats or Decimals inside maps: whole ones become ints."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) or type(value).__name__ == "Decimal":
        return int(value) if value == int(value) else float(value)
    return value
