"""Shared fixtures for the whole suite."""

# --- protocol schema checks (owned by tests/schemacheck.py; keep this block intact) -------
# Every test runs with libchat.protocol's encoders and client-side decoders validating
# against protocol/schemas/. See tests/schemacheck.py for the escape hatches.
from tests.schemacheck import (  # noqa: F401  (pytest finds fixtures and hooks by name)
    pytest_configure,
    pytest_runtest_makereport,
    schema_check,
)

# --- end of protocol schema checks --------------------------------------------------------
