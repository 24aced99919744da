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
import sys
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
WS_PATH: Final = "/v1/ws"
_SCHEMES: Final = {"wss": "https", "ws": "http"}


class ProbeFailed(Exception):
    """The server cannot be reached or gives no health answer: a DOWN line."""


def check_health(args: argparse.Namespace) -> int:
    """Run ``chatd health``: print the summary line, return 0 ok, 1 degraded, 2 down
    (and 2, with a ``chatd:`` line on stderr, for a ``--cacert`` that cannot be used)."""
    base = _base_url(args.url)
    timeout: float = args.timeout
    try:
        tls = _ssl_context(urlsplit(base), getattr(args, "cacert", None))
    except (OSError, ssl.SSLError) as exc:
        print(f"chatd: cannot load --cacert {args.cacert}:"
              f" {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_DOWN
    try:
        http_status, health = _get_health(base, timeout, tls)
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
            rtt = asyncio.run(run_canary(base, path, timeout, _db_url(args), tls))
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


def _base_url(url: str) -> str:
    """``--url`` as the server's base URL: the WebSocket forms (``wss://host:port`` or
    ``wss://host:port/v1/ws``, as a client is configured) name the same server as
    ``https://host:port``, and ``ws://`` as ``http://``."""
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    path = parts.path.rstrip("/")
    if path.endswith(WS_PATH):
        path = path[: -len(WS_PATH)]
    return parts._replace(scheme=scheme, path=path, query="", fragment="").geturl()


def _ssl_context(url: SplitResult, cacert: Path | None) -> ssl.SSLContext | None:
    """For ``https://``: the system's trust store, or only ``cacert`` (a PEM file of the
    server's own certificate or of the CA that signed it) when given. None for http.

    Raises:
        OSError, ssl.SSLError: ``cacert`` cannot be read or holds no certificate.
    """
    if url.scheme != "https":
        return None
    if cacert is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(cacert))


def _get_health(base: str, timeout: float, tls: ssl.SSLContext | None) -> tuple[int, Health]:
    url = urlsplit(base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ProbeFailed(f"bad --url {base!r}: use http://host:port or https://host:port")
    request = urllib.request.Request(base + "/healthz", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as reply:
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
