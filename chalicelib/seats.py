"""Seat alerts and seat metrics: an operator learns that an order ran out before its customer complains.

When an order's last seat is taken, or an activation is refused for lack of seats,
``SeatLimitReached`` is published (``notify``), at most once per order per hour: the
order's ``seat_alert_at`` is set by a conditional update, and only the request that
sets it publishes.  Every activation, refusal and deactivation emits CloudWatch metrics
in the embedded metric format (Powertools), per product: ``Activations``,
``ActivationsRefused``, ``Deactivations`` and the ``FreeSeats`` left, so an alarm can be
set in the console without any code.  Neither may fail the request it follows: a seat
taken stays taken, whatever happens to its alert.
"""

from __future__ import annotations

from pynamodb.exceptions import UpdateError

from chalicelib import notify, runtime
from chalicelib.logs import logger
from chalicelib.models import Order, condition_failed

ALERT_INTERVAL_MS = 3600 * 1000
NAMESPACE = "Keyturn"


def activated(order: Order) -> None:
    """A seat was taken on ``order`` (as read before the activation)."""
    free = int(order.bulk_max) - int(order.activated_licenses) - 1
    _metrics(order, {"Activations": 1, "FreeSeats": max(free, 0)})
    if free <= 0:
        _alert(order, "the last seat was taken")


def refused(order: Order) -> None:
    """An activation was refused: ``order`` has no free seat."""
    _metrics(order, {"ActivationsRefused": 1, "FreeSeats": 0})
    _alert(order, "an activation was refused: no seat is free")


def released(order: Order) -> None:
    """A seat of ``order`` (as read before) was given back."""
    _metrics(order, {"Deactivations": 1, "FreeSeats": int(order.bulk_max) - int(order.activated_licenses) + 1})


def _metrics(order: Order, values: dict[str, int]) -> None:
    try:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        product = str(order.product.as_dict().get("name", ""))
        for name, value in values.items():
            with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE) as metric:
                metric.add_dimension(name="product", value=product or "-")
    except Exception:  # metrics are never worth a failed request
        logger.exception("seat metrics failed")


def _alert(order: Order, reason: str) -> None:
    now = runtime.now_ms()
    not_alerted_lately = Order.seat_alert_at.does_not_exist() | (Order.seat_alert_at <= now - ALERT_INTERVAL_MS)
    try:
        Order(order.activation_key).update(actions=[Order.seat_alert_at.set(now)],
                                           condition=Order.activation_key.exists() & not_alerted_lately)
        notify.publish("SeatLimitReached", {
            "type": "SeatLimitReached", "activationKey": order.activation_key, "reason": reason,
            "bulkMax": int(order.bulk_max), "product": order.product.as_dict(), "customer": order.customer.as_dict(),
            "at": runtime.now().isoformat(timespec="seconds")})
    except UpdateError as exc:
        if not condition_failed(exc):
            logger.exception("seat alert failed")
    except Exception:
        logger.exception("seat alert failed")
