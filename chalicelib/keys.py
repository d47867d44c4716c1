"""Log Insight-style license keys: 25 characters that carry their own signed summary.

A key is the base-36 form (``0-9A-Z``, 5 groups of 5) of a 128-bit number::

    tag (46 bits) | sealed payload (82 bits)

    payload = version (4) | type (2) | count (20) | expiry day (16) | serial (40)
    tag     = HMAC-SHA256(secret, "mac" || payload)[:46 bits]
    sealed  = payload XOR HMAC-SHA256(secret, "pad" || tag)[:82 bits]

The tag authenticates the payload (46 bits > the 40 the contract asks for); the pad
makes keys look uniformly random, so a key's count or expiry cannot be read or
guessed from neighbouring keys.  Any other 25-character string, a changed character
included, fails the tag check and is an ``Invalid serial number``.

Expiry is a day (UTC); the key is valid through the end of that day.  Day 0 means
the key never expires.  Count 0 means unlimited.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from chalicelib import errors, runtime

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
KEY_PATTERN = re.compile(r"^[0-9A-Z]{5}(-[0-9A-Z]{5}){4}$")
VERSION = 1
MAX_COUNT = (1 << 20) - 1
EPOCH = date(1970, 1, 1)
MAX_EXPIRY = date.fromordinal(EPOCH.toordinal() + (1 << 16) - 1)

_TAG_BITS, _PAYLOAD_BITS, _SERIAL_BITS = 46, 82, 40
_DAY_MS = 86_400_000


class KeyType(StrEnum):
    OSI = "OSI"
    CPU = "CPU"
    CORE = "CORE"


_TYPE_CODES = {KeyType.OSI: 0, KeyType.CPU: 1, KeyType.CORE: 2}
_TYPES_BY_CODE = {code: kind for kind, code in _TYPE_CODES.items()}

# (singular, plural, unlimited) texts of the "configuration" field, per type.
_CONFIGURATION = {
    KeyType.OSI: ("1 Operating System Instance (OSI)", "{n} Operating System Instances (OSIs)",
                  "Unlimited Operating System Instances (OSIs)"),
    KeyType.CPU: ("1 CPU", "{n} CPUs", "Unlimited CPUs"),
    KeyType.CORE: ("1 Core", "{n} Cores", "Unlimited Cores"),
}


@dataclass(frozen=True)
class KeySummary:
    """What a key grants, decoded from the key itself."""

    type_enum: KeyType
    count: int  # 0 = unlimited
    expires: date | None  # last valid day (UTC); None = never
    serial: int

    @property
    def configuration(self) -> str:
        one, many, unlimited = _CONFIGURATION[self.type_enum]
        if self.count == 0:
            return unlimited
        return one if self.count == 1 else many.format(n=self.count)

    @property
    def expiration_ms(self) -> int:
        """The last millisecond of the expiry day, UTC; 0 for a key that never expires."""
        if self.expires is None:
            return 0
        return (self.expires.toordinal() - EPOCH.toordinal() + 1) * _DAY_MS - 1

    def expired_at(self, moment: datetime) -> bool:
        return self.expires is not None and moment.timestamp() * 1000 > self.expiration_ms


def expiry_day(expiration_ms: int) -> date | None:
    """The inverse of :attr:`KeySummary.expiration_ms`."""
    if expiration_ms == 0:
        return None
    return date.fromordinal(EPOCH.toordinal() + (expiration_ms + 1) // _DAY_MS - 1)


def normalise(key: str) -> str:
    """The stored form: trimmed and upper-cased (the contract's pattern applies after this)."""
    return key.strip().upper()


def _hmac(secret: bytes, label: bytes, data: bytes, bits: int) -> int:
    digest = hmac.new(secret, b"keyturn/license-key/v1/" + label + data, hashlib.sha256).digest()
    return int.from_bytes(digest, "big") >> (256 - bits)


def _seal(payload: int, secret: bytes) -> int:
    tag = _hmac(secret, b"mac", payload.to_bytes(11, "big"), _TAG_BITS)
    pad = _hmac(secret, b"pad", tag.to_bytes(6, "big"), _PAYLOAD_BITS)
    return (tag << _PAYLOAD_BITS) | (payload ^ pad)


def _format(value: int) -> str:
    chars = []
    for _ in range(25):
        value, digit = divmod(value, 36)
        chars.append(ALPHABET[digit])
    text = "".join(reversed(chars))
    return "-".join(text[i:i + 5] for i in range(0, 25, 5))


def mint(type_enum: KeyType | str, count: int, expires: date | None, *, secret: bytes,
         serial: int | None = None) -> str:
    """A new key for ``count`` units of ``type_enum`` (0 = unlimited), valid through ``expires``."""
    kind = KeyType(type_enum)
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be between 0 (unlimited) and {MAX_COUNT}")
    if expires is not None and not EPOCH < expires <= MAX_EXPIRY:
        raise ValueError(f"expiry must be after {EPOCH} and no later than {MAX_EXPIRY}")
    if serial is None:
        serial = int.from_bytes(runtime.random_bytes(5), "big")
    if not 0 <= serial < 1 << _SERIAL_BITS:
        raise ValueError("serial must fit in 40 bits")
    day = 0 if expires is None else expires.toordinal() - EPOCH.toordinal()
    payload = (((VERSION << 2 | _TYPE_CODES[kind]) << 20 | count) << 16 | day) << _SERIAL_BITS | serial
    return _format(_seal(payload, secret))


def decode(key: str, *, secret: bytes) -> KeySummary:
    """The summary a key carries, or :class:`errors.InvalidSerial` for anything else."""
    text = normalise(key)
    if not KEY_PATTERN.match(text):
        raise errors.InvalidSerial()
    value = 0
    for char in text.replace("-", ""):
        value = value * 36 + ALPHABET.index(char)
    if value >> (_TAG_BITS + _PAYLOAD_BITS):
        raise errors.InvalidSerial()
    tag = value >> _PAYLOAD_BITS
    pad = _hmac(secret, b"pad", tag.to_bytes(6, "big"), _PAYLOAD_BITS)
    payload = (value & ((1 << _PAYLOAD_BITS) - 1)) ^ pad
    if not hmac.compare_digest(_seal(payload, secret).to_bytes(16, "big"), value.to_bytes(16, "big")):
        raise errors.InvalidSerial()
    serial = payload & ((1 << _SERIAL_BITS) - 1)
    day = (payload >> _SERIAL_BITS) & 0xFFFF
    count = (payload >> (_SERIAL_BITS + 16)) & MAX_COUNT
    type_code = (payload >> (_SERIAL_BITS + 36)) & 0b11
    version = payload >> (_SERIAL_BITS + 38)
    if version != VERSION or type_code not in _TYPES_BY_CODE:
        raise errors.InvalidSerial()
    expires = None if day == 0 else date.fromordinal(EPOCH.toordinal() + day)
    return KeySummary(_TYPES_BY_CODE[type_code], count, expires, serial)

