"""The one clock and the one random source every service uses.

Tests replace them with :func:`configure` (a fixed or movable clock, predictable
bytes) instead of patching modules; production code calls :func:`now` and
:func:`random_bytes` and never ``datetime.now`` or ``os.urandom`` directly.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Runtime:
    clock: Callable[[], datetime] = _utcnow
    random_bytes: Callable[[int], bytes] = field(default=secrets.token_bytes)


_current = Runtime()


def configure(**changes: Callable) -> Runtime:
    """Swap the clock and/or random source (tests, benchmarks); returns the old runtime."""
    global _current
    previous = _current
    _current = replace(_current, **changes)
    return previous


def restore(previous: Runtime) -> None:
    global _current
    _current = previous


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return _current.clock()


def now_ms() -> int:
    return int(now().timestamp() * 1000)


def random_bytes(n: int) -> bytes:
    return _current.random_bytes(n)
