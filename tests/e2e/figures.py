"""Figures the end-to-end runs report: printed at the end of the test session (``make test``).

A run adds its lines with :func:`report`; ``tests/e2e/conftest.py`` prints them in pytest's
terminal summary, so they are visible even when every test passes and output is captured.
"""

from __future__ import annotations

from collections import Counter

REPORTS: list[str] = []


def report(line: str) -> None:
    REPORTS.append(line)


def by_status(statuses: Counter[int]) -> str:
    """``200: 5, 404: 12`` in status order."""
    return ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
