"""Every PynamoDB model, one table per aggregate so operators can read them in the console.

Nothing is fixed at import: :func:`bind` (called by ``config.bind`` at each entry point)
names every table ``<table prefix><name>``, sets the region and the endpoint, and gives
all models one shared PynamoDB ``Connection``, hence one botocore client from the
process's one session (``chalicelib.aws``).  PynamoDB otherwise makes a connection,
a client and a botocore session per model.  Times are integers in milliseconds since
the epoch (UTC) unless named otherwise.
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING, Callable, TypeVar

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import Connection
from pynamodb.connection.table import TableConnection
from pynamodb.exceptions import TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

if TYPE_CHECKING:
    from chalicelib.config import Settings


class _Meta:
    table_name: str | None = None  # <table prefix><table_suffix>, set by bind()
    table_suffix: str
    region: str | None = None
    billing_mode = "PAY_PER_REQUEST"


class User(Model):
    """A console/API user.  Access: get by username (login).

    ``failed_logins`` counts attempts inside the window that started at
    ``failed_window_start``; ``locked_until`` blocks logins.  Every change is one
    conditional update (see ``users``), never a read followed by an unconditional write.
    """

    class Meta(_Meta):
        table_suffix = "users"

    username = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    password_hash = UnicodeAttribute()
    failed_logins = NumberAttribute(default=0)
    failed_window_start = NumberAttribute(default=0)
    locked_until = NumberAttribute(default=0)
    created_at = NumberAttribute()
    pending_logins = UnicodeSetAttribute(null=True)  # ids of attempts counted and not yet decided (users.authenticate)


class Session(Model):
    """A login session.  Access: get by sha256(sessionId); the id itself is never stored.

    ``expires_at`` is the idle expiry, refreshed at most every min(60 s, ttl/10);
    ``purge_at`` (DynamoDB TTL, seconds) removes the item a day after expiry, until
    when the session answers 440 rather than 401.
    """

    class Meta(_Meta):
        table_suffix = "sessions"

    token_hash = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    username = UnicodeAttribute()
    ttl_seconds = NumberAttribute()
    created_at = NumberAttribute()
    refreshed_at = NumberAttribute()
    expires_at = NumberAttribute()
    purge_at = TTLAttribute()


class LicenseIdIndex(GlobalSecondaryIndex["LicenseKey"]):
    """Lookup of a stored key by its public uuid (eventually consistent)."""

    class Meta:
        index_name = "by-id"
        projection = AllProjection()

    license_id = UnicodeAttribute(hash_key=True)


class LicenseKey(Model):
    """A Log Insight-style license key added through POST /api/v1/licenses.

    Access: conditional put by normalised key (one copy of a key, ever stored at once),
    scan for the list, query ``by-id`` for GET/DELETE by uuid.  The summary is decoded
    from the key once, when it is added, and stored: reading needs no secret.
    """

    class Meta(_Meta):
        table_suffix = "license-keys"

    license_key = UnicodeAttribute(hash_key=True)
    license_id = UnicodeAttribute()
    created_at = NumberAttribute()
    type_enum = UnicodeAttribute()
    units = NumberAttribute(attr_name="count")  # not "count": that name is Model.count()
    expiration_date = NumberAttribute()  # ms, 0 = never
    serial = NumberAttribute()
    added_by = UnicodeAttribute(null=True)
    by_id = LicenseIdIndex()


class Order(Model):
    """A license order sold to a customer: the activation key and its seats.

    Access: get by activation key (every LAC call).  ``activated_licenses`` only changes
    inside the activation/deactivation transactions, under the conditions
    ``activated_licenses < bulk_max`` (and ``enabled``) and ``activated_licenses > 0``.
    ``customer``, ``product``, ``hostid`` and ``features`` are stored as the wire shows
    them (camelCase), so operators read the same thing in the console and the API.
    Dates are ``YYYY-MM-DD`` strings (the last valid day, UTC) or absent.
    """

    class Meta(_Meta):
        table_suffix = "orders"

    activation_key = UnicodeAttribute(hash_key=True)
    customer = MapAttribute[str, object]()
    product = MapAttribute[str, object]()
    license_type = UnicodeAttribute()
    bulk_max = NumberAttribute()
    activated_licenses = NumberAttribute(default=0)
    hostid = MapAttribute[str, object]()
    features = ListAttribute[dict]()
    expiration_date = UnicodeAttribute(null=True)
    maintenance_end_date = UnicodeAttribute(null=True)
    enabled = BooleanAttribute(default=True)
    deactivations_allowed = NumberAttribute(default=0)
    deactivations_used = NumberAttribute(default=0)
    created_at = NumberAttribute()
    external_order_id = UnicodeAttribute(null=True)
    seat_alert_at = NumberAttribute(null=True)  # ms of the last SeatLimitReached (at most one an hour)


class Activation(Model):
    """One activated license: an order's seat taken by one host.

    Key: activation key + canonical host ids (types sorted, values upper-cased), so the
    same host asking again finds its license instead of taking a second seat.  Created
    and deleted only in a transaction with the order's seat counter.
    """

    class Meta(_Meta):
        table_suffix = "activations"

    activation_key = UnicodeAttribute(hash_key=True)
    hostids_key = UnicodeAttribute(range_key=True)
    hostids = ListAttribute[dict]()  # [{"nameRaw", "value"}] as first sent
    activation_time = NumberAttribute()
    content = UnicodeAttribute()
    filename = UnicodeAttribute()
    kid = UnicodeAttribute()
    state = UnicodeAttribute(default="success")


class Provisioning(Model):
    """What became of one line of a shop's order: provisioned once, or rejected with a reason.

    Key: ``<source>#<orderId>`` + ``lineItem`` (the idempotency key; a message that names
    no order is kept under ``message#<messageId>`` + ``-``).  A ``provisioned`` line is
    written only in the transaction that creates its order or license key, under the
    condition that none exists yet (or only a rejection), so however often an event is
    delivered it provisions once; ``result`` is the JSON every delivery reports.
    """

    class Meta(_Meta):
        table_suffix = "provisioning"

    order_key = UnicodeAttribute(hash_key=True)
    line_item = UnicodeAttribute(range_key=True)
    status = UnicodeAttribute()  # provisioned | rejected; shop lines also: revoked | pending | ignored
    result = UnicodeAttribute()  # the result JSON, exactly as reported and published
    created_at = NumberAttribute()
    # Shop lines only (``chalicelib.shops``): what the shop has said about the line so far,
    # what was applied to its order or key, and a version each write moves (the condition).
    facts = UnicodeAttribute(null=True)  # JSON
    applied = UnicodeAttribute(null=True)  # JSON
    version = NumberAttribute(null=True)


class Plan(Model):
    """What a shop's product grants (``chalicelib.plans``).  Access: get by plan id; scan for the list."""

    class Meta(_Meta):
        table_suffix = "plans"

    plan_id = UnicodeAttribute(hash_key=True)
    spec = UnicodeAttribute()  # the plan as the operator put it (JSON)
    updated_at = NumberAttribute()


class PlanClaim(Model):
    """A Shopify sku or Stripe price and the one plan that claims it: ``shopify-sku#<sku>``, ``stripe-price#<id>``.

    Written only with its plan, under the condition that no other plan holds it.
    """

    class Meta(_Meta):
        table_suffix = "plan-claims"

    claim = UnicodeAttribute(hash_key=True)
    plan_id = UnicodeAttribute()


class AuditRecord(Model):
    """One state change, append-only: put once under the condition that its place is free, never updated.

    Key: the entity (``order#<key>``, ``user#<name>``, ...) + its sequence number, from 1.
    ``digest`` is the SHA-256 of the record's fields and ``prev``, the digest of the
    entity's previous record (``audit.verify`` checks the chain).
    """

    class Meta(_Meta):
        table_suffix = "audit"

    entity = UnicodeAttribute(hash_key=True)
    seq = NumberAttribute(range_key=True)
    at = NumberAttribute()
    actor = UnicodeAttribute()
    action = UnicodeAttribute()
    detail = UnicodeAttribute()  # JSON
    prev = UnicodeAttribute()
    digest = UnicodeAttribute()


class AuditHead(Model):
    """The last record of an entity's chain: moved only under the condition that it is still the one read."""

    class Meta(_Meta):
        table_suffix = "audit-heads"

    entity = UnicodeAttribute(hash_key=True)
    seq = NumberAttribute()
    digest = UnicodeAttribute()


class RateLimit(Model):
    """Attempts in one fixed window: ``<what>#<subject>#<window start, s>`` (``activate#<activation key>#...``).

    Access: one conditional UpdateItem per attempt (add 1 while below the limit), never
    read.  ``purge_at`` (DynamoDB TTL, seconds) removes the item after its window; the
    key names the window, so a purge that comes late (TTL is lazy) changes nothing.
    """

    class Meta(_Meta):
        table_suffix = "rate-limits"

    counter = UnicodeAttribute(hash_key=True)
    attempts = NumberAttribute()
    purge_at = TTLAttribute()


ALL_MODELS: tuple[type[Model], ...] = (User, Session, LicenseKey, Order, Activation, Provisioning, AuditRecord,
                                       AuditHead, Plan, PlanClaim, RateLimit)

_lock = threading.Lock()
_shared: Connection | None = None


def bind(settings: "Settings") -> None:
    """Point every model at the stage's tables, all through one shared connection."""
    global _shared
    from chalicelib import aws

    with _lock:
        shared = Connection(region=settings.region, host=settings.endpoint_url)
        shared._local.session = aws.session()  # PynamoDB would make a session per thread
        for model in ALL_MODELS:
            model.Meta.table_name = f"{settings.table_prefix}{model.Meta.table_suffix}"  # type: ignore[attr-defined]
            model.Meta.region = settings.region
            model.Meta.host = settings.endpoint_url
            model._connection = None
            table: TableConnection = model._get_connection()  # PynamoDB builds its schema (no request)
            shared.add_meta_table(table.connection.get_meta_table(table.table_name))
            table.connection = shared
        aws.adopt(shared.client)  # made now, on this thread, from the shared session
        _shared = shared


def connection() -> Connection:
    """The connection every model uses (transactions and batch reads take it explicitly)."""
    if _shared is None:
        from chalicelib.config import ConfigError

        raise ConfigError("no stage is bound: an entry point must call chalicelib.config.bind() first")
    return _shared


def condition_failed(exc: Exception) -> bool:
    """True when a PynamoDB write failed only because its condition did not hold."""
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


CONFLICT_ATTEMPTS = 10
_T = TypeVar("_T")


def reason_codes(exc: TransactWriteError) -> list[str | None]:
    """Why each item of a cancelled transaction failed, in the order of its items (None: it did not)."""
    return [reason.code if reason else None for reason in (exc.cancellation_reasons or [])]


def retrying_conflicts(attempt: Callable[[], _T]) -> _T:
    """Real DynamoDB cancels transactions that race on one item (``TransactionConflict``):
    those are retried with jittered backoff; every other outcome is final."""
    for tries in range(CONFLICT_ATTEMPTS - 1):
        try:
            return attempt()
        except TransactWriteError as exc:
            if "TransactionConflict" not in reason_codes(exc):
                raise
            time.sleep(random.uniform(0, 0.01 * 2 ** min(tries, 6)))
    return attempt()


def create_tables() -> None:
    """Create every missing table (local stack, tests) and turn on DynamoDB TTL."""
    for model in ALL_MODELS:
        if not model.exists():
            model.create_table(wait=True)
    _enable_ttl(Session, "purge_at")
    _enable_ttl(RateLimit, "purge_at")


def _enable_ttl(model: type[Model], attribute: str) -> None:
    client = model._get_connection().connection.client
    current = client.describe_time_to_live(TableName=model.Meta.table_name)
    if current["TimeToLiveDescription"].get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return
    client.update_time_to_live(
        TableName=model.Meta.table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
    )
