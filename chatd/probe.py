"""``chatd health``: ask a running server how it is, monitoring-plugin style.

One line on stdout and an exit status a monitor understands::

    CHATD OK - status=ok connections=3 uptime=12s db=ok disk=41%              (exit 0)
    CHATD DEGRADED - status=degraded connections=3 uptime=12s db=ok disk=93%  (exit 1)
    CHATD DOWN - connection refused                                           (exit 2)

A 503 from ``/healthz`` (the store is unusable) counts as down.

With ``--canary`` it also sends a message between two canary accounts and times it
(:mod:`chatd.canary`).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final
from urllib.parse import SplitResult, urlsplit

from chatd.canary import CANARY_USERS, DEFAULT_CANARY_FILE, CanaryFailed, run_canary
from libchat.protocol import Health, ProtocolViolation, decode_response_body

__all__ = ["CANARY_USERS", "check_health"]

EXIT_OK: Final = 0
EXIT_DEGRADED: Final = 1
EXIT_DOWN: Final = 2


class ProbeFailed(Exception):
    """The server cannot be reached or gives no health answer: a DOWN line."""


def check_health(args: argparse.Namespace) -> int:
    """Run ``chatd health``: print the summary line, return 0 ok, 1 degraded, 2 down."""
    base = args.url.rstrip("/")
    timeout: float = args.timeout
    try:
        http_status, health = _get_health(base, timeout)
    except ProbeFailed as exc:
        return _report("DOWN", str(exc), EXIT_DOWN)
    summary = (
        f"status={health.status} connections={health.connections}"
        f" uptime={health.uptime_s:.0f}s db={health.db} disk={health.disk_used_pct:.0f}%"
    )
    if http_status != 200:
        return _report("DOWN", f"HTTP {http_status} {summary}", EXIT_DOWN)
    if args.canary:
        path = args.canary_file if args.canary_file is not None else DEFAULT_CANARY_FILE
        try:
            rtt = asyncio.run(run_canary(base, path, timeout, _db_url(args)))
        except CanaryFailed as exc:
            return _report("DOWN", f"canary failed: {exc}; {summary}", EXIT_DOWN)
        summary += f" canary_rtt={rtt * 1000:.1f}ms"
    if health.status == "ok":
        return _report("OK", summary, EXIT_OK)
    return _report("DEGRADED", summary, EXIT_DEGRADED)


def _db_url(args: argparse.Namespace) -> str | None:
    """The database the canary may look its accounts up in: only one named by
    ``--db`` or ``--data-dir`` (a monitor elsewhere has none)."""
    db: str | None = getattr(args, "db", None)
    data_dir: Path | None = getattr(args, "data_dir", None)
    if db is not None:
        return db
    return None if data_dir is None else str(data_dir / "chatd.db")


def _report(state: str, text: str, status: int) -> int:
    print(f"CHATD {state} - {text}", flush=True)
    return status


def _ssl_context(url: SplitResult) -> ssl.SSLContext | None:
    return ssl.create_default_context() if url.scheme == "https" else None


def _get_health(base: str, timeout: float) -> tuple[int, Health]:
    url = urlsplit(base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ProbeFailed(f"bad --url {base!r}: use http://host:port or https://host:port")
    request = urllib.request.Request(base + "/healthz", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_ssl_context(url)) as reply:
            status, data = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise ProbeFailed(_describe(exc.reason)) from None
    except (OSError, TimeoutError) as exc:
        raise ProbeFailed(_describe(exc)) from None
    try:
        return status, decode_response_body(data, Health)
    except ProtocolViolation:
        raise ProbeFailed(f"HTTP {status} without a health answer from {base}/healthz") from None


def _describe(reason: object) -> str:
    """``connection refused``, ``timed out``...: the cause, lower case, no errno."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ssl.SSLError):
        return f"TLS handshake failed: {reason.reason or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)
