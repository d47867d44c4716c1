"""Shopify webhooks delivered through Amazon EventBridge: orders and refunds become shop-line facts.

An event's ``source`` is ``aws.partner/shopify.com/<app id>/<name>``, its
``detail-type`` ``shopifyWebhook``, ``detail.metadata`` the webhook's headers (read here
case-insensitively, with or without their ``X-`` prefix) and ``detail.payload`` the
order or refund.  Topics:

- ``orders/paid``: each line item whose sku a plan claims is granted (quantity:
  ``current_quantity`` where present, else ``quantity``); other lines are recorded as
  ignored.  ``orders/create`` grants nothing (it fires for unpaid orders too).
- ``refunds/create``: each refund line (by its own id, so it counts once) lowers its
  line's quantity; a line refunded in full is revoked.
- ``orders/updated``: the line's ``current_quantity`` as of the order's ``updated_at``
  (an older report than the one applied changes nothing; a refund Shopify's count
  already includes is not subtracted again).
- ``orders/cancelled``: every line of the order is revoked.

Shopify's ids are 64-bit integers: they are kept as decimal strings, never floats.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib import plans, shops
from chalicelib.provisioning import Rejected

SOURCE_PREFIX = "aws.partner/shopify.com"
GRANTS, IGNORED_TOPICS = ("orders/paid", "refunds/create", "orders/updated", "orders/cancelled"), ("orders/create",)


class BadShopEvent(Rejected):
    """A shop event that can never be applied (a required field missing or malformed)."""

    message = "Invalid shop event."


def is_shopify(event: Any) -> bool:
    return isinstance(event, dict) and str(event.get("source", "")).startswith(SOURCE_PREFIX)


def metadata(event: dict[str, Any]) -> dict[str, str]:
    """The webhook's headers by lower-case name without ``x-``: ``shopify-topic``, ``shopify-shop-domain``, ..."""
    detail = event.get("detail")
    raw = detail.get("metadata") if isinstance(detail, dict) else None
    if not isinstance(raw, dict):
        raise BadShopEvent("Invalid shop event: detail.metadata is missing")
    found = {}
    for name, value in raw.items():
        key = str(name).strip().lower()
        found[key[2:] if key.startswith("x-") else key] = str(value)
    return found


def identifier(value: Any, where: str) -> str:
    """A Shopify id as its exact decimal string; a float (already rounded) or anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadShopEvent(f"Invalid shop event: {where} must be an integer id, not {type(value).__name__}")
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise BadShopEvent(f"Invalid shop event: {where} must be an integer id")
    return str(int(text))


def timestamp_ms(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise BadShopEvent(f"Invalid shop event: {where} must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadShopEvent(f"Invalid shop event: {where} must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise BadShopEvent(f"Invalid shop event: {where} needs a time zone")
    return int(moment.timestamp() * 1000)


def _objects(payload: dict[str, Any], name: str) -> list[tuple[int, dict[str, Any]]]:
    """``payload[name]``, a list of objects, each with its index; anything else is refused, naming it."""
    items = payload.get(name)
    if not isinstance(items, list):
        raise BadShopEvent(f"Invalid shop event: payload.{name} must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadShopEvent(f"Invalid shop event: payload.{name}.{index} must be an object")
    return list(enumerate(items))


def _quantity(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise BadShopEvent(f"Invalid shop event: {where} must be a whole number from 0 to 1000000")
    return value


def _customer(order: dict[str, Any]) -> dict[str, Any]:
    customer: dict[str, Any] = order["customer"] if isinstance(order.get("customer"), dict) else {}
    name = " ".join(str(part) for part in (customer.get("first_name"), customer.get("last_name")) if part).strip()
    email = customer.get("email") or order.get("email")
    return {"name": name or str(email or "") or "unknown customer", **({"email": str(email)} if email else {})}


def handle(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply one Shopify event; the results of the lines it touched (none for a topic that grants nothing)."""
    meta = metadata(event)
    topic, shop = meta.get("shopify-topic", ""), meta.get("shopify-shop-domain", "")
    if not shop or len(shop) > 255:
        raise BadShopEvent("Invalid shop event: X-Shopify-Shop-Domain is missing")
    payload = event["detail"].get("payload")
    if not isinstance(payload, dict):
        raise BadShopEvent("Invalid shop event: detail.payload must be an object")
    webhook = meta.get("shopify-webhook-id") or str(event.get("id", ""))
    if topic in IGNORED_TOPICS or topic not in GRANTS:
        return []
    test = bool(payload.get("test"))
    source = shops.Event("shopify", topic, webhook[:200], test)
    if topic == "refunds/create":
        return _refund(shop, payload, source)
    order_id = identifier(payload.get("id"), "payload.id")
    lines = [(identifier(item.get("id"), f"payload.line_items.{index}.id"), index, item)
             for index, item in _objects(payload, "line_items")]
    if topic == "orders/paid":
        return _paid(shop, order_id, payload, lines, source)
    matched = _matching([_sku(item) for _, _, item in lines])
    if topic == "orders/updated":
        at = timestamp_ms(payload.get("updated_at"), "payload.updated_at")
        results = []
        for line_id, index, item in lines:
            if "current_quantity" not in item:
                continue
            quantity = _quantity(item["current_quantity"], f"payload.line_items.{index}.current_quantity")
            results.append(shops.update_seen(shops.shopify_line(shop, order_id, line_id), _latest(quantity, at),
                                             source, create=_sku(item) in matched))
        return [r for r in results if r is not None]
    at = timestamp_ms(payload.get("cancelled_at") or payload.get("updated_at"), "payload.cancelled_at")

    def cancelled(facts: dict[str, Any]) -> bool:
        if facts.get("cancelled"):
            return False
        facts["cancelled"] = {"at": at}
        return True

    results = [shops.update_seen(shops.shopify_line(shop, order_id, line_id), cancelled, source,
                                 create=_sku(item) in matched) for line_id, _, item in lines]
    return [r for r in results if r is not None]


MAX_SKU = 255  # what a plan may claim; a longer sku matches none (and is never a key DynamoDB refuses)


def _sku(item: Any) -> str:
    sku = item.get("sku") if isinstance(item, dict) else None
    return sku.strip() if isinstance(sku, str) else ""


def _matching(skus: list[str]) -> dict[str, dict[str, Any]]:
    """The plans of ``skus`` by sku (those no plan claims are absent)."""
    wanted = sorted({sku for sku in skus if sku and len(sku) <= MAX_SKU})
    found = plans.for_claims([plans.SHOPIFY_SKU + sku for sku in wanted]) if wanted else {}
    return {claim[len(plans.SHOPIFY_SKU):]: plan for claim, plan in found.items()}


def _latest(quantity: int, at: int) -> Any:
    def learn(facts: dict[str, Any]) -> bool:
        current = facts.get("update")
        if current is not None and (int(current["at"]), -int(current["quantity"])) >= (at, -quantity):
            return False  # newer already applied (of two reports in one second, the lower count: any order agrees)
        facts["update"] = {"quantity": quantity, "at": at}
        return True

    return learn


def _paid(shop: str, order_id: str, order: dict[str, Any], lines: list[tuple[str, int, dict[str, Any]]],
          source: shops.Event) -> list[dict[str, Any]]:
    at = timestamp_ms(order.get("processed_at") or order.get("updated_at") or order.get("created_at"),
                      "payload.updated_at")
    updated = timestamp_ms(order["updated_at"], "payload.updated_at") if order.get("updated_at") else at
    skus = {line_id: _sku(item) for line_id, _, item in lines}
    found = _matching(list(skus.values()))
    customer = _customer(order)
    results = []
    for line_id, index, item in lines:
        line = shops.shopify_line(shop, order_id, line_id)
        plan = found.get(skus[line_id])
        if plan is None:
            shown = skus[line_id] if len(skus[line_id]) <= 80 else skus[line_id][:77] + "..."
            reason = f"no plan matches sku {shown}" if skus[line_id] else "the line item has no sku"
            results.append(shops.ignore(line, reason, source))
            continue
        if source.test and not shops.test_orders_allowed():
            results.append(shops.ignore(line, "a test order: this stage does not grant test orders", source))
            continue
        raw = item.get("current_quantity", item.get("quantity"))
        quantity = _quantity(raw, f"payload.line_items.{index}.quantity")
        paid = {"quantity": quantity, "at": updated, "expiry": shops.term_expiry(plan, at), "test": source.test,
                "customer": customer, "sku": skus[line_id]}

        def learn(facts: dict[str, Any], paid: dict[str, Any] = paid) -> bool:
            if facts.get("paid"):
                return False
            facts["paid"] = paid
            return True

        results.append(shops.update(line, learn, source, plan=plan))
    return results


def _refund(shop: str, refund: dict[str, Any], source: shops.Event) -> list[dict[str, Any]]:
    order_id = identifier(refund.get("order_id"), "payload.order_id")
    at = timestamp_ms(refund.get("created_at"), "payload.created_at")
    refund_lines = _objects(refund, "refund_line_items")
    # refund payloads carry the line item, with its sku, where Shopify has it
    skus = [_sku(item.get("line_item")) for _, item in refund_lines]
    matched = _matching(skus)
    results = []
    for (index, item), sku in zip(refund_lines, skus, strict=True):
        refund_line = identifier(item.get("id"), f"payload.refund_line_items.{index}.id")
        line_id = identifier(item.get("line_item_id"), f"payload.refund_line_items.{index}.line_item_id")
        quantity = _quantity(item.get("quantity"), f"payload.refund_line_items.{index}.quantity")

        def learn(facts: dict[str, Any], refund_line: str = refund_line, quantity: int = quantity) -> bool:
            refunds = facts.setdefault("refunds", {})
            if refund_line in refunds:
                return False  # this refund line counted once already
            refunds[refund_line] = {"quantity": quantity, "at": at}
            return True

        result = shops.update_seen(shops.shopify_line(shop, order_id, line_id), learn, source,
                                   create=not sku or sku in matched)
        if result is not None:
            results.append(result)
    return results
