"""Rate limits a deployer sets per stage: attempts per subject per minute, counted in DynamoDB.

One fixed one-minute window per subject, one item per window (``models.RateLimit``):
each attempt is one conditional UpdateItem that adds 1 while the count is below the
limit, so the count never passes it and parallel attempts (several Lambda instances, or
``chalice local``'s threads) share one count; a refused attempt writes nothing.  The
window's item expires with DynamoDB TTL.  A fixed window lets a client make up to twice
the limit across a window boundary, which a one-minute limit on activations can bear
for the price of one request (a sliding window would need a read, or an item per attempt).

Activation attempts (``PUT /rest/v1/licenses/{key}/{hostids}``) are limited per
activation key: ``KEYTURN_ACTIVATION_RATE_LIMIT`` a minute (``Settings.activation_rate_limit``),
60 on the deployed stages, none on ``local`` and ``test`` unless set.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pynamodb.exceptions import UpdateError

from chalicelib import errors, runtime
from chalicelib.models import RateLimit, condition_failed

WINDOW_S = 60


def take(subject: str, limit: int) -> None:
    """Count one attempt of ``subject`` in this minute, or :class:`errors.TooManyAttempts` over ``limit``.

    ``limit`` 0: no limit, and no request.
    """
    if limit <= 0:
        return
    now_s = runtime.now_ms() // 1000
    window = now_s - now_s % WINDOW_S
    end = window + WINDOW_S
    below_the_limit = RateLimit.attempts.does_not_exist() | (RateLimit.attempts < limit)
    try:
        RateLimit(f"{subject}#{window}").update(
            actions=[RateLimit.attempts.add(1), RateLimit.purge_at.set(datetime.fromtimestamp(end, tz=timezone.utc))],
            condition=below_the_limit)
    except UpdateError as exc:
        if condition_failed(exc):
            raise errors.TooManyAttempts(retry_after=end - now_s) from None
        raise
