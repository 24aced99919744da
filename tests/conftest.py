"""Shared fixtures for the whole suite."""

import pytest

# --- protocol schema checks (owned by tests/schemacheck.py; keep this block intact) -------
# Every test runs with libchat.protocol's encoders and client-side decoders validating
# against protocol/schemas/. See tests/schemacheck.py for the escape hatches.
from tests.schemacheck import (  # noqa: F401  (pytest finds fixtures and hooks by name)
    pytest_configure,
    pytest_runtest_makereport,
    schema_check,
)

# --- end of protocol schema checks --------------------------------------------------------

# --- fault tallies (tests/faults/tally.py): one line per fault run, at the end -------------


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.faults.tally import LINES

    if LINES:
        terminalreporter.section("fault tallies")
        for line in LINES:
            terminalreporter.write_line(line)
