"""Structured JSON logs (Powertools Logger) and masking of secrets in them."""

from __future__ import annotations

import sys

from aws_lambda_powertools import Logger


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is now (Lambda, ``chalice local``, a test's capture)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


logger = Logger(service="keyturn", stream=_CurrentStdout(), utc=True)  # type: ignore[arg-type]


def mask(secret: str | None) -> str:
    """Enough of a key or session id to correlate log lines, never enough to use it."""
    if not secret:
        return ""
    return f"{secret[:4]}…({len(secret)})"
