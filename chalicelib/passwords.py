"""Password hashing with scrypt (stdlib), parameters stored with each hash.

Format: ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``.  Verification recomputes
with the stored parameters, so the cost can be raised later without a migration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from chalicelib import runtime

LOG2_N, R, P = 14, 8, 1  # 16 MiB, ~50 ms: fits a 128 MB Lambda
_DKLEN = 32


def hash_password(password: str, *, log2_n: int = LOG2_N) -> str:
    salt = runtime.random_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << log2_n, r=R, p=P, dklen=_DKLEN,
                            maxmem=256 * R * (1 << log2_n))
    b64 = base64.b64encode
    return f"scrypt${log2_n}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches; compares in constant time; False on a malformed hash."""
    try:
        scheme, log2_n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r_, p_ = 1 << int(log2_n), int(r), int(p)
        digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=n, r=r_, p=p_,
                                dklen=_DKLEN, maxmem=256 * r_ * n)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


# Verified against when the user does not exist or is locked, so a failed login
# costs the same scrypt work whatever the reason (no user-enumeration oracle): the
# parameters are those every new hash gets.
DUMMY_HASH = f"scrypt${LOG2_N}${R}${P}$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def burn_time(password: str) -> None:
    verify_password(password, DUMMY_HASH)
