"""The audit trail: who changed what, when, append-only and tamper-evident.

Every state change appends a record to its entity's chain (``order#<key>``,
``activation#<key>#<host ids>``, ``license-key#<key>``, ``user#<name>``,
``message#<id>``) in the same DynamoDB transaction as the change itself: the change
and its record exist together or not at all.  Records are only ever put, under the
condition that their place is free; no code path updates or deletes one.

Each record carries the SHA-256 of its own content and of the previous record of its
entity (``prev``), so editing, removing or reordering a record breaks the chain where
it happened; :func:`verify` names the first bad record.  The chain's head (its last
sequence number and digest) lives in a table of its own, updated under the condition
that it is still the head the writer read: two writers never fork a chain, and a
removed last record is told by the head.

Who: the actor is set once per entry point (``acting_as``: the API's user or the
end user's address, the operator, the provisioning event) and read here, so no
service passes it along.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import runtime
from chalicelib.models import CONFLICT_ATTEMPTS, AuditHead, AuditRecord, connection, reason_codes, retrying_conflicts

_READ = object()  # transact(): read the head first

_actor: contextvars.ContextVar[str] = contextvars.ContextVar("audit_actor", default="unknown")


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Attribute the state changes made inside the block to ``actor``."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def actor() -> str:
    return _actor.get()


def digest(entity: str, seq: int, at: int, who: str, action: str, detail: str, prev: str) -> str:
    canonical = json.dumps([entity, seq, at, who, action, detail, prev], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A record to append, with the head it was computed from (None: the entity's first record)."""

    record: AuditRecord
    head: AuditHead | None

    def add_to(self, transaction: TransactWrite) -> None:
        """Put the record and move the head, in ``transaction`` (after the change's own items)."""
        transaction.save(self.record, condition=AuditRecord.seq.does_not_exist())
        new_head = AuditHead(self.record.entity, seq=self.record.seq, digest=self.record.digest)
        if self.head is None:
            transaction.save(new_head, condition=AuditHead.entity.does_not_exist())
        else:
            transaction.save(new_head, condition=AuditHead.seq == int(self.head.seq))


def entry(entity: str, action: str, detail: dict[str, Any], head: AuditHead | None) -> Entry:
    """The next record of ``entity`` after ``head`` (as read), by the current actor, now."""
    seq = int(head.seq) + 1 if head is not None else 1
    prev = str(head.digest) if head is not None else ""
    at, who = runtime.now_ms(), actor()
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)
    record = AuditRecord(entity, seq, at=at, actor=who, action=action, detail=text, prev=prev,
                         digest=digest(entity, seq, at, who, action, text, prev))
    return Entry(record, head)


def transact(entity: str, action: str, detail: dict[str, Any], change: Callable[[TransactWrite], None],
             head: Any = _READ, also: tuple[tuple[str, str, dict[str, Any]], ...] = (), *,
             refusal_expected: bool = False) -> None:
    """One transaction: the change (``change`` adds its items) and the entity's record, after them.

    ``head``: the chain's head as already read with the change's own items (None: the
    entity has none), or read here.  When another writer appended first, the head is
    read again and the whole transaction retried; when one of the change's own
    conditions fails, its ``TransactWriteError`` is raised, its reasons in item order.
    ``also``: the first records of entities the change creates (``(entity, action, detail)``),
    in the same transaction (a replaced license key: the old one's record, and the new one's).
    ``refusal_expected``: the caller sends a change whose condition it expects to fail
    (``users.authenticate`` spends the same requests on every failed login); a
    cancellation is then raised at once, without reading the head again.
    """
    for attempt in range(CONFLICT_ATTEMPTS):
        current = head_of(entity) if head is _READ or attempt else head
        pending = [entry(entity, action, detail, current)] + [entry(e, a, d, None) for e, a, d in also]
        try:
            retrying_conflicts(functools.partial(_write, change, pending))
            return
        except TransactWriteError:
            if refusal_expected:
                raise
            # Decided by the head as it is now, not by the cancellation reasons' positions
            # (moto reports a missing item's failed update against another item): if the
            # head moved, another writer appended first, so read it again and retry; if
            # not, one of the change's own conditions failed.
            if _moved(current, head_of(entity)):
                continue
            raise
    raise RuntimeError(f"the audit chain of {entity} kept moving")


def change_reasons(exc: TransactWriteError, deletes_and_puts: int) -> list[str | None]:
    """The cancellation reasons of the change's own items, in the order it added them by kind.

    PynamoDB sends a transaction's items grouped: condition checks, deletes, puts,
    updates.  The record and the head are the last two puts, so they stand right after
    the change's own deletes and puts (``deletes_and_puts`` of them).
    """
    reasons = reason_codes(exc)
    return reasons[:deletes_and_puts] + reasons[deletes_and_puts + 2:]


def _moved(read: AuditHead | None, now: AuditHead | None) -> bool:
    return (read.seq if read else 0) != (now.seq if now else 0)


def _write(change: Callable[[TransactWrite], None], pending: list[Entry]) -> None:
    with TransactWrite(connection=connection()) as transaction:
        change(transaction)  # first: the change's own items keep their positions in the reasons
        for one in pending:
            one.add_to(transaction)


def append(entity: str, action: str, detail: dict[str, Any]) -> None:
    """A record that is the change itself (a failed login, a rejected event)."""
    transact(entity, action, detail, lambda transaction: None)


def head_of(entity: str) -> AuditHead | None:
    try:
        return AuditHead.get(entity, consistent_read=True)
    except DoesNotExist:
        return None


def head_key(entity: str) -> dict[str, Any]:
    """The head's key for a ``BatchGetItem`` (read with the items the change reads anyway)."""
    kwargs: dict[str, Any] = AuditHead.get_operation_kwargs_from_class(entity)
    return kwargs


def head_from_raw(raw: dict[str, Any] | None) -> AuditHead | None:
    return AuditHead.from_raw_data(raw) if raw else None


def records(entity: str) -> list[AuditRecord]:
    return list(AuditRecord.query(entity, consistent_read=True))


def show(entity: str) -> list[dict[str, Any]]:
    return [{"entity": r.entity, "seq": int(r.seq), "at": int(r.at), "actor": r.actor, "action": r.action,
             "detail": json.loads(r.detail), "prev": r.prev, "digest": r.digest} for r in records(entity)]


def verify(entity: str) -> dict[str, Any]:
    """Check the chain of ``entity``: ``{"ok", "records", "firstBad", "reason"}``."""
    chain = records(entity)
    head = head_of(entity)
    prev = ""
    for expected, record in enumerate(chain, start=1):
        seq = int(record.seq)
        if seq != expected:
            return _bad(entity, len(chain), expected, f"record {expected} is missing (the next is {seq})")
        if record.prev != prev:
            return _bad(entity, len(chain), seq, f"record {seq} does not follow record {seq - 1}")
        recomputed = digest(record.entity, seq, int(record.at), record.actor, record.action, record.detail,
                            record.prev)
        if recomputed != record.digest:
            return _bad(entity, len(chain), seq, f"record {seq} was changed after it was written")
        prev = record.digest
    if head is not None and (int(head.seq) != len(chain) or head.digest != prev):
        return _bad(entity, len(chain), len(chain) + 1 if int(head.seq) > len(chain) else int(head.seq),
                    f"the chain ends at record {len(chain)} but its head names record {int(head.seq)}")
    if head is None and chain:
        return _bad(entity, len(chain), 1, "the chain has records but no head")
    return {"entity": entity, "ok": True, "records": len(chain), "firstBad": None, "reason": None}


def _bad(entity: str, count: int, seq: int, reason: str) -> dict[str, Any]:
    return {"entity": entity, "ok": False, "records": count, "firstBad": seq, "reason": reason}

