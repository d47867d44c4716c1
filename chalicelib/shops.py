"""Shop lines: what Shopify and Stripe say about a line, folded into one grant, exactly once, in any order.

A shop line is the unit a customer paid for: a Shopify order's line item
(``shopify#<shop>#<order id>`` + line item id), a Stripe Checkout Session
(``stripe#<session id>`` + plan id) or a Stripe subscription's price
(``stripe#<subscription id>`` + price id).  Its ``Provisioning`` record keeps every
*fact* the shop has told about it (paid, a refund line by its id, the latest quantity
with its time, cancelled, an invoice by its id, deleted, refunded), and what was applied
to its order or key.  The state a line should be in is a pure function of its facts
(:func:`target`), so the order in which events arrive, and how often, changes nothing:
a redelivered event adds no new fact, a refund that comes before its paid event is kept
as a fact and applied when the grant is made (the grant is then created already revoked
or reduced), and an older event loses to a newer one by the shop's own timestamps.

Each change is one DynamoDB transaction: the record (under the condition that its
version is still the one read: two deliveries racing cannot both apply), the order or
key it changes, and the audit record of that order or key, naming the shop event.
"""

from __future__ import annotations

import calendar
import functools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable

from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import audit, config, keys, keystore, licenses, notify, orders, runtime
from chalicelib.logs import logger
from chalicelib.models import LicenseKey, Order, Provisioning, condition_failed, connection
from chalicelib.provisioning import Rejected

PROVISIONED, REVOKED, PENDING, IGNORED = "provisioned", "revoked", "pending", "ignored"
SHOPIFY, STRIPE_CHECKOUT, STRIPE_SUBSCRIPTION = "shopify", "stripe-checkout", "stripe-subscription"
_ATTEMPTS = 30  # a line many deliveries change at once (each read again after a lost race)


@dataclass(frozen=True)
class Line:
    """One shop line: where its record lives and how results name it."""

    kind: str  # SHOPIFY | STRIPE_CHECKOUT | STRIPE_SUBSCRIPTION
    order_key: str
    line_item: str
    names: dict[str, str]  # {"source", "shop"?, "orderId", "lineItem"} for results

    @property
    def source(self) -> str:
        return self.names["source"]


@dataclass(frozen=True)
class Event:
    """The shop event a change is audited and published with."""

    source: str
    type: str
    id: str
    test: bool = False

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "type": self.type, "id": self.id}


def shopify_line(shop: str, order_id: str, line_item: str) -> Line:
    return Line(SHOPIFY, f"shopify#{shop}#{order_id}", line_item,
                {"source": "shopify", "shop": shop, "orderId": order_id, "lineItem": line_item})


def checkout_line(session_id: str, plan_id: str) -> Line:
    return Line(STRIPE_CHECKOUT, f"stripe#{session_id}", plan_id,
                {"source": "stripe", "orderId": session_id, "lineItem": plan_id})


def subscription_line(subscription_id: str, price_id: str) -> Line:
    return Line(STRIPE_SUBSCRIPTION, f"stripe#{subscription_id}", price_id,
                {"source": "stripe", "orderId": subscription_id, "lineItem": price_id})


# --- what a line should be, from its facts ---------------------------------------------------

@dataclass
class Target:
    granted: bool
    quantity: int = 0
    revoked: bool = False
    expiry: str | None = None
    test: bool = False
    customer: dict[str, Any] = field(default_factory=dict)


def target(kind: str, facts: dict[str, Any]) -> Target:
    """The state the shop's facts call for; the same facts always give the same state."""
    if kind == SHOPIFY:
        paid = facts.get("paid")
        if paid is None:
            return Target(False)
        quantity, as_of = int(paid["quantity"]), int(paid["at"])
        update = facts.get("update")  # the latest quantity Shopify reported, with its time
        if update is not None and int(update["at"]) >= as_of:
            quantity, as_of = int(update["quantity"]), int(update["at"])
        for refund in sorted(facts.get("refunds", {}).values(), key=lambda r: int(r["at"])):
            if int(refund["at"]) > as_of:  # a refund Shopify's count did not include yet
                quantity, as_of = quantity - int(refund["quantity"]), int(refund["at"])
        quantity = max(quantity, 0)
        return Target(True, quantity, bool(facts.get("cancelled")) or quantity == 0, paid.get("expiry"),
                      bool(paid.get("test")), paid.get("customer", {}))
    if kind == STRIPE_CHECKOUT:
        paid = facts.get("paid")
        if paid is None:
            return Target(False)
        return Target(True, int(paid["quantity"]), bool(facts.get("refunded")), paid.get("expiry"),
                      bool(paid.get("test")), paid.get("customer", {}))
    invoices = facts.get("invoices", {})
    if not invoices:
        return Target(False)
    # the latest period's invoice, the later one when two cover one period (the id breaks a tie in time)
    latest = max(invoices.items(), key=lambda item: (int(item[1]["periodEnd"]), int(item[1]["created"]), item[0]))[1]
    last_day = max(int(i["periodEnd"]) for i in invoices.values() if int(i["quantity"]) > 0 or i is latest)
    expiry = datetime.fromtimestamp(last_day, timezone.utc).date().isoformat()
    refunded = facts.get("refundedPayments", {})  # a refund revokes the period it paid for, not later ones
    revoked = (bool(facts.get("deleted")) or int(latest["quantity"]) <= 0
               or (latest.get("payment") is not None and latest["payment"] in refunded))
    return Target(True, max(int(latest["quantity"]), 0), revoked, expiry, bool(latest.get("test")),
                  latest.get("customer", {}))


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months (the 31st becomes the month's last day)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def term_expiry(plan: dict[str, Any], paid_at_ms: int) -> str | None:
    """The last valid day of a one-off purchase: its paid day plus the plan's ``termMonths``."""
    months = plan.get("termMonths")
    if months is None:
        return None
    paid_day = datetime.fromtimestamp(paid_at_ms / 1000, timezone.utc).date()
    if paid_day.year + int(months) // 12 + 1 > 9999:
        raise Rejected(f"Invalid shop event: a purchase on {paid_day} with a term of {months} months ends past the "
                       "year 9999")
    return add_months(paid_day, int(months)).isoformat()


# --- the line's record -------------------------------------------------------------------------

def _read(line: Line) -> Provisioning | None:
    try:
        return Provisioning.get(line.order_key, line.line_item, consistent_read=True)
    except DoesNotExist:
        return None


def ignore(line: Line, reason: str, event: Event) -> dict[str, Any]:
    """Record that a line grants nothing (no plan matches it, a test order where none are granted)."""
    for _ in range(_ATTEMPTS):
        record = _read(line)
        if record is not None and record.status not in (IGNORED, PENDING):
            return _published(json.loads(record.result))  # never over a grant
        result = {**line.names, "status": IGNORED, "reason": reason, "event": event.describe()}
        item = Provisioning(line.order_key, line.line_item, status=IGNORED, result=_json(result),
                            created_at=runtime.now_ms(), version=1 if record is None else int(record.version or 0) + 1)
        condition = (Provisioning.order_key.does_not_exist() if record is None
                     else Provisioning.version == int(record.version or 0))
        try:
            item.save(condition=condition)
            return _published(result)
        except PutError as exc:
            if not condition_failed(exc):
                raise
    raise RuntimeError(f"the line {line.order_key} {line.line_item} kept changing")


def update(line: Line, learn: Callable[[dict[str, Any]], bool], event: Event, *,
           plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add what ``event`` tells about ``line`` (``learn`` adds its facts, False when none are new) and apply it.

    ``plan``: the plan the line is sold under, known from events that name the product
    (paid, invoice); a line first seen by a refund has none until then.  Returns the
    line's result, as published.
    """
    result = _update(line, learn, event, plan, seen_only=False, create=True)
    assert result is not None
    return result


def update_seen(line: Line, learn: Callable[[dict[str, Any]], bool], event: Event, *,
                create: bool) -> dict[str, Any] | None:
    """:func:`update` for an event that names no plan (a refund, a quantity, a cancellation): None, and nothing
    written, for a line already ignored, or for a line never seen unless ``create`` (its product has a plan)."""
    return _update(line, learn, event, None, seen_only=True, create=create)


def _update(line: Line, learn: Callable[[dict[str, Any]], bool], event: Event, plan: dict[str, Any] | None, *,
            seen_only: bool, create: bool) -> dict[str, Any] | None:
    for _ in range(_ATTEMPTS):
        record = _read(line)
        if seen_only and ((record is None and not create) or (record is not None and record.status == IGNORED)):
            return None
        if record is not None and record.status == IGNORED and plan is None:
            return _published(json.loads(record.result))  # a refund or a cancellation of a line that grants nothing
        known = record is not None and record.status != IGNORED and record.facts is not None
        facts: dict[str, Any] = json.loads(record.facts) if known else {"kind": line.kind}  # type: ignore[union-attr]
        applied: dict[str, Any] | None = json.loads(record.applied) if known and record.applied else None  # type: ignore[union-attr]
        if plan is not None and "plan" not in facts:
            facts["plan"] = plan
        new = learn(facts)
        if not new and known and (plan is None or applied is not None):
            return _published(json.loads(record.result))  # type: ignore[union-attr]
        version = int(record.version or 0) if record is not None else 0
        try:
            return _published(_apply(line, record, version, facts, applied, event))
        except TransactWriteError as exc:
            logger.info("shop line changed meanwhile; reading it again",
                        extra={"line": f"{line.order_key} {line.line_item}", "reasons": str(exc.cancellation_reasons)})
            time.sleep(random.uniform(0, 0.02))
            continue
    raise RuntimeError(f"the line {line.order_key} {line.line_item} kept changing")


def _apply(line: Line, record: Provisioning | None, version: int, facts: dict[str, Any],
           applied: dict[str, Any] | None, event: Event) -> dict[str, Any]:
    goal = target(line.kind, facts)
    plan = facts.get("plan")
    base: dict[str, Any] = {**line.names, "event": event.describe()}
    never_written = Provisioning.order_key.does_not_exist()
    same_version = Provisioning.version == version
    condition = never_written if record is None else (
        same_version if record.version is not None else Provisioning.status == record.status)

    def put_record(transaction: TransactWrite, status: str, result: dict[str, Any],
                   now_applied: dict[str, Any] | None) -> None:
        transaction.save(Provisioning(
            line.order_key, line.line_item, status=status, result=_json(result),
            created_at=int(record.created_at) if record is not None else runtime.now_ms(),
            facts=_json(facts), applied=_json(now_applied) if now_applied is not None else None,
            version=version + 1), condition=condition)

    if not goal.granted or plan is None:
        result = {**base, "status": PENDING,
                  "reason": "the shop has not reported this line as paid yet; what it reported is kept and applied "
                            "when it does"}
        _write_only(functools.partial(put_record, status=PENDING, result=result, now_applied=None))
        return result

    per_unit = int(plan["seatsPerUnit"]) if plan["kind"] == "license-order" else int(plan["key"]["countPerUnit"])
    seats = goal.quantity * per_unit
    from chalicelib.orderspec import MAX_BULK

    most = MAX_BULK if plan["kind"] == "license-order" else keys.MAX_COUNT
    if seats > most:
        raise Rejected(f"Invalid shop event: {goal.quantity} units of plan {plan['planId']} are {seats} seats, more "
                       f"than a {'license order' if plan['kind'] == 'license-order' else 'license key'} holds ({most})")
    if plan["kind"] == "license-key" and goal.expiry and goal.expiry > keys.MAX_EXPIRY.isoformat():
        raise Rejected(f"Invalid shop event: the expiry {goal.expiry} is later than a license key can carry "
                       f"({keys.MAX_EXPIRY})")
    status = REVOKED if goal.revoked else PROVISIONED
    common = {**base, "status": status, "kind": plan["kind"], "planId": plan["planId"], "customer": goal.customer,
              "test": goal.test, "expirationDate": goal.expiry}
    detail = {"event": event.describe(), "line": line.names, "planId": plan["planId"]}
    if plan["kind"] == "license-order":
        if applied is None:
            order = _new_order(plan, goal, seats)
            now_applied = {"activationKey": order.activation_key, "seats": seats, "revoked": goal.revoked,
                           "expiry": goal.expiry}
            result = {**common, "activationKey": order.activation_key, "bulkMax": seats,
                      "provisionedAt": runtime.now().isoformat(timespec="seconds")}

            def create(transaction: TransactWrite) -> None:
                transaction.save(order, condition=Order.activation_key.does_not_exist())
                put_record(transaction, status, result, now_applied)

            audit.transact(f"order#{order.activation_key}", "order-created",
                           {**detail, **orders.describe(order)}, create, head=None)
            return result
        key = str(applied["activationKey"])
        result = {**common, "activationKey": key, "bulkMax": seats,
                  "provisionedAt": json.loads(record.result).get("provisionedAt")}  # type: ignore[union-attr]
        now_applied = {**applied, "seats": seats, "revoked": goal.revoked, "expiry": goal.expiry}
        actions: list[Any] = []
        changes: dict[str, Any] = {}
        if seats != applied["seats"]:
            actions.append(Order.bulk_max.set(seats))
            changes["bulkMax"] = seats
        if goal.revoked != applied["revoked"]:
            actions.append(Order.enabled.set(not goal.revoked))
            changes["enabled"] = not goal.revoked
        if goal.expiry != applied["expiry"]:
            actions.append(Order.expiration_date.set(goal.expiry) if goal.expiry else Order.expiration_date.remove())
            changes["expirationDate"] = goal.expiry
        if not actions:
            _write_only(functools.partial(put_record, status=status, result=result, now_applied=now_applied))
            return result

        def change(transaction: TransactWrite) -> None:
            transaction.update(Order(key), actions=actions, condition=Order.activation_key.exists())
            put_record(transaction, status, result, now_applied)

        audit.transact(f"order#{key}", "order-changed-by-shop", {**detail, "changes": changes}, change)
        return result

    # license keys: a key carries its count and expiry, so a change is a new key in its place
    old = applied
    wanted = {"seats": seats, "revoked": goal.revoked, "expiry": goal.expiry}
    if old is not None and {k: old[k] for k in wanted} == wanted:
        result = {**common, "licenseKey": old["licenseKey"], "licenseId": old["licenseId"], "count": seats}
        _write_only(functools.partial(put_record, status=status, result=result, now_applied=old))
        return result
    same_key = old is not None and (old["seats"], old["expiry"]) == (seats, goal.expiry)
    if same_key:  # only revoked or restored
        minted_key, license_id = str(old["licenseKey"]), str(old["licenseId"])  # type: ignore[index]
    else:
        expires = date.fromisoformat(goal.expiry) if goal.expiry else None
        minted_key = keys.normalise(keys.mint(plan["key"]["typeEnum"], max(seats, 1), expires,
                                              secret=keystore.license_key_secret()))
        license_id = ""
    item = licenses.new_item(minted_key, added_by=f"provisioning:{line.source}")
    if license_id:
        item.license_id = license_id
    result = {**common, "licenseKey": item.license_key, "licenseId": item.license_id, "count": seats}
    now_applied = {**wanted, "licenseKey": item.license_key, "licenseId": item.license_id}
    stored_before = old is not None and not old["revoked"]
    store_now = not goal.revoked

    def change_key(transaction: TransactWrite) -> None:
        if stored_before and not (same_key and store_now):
            transaction.delete(LicenseKey(str(old["licenseKey"])))  # type: ignore[index]
        if store_now and not (same_key and stored_before):
            transaction.save(item, condition=LicenseKey.license_key.does_not_exist())
        put_record(transaction, status, result, now_applied)

    entity_detail = {**detail, "count": seats, "expirationDate": goal.expiry, "revoked": goal.revoked}
    if old is None:
        audit.transact(licenses.entity_of(item.license_key), "key-added" if store_now else "key-minted-revoked",
                       entity_detail, change_key, head=None)
    elif same_key:
        audit.transact(licenses.entity_of(item.license_key), "key-revoked" if goal.revoked else "key-restored",
                       entity_detail, change_key)
    else:
        audit.transact(licenses.entity_of(str(old["licenseKey"])), "key-replaced",
                       {**entity_detail, "replacedBy": item.license_key}, change_key,
                       also=((licenses.entity_of(item.license_key), "key-added" if store_now else "key-minted-revoked",
                              {**entity_detail, "replaces": old["licenseKey"]}),))
    return result


def _new_order(plan: dict[str, Any], goal: Target, seats: int) -> Order:
    from chalicelib.orderspec import parse_order

    template = plan["order"]
    spec = parse_order({**template, "customer": {"name": _customer_name(goal.customer)}, "bulkMax": max(seats, 1),
                        "expirationDate": goal.expiry})
    order = orders.build_order(spec)
    order.bulk_max = seats
    order.enabled = not goal.revoked
    order.customer = {"name": _customer_name(goal.customer), **({"email": goal.customer["email"]}
                                                                 if goal.customer.get("email") else {})}
    return order


def _customer_name(customer: dict[str, Any]) -> str:
    name = str(customer.get("name") or customer.get("email") or "unknown customer").strip()
    return name[:200] or "unknown customer"


def _write_only(put: Callable[[TransactWrite], None]) -> None:
    with TransactWrite(connection=connection()) as transaction:
        put(transaction)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _published(result: dict[str, Any]) -> dict[str, Any]:
    notify.publish("ProvisioningResult", result)
    return result


def test_orders_allowed() -> bool:
    return config.current().allow_test_orders
