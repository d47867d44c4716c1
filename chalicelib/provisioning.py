"""Provisioning: a shop's order line becomes a license order or a license key, exactly once.

The idempotency key is the line itself: ``<source>#<orderId>`` + ``lineItem`` (Keyturn's
own event format is source ``keyturn``; shops' formats get their own sources).  The
``Provisioning`` record is written in the same DynamoDB transaction that creates the
order or the key, on the condition that the line was never provisioned: the same event
delivered any number of times, concurrently or days apart, provisions once, and every
delivery answers the stored result.  (``ClientRequestToken`` would deduplicate for ten
minutes only.)  Nothing is half-applied: the order and its record exist together or not
at all.

Failures are of two kinds.  :class:`Rejected`: the event can never succeed (malformed,
invalid); it is recorded with its reason and acknowledged, so it is not retried
forever.  Anything else (DynamoDB unavailable, throttled) is transient: the caller lets
it be retried.  Every result is published (``notify``: the stage's SNS topic) so the
shop can mail its customer; publishing is at least once (a retried delivery publishes
the same result again), so subscribers deduplicate on ``source``/``orderId``/``lineItem``.
"""

from __future__ import annotations

import functools
import json
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import audit, errors, keys, keystore, licenses, notify, orders, runtime
from chalicelib.logs import logger
from chalicelib.models import Provisioning, condition_failed

if TYPE_CHECKING:
    from pydantic import BaseModel

KEYTURN_SOURCE = "keyturn"
MAX_PROBLEMS = 20  # problems named in a rejection; the rest are counted (a record stays far below 400 KB)
MAX_REASON = 4000  # characters of a rejection's reason kept
PROVISIONED, REJECTED = "provisioned", "rejected"
_KEY_ATTEMPTS = 5


class Rejected(errors.KeyturnError):
    """The event can never be provisioned; ``message`` says why, naming the field."""

    code = errors.Code.INVALID_ORDER
    message = "Invalid provisioning event."


def _line_models() -> Any:
    """The pydantic models of a line, built on first use (pydantic stays out of the API's cold start)."""
    global _LINE
    if _LINE is None:
        from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

        from chalicelib.orderspec import Customer, OrderSpec

        ident = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")

        class _Ids(BaseModel):
            model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)
            orderId: Annotated[str, ident]
            lineItem: Annotated[str, ident]

        class OrderLine(OrderSpec, _Ids):
            kind: Literal["license-order"]

        class KeyLine(_Ids):
            kind: Literal["license-key"]
            customer: Customer
            typeEnum: Literal["OSI", "CPU", "CORE"]
            count: int = Field(ge=0, le=keys.MAX_COUNT)
            expirationDate: date | None = None

            @field_validator("expirationDate", mode="before")
            @classmethod
            def _iso_date(cls, value: Any) -> Any:
                return date.fromisoformat(value) if isinstance(value, str) else value

        _LINE = TypeAdapter(Annotated[OrderLine | KeyLine, Field(discriminator="kind")])
    return _LINE


_LINE: Any = None


def parse_line(data: Any) -> "BaseModel":
    """A valid line, or :class:`Rejected` listing every problem by field."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise Rejected("Invalid provisioning event: the order line must be a JSON object")
    try:
        line: BaseModel = _line_models().validate_python(data)
        return line
    except ValidationError as exc:
        found = exc.errors()
        problems = "; ".join(f"{_where(e)}: {e['msg']}" for e in found[:MAX_PROBLEMS])
        if len(found) > MAX_PROBLEMS:
            problems += f"; and {len(found) - MAX_PROBLEMS} more"
        raise Rejected(f"Invalid provisioning event: {problems}") from None
    except ValueError as exc:  # a date that is not a date
        raise Rejected(f"Invalid provisioning event: {exc}") from None


def _where(error: Any) -> str:
    """The field a pydantic error is about; the ``kind`` for a line of no known kind."""
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "kind"
    return ".".join(str(part) for part in error["loc"]) or "event"


def order_key(source: str, order_id: str) -> str:
    return f"{source}#{order_id}"


def provision(data: Any, *, source: str = KEYTURN_SOURCE) -> dict[str, Any]:
    """Provision one line (Keyturn's event JSON); returns its result, the same for every delivery.

    :class:`Rejected` when it can never succeed (not recorded here: see :func:`reject`).
    """
    line: Any = parse_line(data)
    found = _stored(source, line.orderId, line.lineItem)
    if found is not None and found.status == PROVISIONED:
        return _published(json.loads(found.result))
    customer = {"name": line.customer.name}
    base = {"source": source, "orderId": line.orderId, "lineItem": line.lineItem, "status": PROVISIONED,
            "kind": line.kind, "customer": customer}
    for _ in range(_KEY_ATTEMPTS):
        if line.kind == "license-order":
            item: Any = orders.build_order(line, external_order_id=order_key(source, line.orderId))
            result = {**base, "activationKey": item.activation_key, "bulkMax": line.bulkMax}
            item_condition = type(item).activation_key.does_not_exist()
        else:
            secret = keystore.license_key_secret()  # a bad secret is the stage's fault: transient, not the event's
            try:
                minted = keys.mint(line.typeEnum, line.count, line.expirationDate, secret=secret)
            except ValueError as exc:  # an expiry beyond what a key can carry
                raise Rejected(f"Invalid provisioning event: expirationDate: {exc}") from None
            item = licenses.new_item(minted, added_by=f"provisioning:{source}")
            result = {**base, "licenseKey": item.license_key, "licenseId": item.license_id}
            item_condition = type(item).license_key.does_not_exist()
        result["provisionedAt"] = runtime.now().isoformat(timespec="seconds")
        record = Provisioning(order_key(source, line.orderId), line.lineItem,
                              status=PROVISIONED, result=json.dumps(result, ensure_ascii=False, sort_keys=True),
                              created_at=runtime.now_ms())
        entity = (f"order#{item.activation_key}" if line.kind == "license-order"
                  else licenses.entity_of(item.license_key))
        action = "order-created" if line.kind == "license-order" else "key-added"
        try:
            audit.transact(entity, action, {"source": source, "orderId": line.orderId, "lineItem": line.lineItem},
                           functools.partial(_create_once, item, item_condition, record), head=None)
            return _published(json.loads(record.result))
        except TransactWriteError as exc:
            item_reason, record_reason = (audit.change_reasons(exc, deletes_and_puts=2) + [None, None])[:2]
            if record_reason == "ConditionalCheckFailed":  # another delivery provisioned it first
                stored = _stored(source, line.orderId, line.lineItem)
                if stored is not None and stored.status == PROVISIONED:
                    return _published(json.loads(stored.result))
                continue
            if item_reason != "ConditionalCheckFailed":
                raise
            # a (vanishingly unlikely) key collision: draw another key
    raise RuntimeError("could not provision the line without a key collision")


def _create_once(item: Any, item_condition: Any, record: Provisioning, transaction: TransactWrite) -> None:
    # The whole invariant: the new order (or key), the line's record and the audit
    # record exist together, and only if the line was never provisioned (a rejection
    # may be overwritten).
    never_provisioned = Provisioning.order_key.does_not_exist() | (Provisioning.status == REJECTED)
    transaction.save(item, condition=item_condition)
    transaction.save(record, condition=never_provisioned)


def reject(reason: str, *, message_id: str, data: Any = None, source: str = KEYTURN_SOURCE) -> dict[str, Any]:
    """Record why an event can never succeed (by its message id, and by its line if it names one)."""
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON] + "…"
    result: dict[str, Any] = {"source": source, "status": REJECTED, "reason": reason, "messageId": message_id}
    ids = data if isinstance(data, dict) else {}
    order_id, line_item = ids.get("orderId"), ids.get("lineItem")
    named = isinstance(order_id, str) and isinstance(line_item, str) and 0 < len(order_id) <= 128 \
        and 0 < len(line_item) <= 128
    if named:
        result.update({"orderId": order_id, "lineItem": line_item})
    text = json.dumps(result, ensure_ascii=False, sort_keys=True)
    Provisioning(f"message#{message_id}", "-", status=REJECTED, result=text, created_at=runtime.now_ms()).save()
    if named:
        try:  # never over a provisioned line: a bad redelivery must not hide the good result
            Provisioning(order_key(source, str(order_id)), str(line_item), status=REJECTED, result=text,
                         created_at=runtime.now_ms()).save(
                condition=Provisioning.order_key.does_not_exist() | (Provisioning.status == REJECTED))
        except PutError as exc:
            if not condition_failed(exc):
                raise
    audit.append(f"message#{message_id}", "event-rejected", {"reason": reason})
    logger.warning("provisioning event rejected", extra={"message_id": message_id, "reason": reason})
    return _published(result)


def _stored(source: str, order_id: str, line_item: str) -> Provisioning | None:
    try:
        return Provisioning.get(order_key(source, order_id), line_item, consistent_read=True)
    except DoesNotExist:
        return None


def show(order_id: str, line_item: str | None = None, *, source: str = KEYTURN_SOURCE) -> Any:
    """The stored result of one line, or a list of every line of the order; None when never seen."""
    if line_item is not None:
        found = _stored(source, order_id, line_item)
        return None if found is None else json.loads(found.result)
    lines = [json.loads(r.result) for r in Provisioning.query(order_key(source, order_id), consistent_read=True)]
    return lines or None


def _published(result: dict[str, Any]) -> dict[str, Any]:
    """Publish ``result`` to the stage's notifications topic (if it has one); returns it."""
    notify.publish("ProvisioningResult", result)
    return result
