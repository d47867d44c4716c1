"""The Lambda functions that are not the API: provisioning from SQS and EventBridge, and operators.

``app.py`` declares them as plain ``@app.lambda_function``s (so Lambda imports ``app``
and the app's middleware binds the stage; a blueprint's function would be imported
from this module alone, without it): Chalice's ``on_sqs_message`` cannot turn on
``ReportBatchItemFailures``, so the queue, its mapping and the EventBridge rule are in
the deployment template instead.

- ``provision_queue`` (SQS): each message body is an order line (Keyturn's JSON), or a
  whole EventBridge event delivered to the queue, whose ``detail`` is the line.  A
  message that can never succeed is recorded with its reason and acknowledged; only
  transient failures are listed in ``batchItemFailures`` (an empty list when none), so
  SQS redelivers just those and, after the queue's receive count, moves them to the
  dead-letter queue.
- ``provision_events`` (EventBridge): the event's ``detail`` is the line.  A permanent
  rejection answers ``{"ok": false, "error": ...}`` (recorded like the queue's); a
  transient failure raises, so Lambda's asynchronous retries and its on-failure
  destination apply.
- Shop events (Shopify's and Stripe's partner event sources, ``chalicelib.shopify`` and
  ``chalicelib.stripe``) arrive either way, whole: their result is ``{"ok": true,
  "results": [one per line touched]}``.
- ``operator``: ``{"action": ..., ...}`` events from the console (``chalicelib.operator``).
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib import audit, errors, provisioning
from chalicelib.logs import logger


def is_shop_event(body: Any) -> bool:
    from chalicelib import shopify, stripe

    return shopify.is_shopify(body) or stripe.is_stripe(body)


def provision_shop(event: dict[str, Any]) -> dict[str, Any]:
    """A Shopify or Stripe event: the results of the lines it touched; :class:`provisioning.Rejected` if malformed."""
    from chalicelib import shopify, stripe

    try:
        results = shopify.handle(event) if shopify.is_shopify(event) else stripe.handle(event)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, errors.InvalidOrder) as exc:
        # A shape the parsers did not foresee: the event's fault, never a reason to retry it forever.
        # (DynamoDB's and the SDK's failures are none of these, so they stay transient.)
        logger.warning("shop event not applicable", extra={"error": type(exc).__name__})
        text = exc.message if isinstance(exc, errors.KeyturnError) else str(exc)
        raise provisioning.Rejected(f"Invalid shop event: {type(exc).__name__}: {text[:300]}") from None
    return {"ok": True, "results": results}


def shop_source(event: Any) -> str:
    from chalicelib import shopify

    return "shopify" if shopify.is_shopify(event) else "stripe"


def line_of(body: Any) -> Any:
    """The order line of a message body: the line itself, or an EventBridge event's ``detail``."""
    if isinstance(body, dict) and "detail" in body and "detail-type" in body:
        return body["detail"]
    return body


def provision_message(message_id: str, body: str) -> dict[str, Any]:
    """One SQS message: its result, or its recorded rejection; raises only when it may succeed later."""
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # a lone surrogate (\ud800) is no text DynamoDB keeps
    except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        return provisioning.reject(f"Invalid provisioning event: the message body is not JSON ({str(exc)[:200]})",
                                   message_id=message_id)
    if is_shop_event(data):
        try:
            return provision_shop(data)
        except provisioning.Rejected as exc:
            return provisioning.reject(exc.message, message_id=message_id, source=shop_source(data))
    line = line_of(data)
    try:
        return provisioning.provision(line)
    except provisioning.Rejected as exc:
        return provisioning.reject(exc.message, message_id=message_id, data=line)


def handle_queue(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    def record_handler(record: SQSRecord) -> dict[str, Any]:
        logger.append_keys(message_id=record.message_id)
        try:
            with audit.acting_as(f"event:sqs:{record.message_id}"):
                return provision_message(record.message_id, record.body)
        except Exception:  # transient: SQS redelivers it; the log says why (Powertools logs it at debug only)
            logger.exception("provisioning message failed; it will be redelivered")
            raise
        finally:
            logger.remove_keys(["message_id"])

    # An entire batch of transient failures is reported like a partial one, not raised.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                         context=context))


def handle_event(event: Any, context: Any = None) -> dict[str, Any]:
    event_id = str(event.get("id", "")) if isinstance(event, dict) else ""
    line = line_of(event) if isinstance(event, dict) else None
    try:
        json.dumps(line, ensure_ascii=False).encode("utf-8")
    except ValueError:  # a lone surrogate: no text DynamoDB keeps
        line = "(an event that is not UTF-8 text)"
    event_id = event_id.encode("utf-8", "replace").decode()[:200]
    with audit.acting_as(f"event:eventbridge:{event_id or 'unnamed'}"):
        if is_shop_event(event) and isinstance(line, dict):
            try:
                return provision_shop(event)
            except provisioning.Rejected as exc:
                provisioning.reject(exc.message, message_id=f"event:{event_id or 'unnamed'}",
                                    source=shop_source(event))
                return {"ok": False, "error": {"code": exc.code.value, "message": exc.message}}
        try:
            return {"ok": True, "results": [provisioning.provision(line)]}
        except provisioning.Rejected as exc:
            provisioning.reject(exc.message, message_id=f"event:{event_id or 'unnamed'}", data=line)
            return {"ok": False, "error": {"code": exc.code.value, "message": exc.message}}

