"""Faults against real chatd processes: the fixtures of tests/chatd."""

from __future__ import annotations

from tests.chatd.conftest import (  # noqa: F401  (fixtures and the backend hook)
    backend,
    make_server,
    pytest_generate_tests,
    server,
)
