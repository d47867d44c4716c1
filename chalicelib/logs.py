"""Structured JSON logs (Powertools Logger) and masking of secrets in them.

Activation keys (``XXXXX-XXXXX-XXXXX-XXXXX``, any case) and Log Insight-style license
keys (five groups) are credentials: every line the logger writes is masked on its way
to the stream, whatever field or exception text carries them, so no caller can forget.
"""

from __future__ import annotations

import re
import sys

from aws_lambda_powertools import Logger


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is now (Lambda, ``chalice local``, a test's capture)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(mask_keys(text))

    def flush(self) -> None:
        sys.stdout.flush()


logger = Logger(service="keyturn", stream=_CurrentStdout(), utc=True)  # type: ignore[arg-type]


def mask(secret: str | None) -> str:
    """Enough of a key or session id to correlate log lines, never enough to use it."""
    if not secret:
        return ""
    return f"{secret[:4]}…({len(secret)})"


# Four (activation key) or five (license key) groups of five letters or digits, not part of a longer word.
_KEYS = re.compile(r"(?<![0-9A-Za-z-])[0-9A-Za-z]{5}(?:-[0-9A-Za-z]{5}){3,4}(?![0-9A-Za-z-])")


def mask_keys(text: str) -> str:
    """``text`` with every activation key and license key in it masked (see :func:`mask`)."""
    return _KEYS.sub(lambda found: mask(found.group(0)), text)
