"""Stripe events delivered through Amazon EventBridge (an event destination): payments become shop-line facts.

An event's ``source`` is ``aws.partner/stripe.com/<destination id>``, its ``detail-type``
the event type and ``detail`` the Stripe Event (``id``, ``type``, ``api_version``,
``created``, ``livemode``, ``data.object``).  Handled:

- ``checkout.session.completed`` with ``payment_status: paid``, or a later
  ``checkout.session.async_payment_succeeded``: the session's ``metadata`` names the
  plan (``keyturn_plan``) and the quantity (``keyturn_quantity``, a decimal string,
  default 1).  The line is the session id + the plan.  A session in ``subscription``
  mode is granted by its subscription's ``invoice.paid`` instead (else it would be
  granted twice).
- ``invoice.paid``: ``subscription_create`` grants, ``subscription_cycle`` renews,
  ``subscription_update`` applies the new quantity; the line is the subscription id +
  the price id, its expiry the UTC day of the latest line ``period.end`` seen.  Both
  invoice shapes are read: from API version ``2025-03-31.basil`` on, the price is at
  ``pricing.price_details.price`` and the subscription at
  ``parent.subscription_details.subscription``; before it, ``price.id`` and
  ``subscription``.
- ``customer.subscription.deleted`` revokes the subscription's lines;
  ``charge.refunded`` with ``refunded: true`` revokes what its ``payment_intent`` paid for.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib import plans, runtime, shops
from chalicelib.models import Provisioning, condition_failed
from chalicelib.shopify import BadShopEvent

SOURCE_PREFIX = "aws.partner/stripe.com"
BASIL = "2025-03-31.basil"
RENEWALS = ("subscription_create", "subscription_cycle", "subscription_update")
_ATTEMPTS = 10


def is_stripe(event: Any) -> bool:
    return isinstance(event, dict) and str(event.get("source", "")).startswith(SOURCE_PREFIX)


def _text(value: Any, where: str, limit: int = 255) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise BadShopEvent(f"Invalid shop event: {where} must be a Stripe id")
    return value.strip()


LATEST_TIME = 4_102_444_800  # 2100-01-01: a Stripe timestamp (seconds) past it is no real one


def _whole(value: Any, where: str, most: int = LATEST_TIME) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise BadShopEvent(f"Invalid shop event: {where} must be a whole number from 0 to {most}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    """A nested Stripe object; absent (null) is an empty one, anything but an object is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadShopEvent(f"Invalid shop event: {where} must be an object")
    return value


PLAN_ID = re.compile(r"[\x21-\x7e]{1,128}")


def handle(event: dict[str, Any]) -> list[dict[str, Any]]:
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise BadShopEvent("Invalid shop event: detail must be the Stripe event")
    kind = detail.get("type") or event.get("detail-type")
    data = detail.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise BadShopEvent("Invalid shop event: detail.data.object is missing")
    source = shops.Event("stripe", str(kind), _text(detail.get("id"), "detail.id"),
                        detail.get("livemode") is False)
    created = _whole(detail.get("created", 0), "detail.created")
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return _checkout(obj, source, created)
    if kind == "invoice.paid":
        return _invoice(obj, source, str(detail.get("api_version") or ""))
    if kind == "customer.subscription.deleted":
        return _subscription_deleted(obj, source, created)
    if kind == "charge.refunded":
        return _charge_refunded(obj, source, created)
    return []


def _customer(obj: Any, name_field: str, email_field: str) -> dict[str, Any]:
    obj = obj if isinstance(obj, dict) else {}
    name, email = obj.get(name_field), obj.get(email_field)
    return {"name": str(name or email or "unknown customer"), **({"email": str(email)} if email else {})}


def _checkout(session: dict[str, Any], source: shops.Event, created: int) -> list[dict[str, Any]]:
    session_id = _text(session.get("id"), "data.object.id")
    if session.get("payment_status") not in ("paid", "no_payment_required"):  # free: a 100 % coupon
        return []  # async payments: granted by checkout.session.async_payment_succeeded
    metadata: dict[str, Any] = session["metadata"] if isinstance(session.get("metadata"), dict) else {}
    plan_id = str(metadata.get("keyturn_plan") or "").strip()
    if not PLAN_ID.fullmatch(plan_id):
        reason = ("the session's metadata names no keyturn_plan" if not plan_id
                  else "the session's metadata.keyturn_plan is not a plan id (1-128 printable ASCII characters)")
        return [shops.ignore(shops.checkout_line(session_id, "-"), reason, source)]
    line = shops.checkout_line(session_id, plan_id)
    if session.get("mode") == "subscription":
        return [shops.ignore(line, "a subscription checkout: its subscription's invoice.paid grants it", source)]
    plan = plans.by_id(plan_id)
    if plan is None:
        return [shops.ignore(line, f"no plan {plan_id}", source)]
    if source.test and not shops.test_orders_allowed():
        return [shops.ignore(line, "a test payment: this stage does not grant test orders", source)]
    raw = str(metadata.get("keyturn_quantity", "1")).strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7) or not 1 <= int(raw) <= 1_000_000:
        raise BadShopEvent("Invalid shop event: metadata.keyturn_quantity must be a whole number from 1 to 1000000")
    at = created * 1000 or runtime.now_ms()
    paid = {"quantity": int(raw), "at": at, "expiry": shops.term_expiry(plan, at), "test": source.test,
            "customer": _customer(session.get("customer_details"), "name", "email")}
    payment = session.get("payment_intent")
    return [_grant(line, paid, plan, source, payment if isinstance(payment, str) else None, "paid")]


def _grant(line: shops.Line, fact: dict[str, Any], plan: dict[str, Any], source: shops.Event, payment: str | None,
           key: str) -> dict[str, Any]:
    """Add a paying fact; when the payment is known to be refunded already, the line is revoked with it."""
    refunded = _link_payment(payment, line) if payment else None

    def learn(facts: dict[str, Any]) -> bool:
        new = False
        if key == "paid":
            if not facts.get("paid"):
                facts["paid"], new = fact, True
        else:
            invoices = facts.setdefault("invoices", {})
            if fact["id"] not in invoices:
                invoices[fact["id"]], new = fact, True
        if refunded and payment:
            new = _learn_refund(line, payment, refunded, facts) or new
        return new

    return shops.update(line, learn, source, plan=plan)


def _learn_refund(line: shops.Line, payment: str, refund: dict[str, Any], facts: dict[str, Any]) -> bool:
    """A full refund of ``payment``: a checkout is revoked; a subscription loses the period it paid for."""
    if line.kind == shops.STRIPE_CHECKOUT:
        if facts.get("refunded"):
            return False
        facts["refunded"] = refund
        return True
    refunded = facts.setdefault("refundedPayments", {})
    if payment in refunded:
        return False
    refunded[payment] = refund
    return True


def _invoice(invoice: dict[str, Any], source: shops.Event, api_version: str) -> list[dict[str, Any]]:
    reason = invoice.get("billing_reason")
    if reason not in RENEWALS:
        return []
    invoice_id = _text(invoice.get("id"), "data.object.id")
    parent = invoice.get("parent") if isinstance(invoice.get("parent"), dict) else None
    basil = parent is not None or ("subscription" not in invoice and api_version >= BASIL)
    if basil:
        details = _object((parent or {}).get("subscription_details"), "data.object.parent.subscription_details")
        subscription = _text(details.get("subscription"), "data.object.parent.subscription_details.subscription")
    else:
        subscription = _text(invoice.get("subscription"), "data.object.subscription")
    lines = ((invoice.get("lines") or {}).get("data")) if isinstance(invoice.get("lines"), dict) else None
    if not isinstance(lines, list):
        raise BadShopEvent("Invalid shop event: data.object.lines.data must be a list")
    by_price: dict[str, dict[str, Any]] = {}
    credited: dict[str, int] = {}  # prices with only credit lines: taken off the subscription (a price switch)
    for index, item in enumerate(lines):
        at = f"data.object.lines.data.{index}"
        item = _object(item, at)
        if "pricing" in item or (basil and "price" not in item):
            pricing = _object(item.get("pricing"), f"{at}.pricing")
            price = _object(pricing.get("price_details"), f"{at}.pricing.price_details").get("price")
            where = f"{at}.pricing.price_details.price"
        else:
            price = _object(item.get("price"), f"{at}.price").get("id")
            where = f"{at}.price.id"
        price = _text(price, where)
        amount = item.get("amount") or 0
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise BadShopEvent(f"Invalid shop event: {at}.amount must be a whole number")
        period_end = _whole(_object(item.get("period"), f"{at}.period").get("end"), f"{at}.period.end")
        if amount < 0:  # a proration credit for the time left at the old quantity, or the old price
            credited[price] = max(credited.get(price, 0), period_end)
            continue
        quantity = _whole(item.get("quantity", 1), f"{at}.quantity", 1_000_000)
        seen = by_price.get(price)
        if seen is None or period_end >= seen["periodEnd"]:
            by_price[price] = {"quantity": quantity, "periodEnd": period_end}
    found = plans.for_claims([plans.STRIPE_PRICE + price for price in by_price])
    payment = invoice.get("payment_intent") if isinstance(invoice.get("payment_intent"), str) else None
    payments = invoice.get("payments")
    for entry in (payments.get("data") or []) if isinstance(payments, dict) else []:
        paid_by = entry.get("payment") if isinstance(entry, dict) else None
        intent = paid_by.get("payment_intent") if isinstance(paid_by, dict) else None
        payment = intent if isinstance(intent, str) else payment
    created = _whole(invoice.get("created", 0), "data.object.created")
    customer = _customer(invoice, "customer_name", "customer_email")
    results = []
    for price, seen in sorted(by_price.items()):
        line = shops.subscription_line(subscription, price)
        plan = found.get(plans.STRIPE_PRICE + price)
        if plan is None:
            results.append(shops.ignore(line, f"no plan matches price {price}", source))
            continue
        if source.test and not shops.test_orders_allowed():
            results.append(shops.ignore(line, "a test payment: this stage does not grant test orders", source))
            continue
        fact = {"id": invoice_id, "quantity": seen["quantity"], "periodEnd": seen["periodEnd"], "created": created,
                "reason": reason, "test": source.test, "customer": customer, "payment": payment}
        results.append(_grant(line, fact, plan, source, payment, "invoice"))
    for price, period_end in sorted(credited.items()):
        if price in by_price or reason != "subscription_update":
            continue
        def taken_off(facts: dict[str, Any], period_end: int = period_end) -> bool:
            invoices = facts.setdefault("invoices", {})
            if invoice_id in invoices:
                return False
            invoices[invoice_id] = {"id": invoice_id, "quantity": 0, "periodEnd": period_end, "created": created,
                                    "reason": reason, "test": source.test, "customer": customer, "payment": None}
            return True

        taken = shops.update_seen(shops.subscription_line(subscription, price), taken_off, source, create=False)
        if taken is not None:  # None: a price this subscription never granted
            results.append(taken)
    return results


def _subscription_deleted(subscription: dict[str, Any], source: shops.Event, created: int) -> list[dict[str, Any]]:
    subscription_id = _text(subscription.get("id"), "data.object.id")
    items = ((subscription.get("items") or {}).get("data")) if isinstance(subscription.get("items"), dict) else None
    listed = set()
    for index, item in enumerate(items if isinstance(items, list) else []):
        price = _object(_object(item, f"data.object.items.data.{index}").get("price"),
                        f"data.object.items.data.{index}.price").get("id")
        listed.add(_text(price, f"data.object.items.data.{index}.price.id"))
    claimed = plans.for_claims([plans.STRIPE_PRICE + price for price in sorted(listed)]) if listed else {}
    prices = {price for price in listed if plans.STRIPE_PRICE + price in claimed}  # a deletion before its invoice
    prices.update(record.line_item for record in Provisioning.query(f"stripe#{subscription_id}", consistent_read=True))

    def learn(facts: dict[str, Any]) -> bool:
        if facts.get("deleted"):
            return False
        facts["deleted"] = {"at": created * 1000}
        return True

    return [shops.update(shops.subscription_line(subscription_id, price), learn, source) for price in sorted(prices)]


def _payment_key(payment: str) -> str:
    return f"stripe-payment#{payment}"


def _change_payment(payment: str, change: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read the payment's record, ``change`` it (False: nothing to change) and save it under its version."""
    for _ in range(_ATTEMPTS):
        record = _payment_record(payment)
        state: dict[str, Any] = json.loads(record.result) if record else {"paymentIntent": payment, "lines": []}
        if not change(state) or _save_payment(record, state):
            return state
    raise RuntimeError(f"the payment {payment} kept changing")


def _link_payment(payment: str, line: shops.Line) -> dict[str, Any] | None:
    """Note that ``payment`` paid for ``line``; returns the payment's refund when it was refunded already."""
    ref = [line.kind, line.order_key, line.line_item]

    def link(state: dict[str, Any]) -> bool:
        if ref in state["lines"]:
            return False
        state["lines"].append(ref)
        return True

    refunded: dict[str, Any] | None = _change_payment(payment, link).get("refunded")
    return refunded


def _charge_refunded(charge: dict[str, Any], source: shops.Event, created: int) -> list[dict[str, Any]]:
    if charge.get("refunded") is not True:
        return []  # a partial refund keeps the license
    payment = _text(charge.get("payment_intent"), "data.object.payment_intent")
    refund = {"at": created * 1000, "charge": str(charge.get("id", ""))}

    def refunded(state: dict[str, Any]) -> bool:
        if state.get("refunded"):
            return False
        state["refunded"] = refund
        return True

    # The lines as saved with the refund: a line linked after it reads the refund when it links.
    state = _change_payment(payment, refunded)

    results = []
    for kind, order_key, line_item in state["lines"]:
        object_id = order_key.split("#", 1)[1]
        line = (shops.checkout_line(object_id, line_item) if kind == shops.STRIPE_CHECKOUT
                else shops.subscription_line(object_id, line_item))
        results.append(shops.update(line, functools.partial(_learn_refund, line, payment, refund), source))
    return results


def _payment_record(payment: str) -> Provisioning | None:
    try:
        return Provisioning.get(_payment_key(payment), "-", consistent_read=True)
    except DoesNotExist:
        return None


def _save_payment(record: Provisioning | None, state: dict[str, Any]) -> bool:
    version = int(record.version or 0) if record else 0
    item = Provisioning(_payment_key(state["paymentIntent"]), "-", status="payment",
                        result=json.dumps(state, sort_keys=True), created_at=runtime.now_ms(), version=version + 1)
    try:
        item.save(condition=Provisioning.order_key.does_not_exist() if record is None
                  else Provisioning.version == version)
        return True
    except PutError as exc:
        if condition_failed(exc):
            return False
        raise
