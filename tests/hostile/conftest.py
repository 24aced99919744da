"""Hostile clients against real chatd processes: the fixtures of tests/chatd.

Each module says ``BACKENDS = ("sqlite", "postgres")`` to run on both stores. A client
plays a remote address by binding another loopback address (``source_ip="127.0.0.2"``):
the default trusted addresses are 127.0.0.1 and ::1 only.
"""

from __future__ import annotations

from tests.chatd.conftest import (  # noqa: F401  (fixtures and the backend hook)
    backend,
    make_server,
    pytest_generate_tests,
    server,
)

REMOTE_IP = "127.0.0.2"  # an untrusted client on this machine
OTHER_REMOTE_IP = "127.0.0.3"  # a second one
