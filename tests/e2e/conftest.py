"""The end-to-end suite leaves no process behind."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.stack import STARTED, process_exists


@pytest.fixture(scope="session", autouse=True)
def no_process_survives_the_suite() -> Iterator[None]:
    yield
    survivors = sorted(pid for pid in STARTED if process_exists(pid))
    assert not survivors, f"processes started by the e2e tests are still running: {survivors}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the end-to-end runs reported (fuzzing: tests/e2e/figures.py; soak and crash runs:
    tests/e2e/stack.py's FIGURES)."""
    from tests.e2e.figures import REPORTS
    from tests.e2e.stack import FIGURES

    if REPORTS or FIGURES:
        terminalreporter.section("end-to-end figures: fuzzing, soak and crash runs")
        for line in [*REPORTS, *FIGURES]:
            terminalreporter.write_line(line)
