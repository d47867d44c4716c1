"""Notifications to the stage's topic (SNS): provisioning results and seat alerts, so a shop can mail its customer
and an operator can act.  Every message is JSON with a ``type`` attribute (``ProvisioningResult``,
``SeatLimitReached``) to filter subscriptions on.  Delivery is at least once: subscribers deduplicate.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib import aws
from chalicelib.config import current


def publish(kind: str, message: dict[str, Any]) -> None:
    """Publish ``message`` as ``kind`` to the stage's notifications topic; nothing when the stage has none."""
    settings = current()
    if not settings.notifications_topic_arn:
        return
    attributes = {"type": {"DataType": "String", "StringValue": kind}}
    if isinstance(message.get("status"), str):
        attributes["status"] = {"DataType": "String", "StringValue": message["status"]}
    aws.client("sns", settings.region, endpoint_url=settings.endpoint_url).publish(
        TopicArn=settings.notifications_topic_arn, Message=json.dumps(message, ensure_ascii=False, sort_keys=True),
        MessageAttributes=attributes)
