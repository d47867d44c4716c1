"""The license-key collection behind /api/v1/licenses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Iterable

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import audit, errors, keys, keystore, runtime
from chalicelib.models import LicenseKey


def new_item(key: Any, *, added_by: str | None = None) -> LicenseKey:
    """The stored form of a valid key (not stored yet), its summary decoded once, now."""
    if not isinstance(key, str):
        raise errors.InvalidSerial()
    summary = keys.decode(key, secret=keystore.license_key_secret())
    return LicenseKey(
        keys.normalise(key), license_id=str(uuid.uuid4()), created_at=runtime.now_ms(),
        type_enum=summary.type_enum.value, units=summary.count,
        expiration_date=summary.expiration_ms, serial=summary.serial, added_by=added_by,
    )


def entity_of(license_key: str) -> str:
    return f"license-key#{license_key}"


def add(key: Any, *, added_by: str | None = None) -> LicenseKey:
    """Store a valid key once, audited: a second copy (even a racing one) is ``LicenseExists``."""
    item = new_item(key, added_by=added_by)

    def change(transaction: TransactWrite) -> None:
        transaction.save(item, condition=LicenseKey.license_key.does_not_exist())

    try:
        audit.transact(entity_of(item.license_key), "key-added", _audited(item), change)
    except TransactWriteError as exc:
        if audit.change_reasons(exc, deletes_and_puts=1)[:1] == ["ConditionalCheckFailed"]:
            raise errors.LicenseExists() from None
        raise
    return item


def _audited(item: LicenseKey) -> dict[str, Any]:
    return {"licenseId": item.license_id, "typeEnum": item.type_enum, "count": int(item.units),
            "expirationDate": int(item.expiration_date), "serial": int(item.serial)}


def all_keys() -> list[LicenseKey]:
    return sorted(LicenseKey.scan(consistent_read=True), key=lambda item: (item.created_at, item.license_id))


def find(license_id: str) -> LicenseKey:
    """The key with this public id (through the eventually consistent ``by-id`` index).

    An empty id (``/api/v1/licenses//``) is no key's: DynamoDB refuses an empty key value
    with a ValidationException, so it is answered here, without a request.
    """
    if not license_id:
        raise errors.LicenseNotFound()
    for item in LicenseKey.by_id.query(license_id, limit=1):
        return item
    raise errors.LicenseNotFound()


def delete(license_id: str) -> None:
    item = find(license_id)

    def change(transaction: TransactWrite) -> None:
        transaction.delete(item, condition=LicenseKey.license_id == license_id)

    try:
        audit.transact(entity_of(item.license_key), "key-deleted", _audited(item), change)
    except TransactWriteError as exc:
        if audit.change_reasons(exc, deletes_and_puts=1)[:1] == ["ConditionalCheckFailed"]:
            raise errors.LicenseNotFound() from None  # deleted (or deleted and re-added) meanwhile
        raise


def summary_of(item: LicenseKey) -> keys.KeySummary:
    """What the key grants, as decoded from it when it was added."""
    return keys.KeySummary(keys.KeyType(item.type_enum), int(item.units), keys.expiry_day(int(item.expiration_date)),
                           int(item.serial))


def to_wire(item: LicenseKey, now: datetime) -> dict[str, Any]:
    """The license object of the wire contract (A.3)."""
    summary = summary_of(item)
    expired = summary.expired_at(now)
    return {
        "id": item.license_id,
        "status": "Expired" if expired else "Active",
        "error": "License expired." if expired else "",
        "configuration": summary.configuration,
        "licenseKey": item.license_key,
        "infinite": summary.expires is None,
        "count": summary.count,
        "typeEnum": summary.type_enum.value,
        "expirationDate": summary.expiration_ms,
        "createdDate": int(item.created_at),
    }


def collection(items: Iterable[LicenseKey], now: datetime) -> dict[str, Any]:
    """The body of GET /api/v1/licenses: totals over active keys and the keys by id."""
    licenses = {}
    for item in items:
        wire = to_wire(item, now)
        wire["expiration"] = wire["expirationDate"]
        licenses[wire["id"]] = wire
    active = [lic for lic in licenses.values() if lic["status"] == "Active"]

    def total(type_enum: str) -> int:
        counts = [lic["count"] for lic in active if lic["typeEnum"] == type_enum]
        return 0 if 0 in counts else sum(counts)

    state = "UNINITIALIZED" if not licenses else "ACTIVE" if active else "EXPIRED"
    return {
        "licenseState": state,
        "maxOsis": total("OSI"),
        "maxCpus": total("CPU"),
        "hasCpu": any(lic["typeEnum"] == "CPU" for lic in active),
        "hasOsi": any(lic["typeEnum"] == "OSI" for lic in active),
        "hasTap": False,
        "averageOsiUsage": 0,
        "licenses": licenses,
    }
