"""Host ids as they travel in the LAC path segment (wire contract B.1).

A client names the machine a license is bound to as base64 of ``TYPE=value[,...]`` in the
URL.  This module turns that segment into validated :class:`HostId` values, derives the
canonical lookup key (so one host always maps to one license, whatever order or case
the client used) and checks ids against an order's host id template (B.3).

Everything here is pure and stdlib-only, so the API, the CLI and the operator Lambda
share one definition of a valid host id.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from chalicelib import errors

HOSTID_TYPES: dict[str, str] = {
    "ETHERNET": "Ethernet",
    "USERNAME": "Username",
    "HOSTNAME": "Hostname",
    "IPADDRESS": "IP Address",
    "CUSTOM": "Custom",
    "DONGLE_HASPHL": "Dongle HASP HL",
    "HARDDISK": "Hard Disk",
    "LONG": "Long",
    "BIOS": "Bios",
    "WIN_PRODUCT_ID": "Windows Product ID",
    "AWS_INSTANCE_ID": "AWS Instance ID",
    "GCE_ID": "GCE Instance ID",
    "AZURE_ID": "Azure Instance ID",
}

_VALUE = re.compile(r"[A-Za-z0-9_.*:\\-]{1,255}")
_USERNAME = re.compile(r"[A-Za-z0-9_.*:\\@-]{1,255}")
# Six hex pairs; the separator after the first pair (possibly none) must be repeated
# between every later pair, so "00-1A:2B..." or "001A-2B3C..." are not MAC addresses.
_ETHERNET = re.compile(r"[0-9A-Fa-f]{2}([-:]?)[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
_STANDARD_ONLY = frozenset("+/")
_URLSAFE_ONLY = frozenset("-_")
_TO_STANDARD = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class HostId:
    """One ``TYPE=value`` item: ``name_raw`` upper-case, ``value`` exactly as sent.

    The value is kept verbatim because responses must echo what the client first sent;
    only :func:`canonical` normalises it.  Construction validates, so a ``HostId`` that
    exists is always a valid one and callers never re-check.
    """

    name_raw: str
    value: str

    def __post_init__(self) -> None:
        if self.name_raw == "ETHERNET":
            rule = _ETHERNET
        elif self.name_raw == "USERNAME":
            rule = _USERNAME
        elif self.name_raw in HOSTID_TYPES:
            rule = _VALUE
        else:
            raise errors.HostIdFormat()
        if not rule.fullmatch(self.value):
            raise errors.HostIdFormat()

    def to_wire(self) -> dict[str, str]:
        """The LAC body form; key order is part of the byte-exact contract."""
        return {"nameRaw": self.name_raw, "name": HOSTID_TYPES[self.name_raw], "value": self.value}


def _canonical_pair(hostid: HostId) -> tuple[str, str]:
    """(type, value) as compared: values are case-insensitive, MACs lose separators."""
    if hostid.name_raw == "ETHERNET":
        return hostid.name_raw, re.sub("[-:]", "", hostid.value).upper()
    return hostid.name_raw, hostid.value.upper()


def _decode_segment(segment: str) -> bytes:
    """Percent-decode once, then base64-decode strictly.

    ``unquote`` (not ``unquote_plus``) because ``+`` is a base64 character and neither API
    Gateway nor ``chalice local`` decodes the path for us.  Either alphabet is accepted,
    but not both in one segment: a mix is no encoder's output.  Padding may be absent,
    but if present it must be exactly right, and the unused low bits of the last
    character must be zero (RFC 4648 3.5), so each text has a single accepted spelling
    per alphabet and padding choice.
    """
    text = unquote(segment)
    if not text.isascii():  # base64 is ASCII; b64decode would raise ValueError, not binascii.Error
        raise errors.HostIdFormat()
    chars = set(text)
    if chars & _STANDARD_ONLY and chars & _URLSAFE_ONLY:
        raise errors.HostIdFormat()
    data = text.translate(_TO_STANDARD).rstrip("=")
    padding = -len(data) % 4
    if len(text) - len(data) not in (0, padding):
        raise errors.HostIdFormat()
    normalised = data + "=" * padding
    try:
        raw = base64.b64decode(normalised, validate=True)
    except binascii.Error:
        raise errors.HostIdFormat() from None
    if not raw or base64.b64encode(raw).decode("ascii") != normalised:
        raise errors.HostIdFormat()
    return raw


MAX_SEGMENT_CHARS = 2048  # as received, percent-encoding included: no real host needs more
MAX_HOSTIDS = 32


def parse_hostids(segment: str) -> tuple[HostId, ...]:
    """Decode a ``{hostids}`` path segment, as received, into host ids in the client's order.

    Every way of being malformed (encoding, item shape, unknown type, value rules) is the
    same client error, ``HostIdFormat``: the contract gives them one message, and the
    template checks come only after this succeeds.  So are a segment over
    ``MAX_SEGMENT_CHARS``, more than ``MAX_HOSTIDS`` ids, and the same id twice (in any
    spelling that compares equal: ``CUSTOM=a,CUSTOM=A``): a host names each of its ids
    once, and a repeat only inflates the stored activation (4,000 repeats stored 241 KB).
    """
    if len(segment) > MAX_SEGMENT_CHARS:
        raise errors.HostIdFormat()
    try:
        text = _decode_segment(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.HostIdFormat() from None
    hostids = []
    for item in text.split(","):
        name, sep, value = item.partition("=")  # the first "=" only
        # ASCII-only upper-casing: str.upper() would turn "bıos" (dotless i) into "BIOS".
        if not sep or not name.isascii():
            raise errors.HostIdFormat()
        hostids.append(HostId(name.upper(), value))
        if len(hostids) > MAX_HOSTIDS:
            raise errors.HostIdFormat()
    if len(set(map(_canonical_pair, hostids))) != len(hostids):
        raise errors.HostIdFormat()
    return tuple(hostids)


MAX_CANONICAL_BYTES = 1024  # DynamoDB's limit for a sort key, which the canonical form is


def canonical(hostids: Iterable[HostId]) -> str:
    """The lookup key for a set of host ids: ``TYPE=VALUE`` items, sorted, distinct.

    Order, case and MAC separators are not part of a host's identity, so two
    requests that differ only in those must find the same license.  Also the ``HOSTID``
    text written into license files.  A set longer than a DynamoDB sort key allows is a
    format error (no real host needs 1 KiB of ids).
    """
    text = ",".join(f"{name}={value}" for name, value in sorted(set(map(_canonical_pair, hostids))))
    if len(text.encode()) > MAX_CANONICAL_BYTES:
        raise errors.HostIdFormat()
    return text


def check_template(hostids: Sequence[HostId], template: Mapping[str, Any]) -> None:
    """Check ids against an order's host id template, raising the contract's first failure.

    Order (B.1): a type the template does not list; then too few ids of a type or too few
    overall; then too many of a type.  Ids are counted as distinct canonical items
    (:func:`parse_hostids` refuses repeats, but other callers may pass any ids).
    Defaults when a key is absent or null: a type's ``min`` and the overall ``min`` are 0,
    a type's ``max`` is unbounded; a template without ``types`` allows no type at all.
    Each type's ``name`` is display text and is ignored.
    """
    limits = {spec["nameRaw"]: spec for spec in template.get("types") or ()}
    distinct = set(map(_canonical_pair, hostids))
    counts = Counter(name for name, _ in distinct)
    if any(name not in limits for name in counts):
        raise errors.HostIdTypeUnsupported()
    if len(distinct) < (template.get("min") or 0) or any(
        counts[name] < (spec.get("min") or 0) for name, spec in limits.items()
    ):
        raise errors.HostIdMissing()
    if any(spec.get("max") is not None and counts[name] > spec["max"] for name, spec in limits.items()):
        raise errors.HostIdTooMany()


def encode_segment(text: str) -> str:
    """Standard, padded base64 of the UTF-8 text: the form clients put in the path."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
