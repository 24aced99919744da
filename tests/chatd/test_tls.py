"""TLS: with ``--tls-cert``/``--tls-key`` chatd serves HTTPS and WSS. The certificate is
made by the test with the ``openssl`` command (the ``cryptography`` package is not a
dependency)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libchat.events import Upgraded
from tests.chatd.clients import (
    LibchatPeer,
    exchange,
    http,
    login,
    register,
    unique_name,
    ws_connect,
)
from tests.chatd.conftest import run_async
from tests.support.tls import make_certificate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")



@run_async
async def test_https_and_wss_with_a_generated_certificate(
    make_server: Any, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    server = make_server("--tls-cert", str(cert), "--tls-key", str(key))
    assert server.scheme == "https" and server.ws_url.startswith("wss://")
    context = ssl.create_default_context(cafile=str(cert))
    alice = register(server, unique_name("tls"), ssl_context=context)
    bob = register(server, unique_name("tls"), ssl_context=context)
    alice_token = login(server, alice, ssl_context=context)
    bob_token = login(server, bob, ssl_context=context)
    assert http(server, "GET", "/healthz", ssl_context=context).status == 200
    a = await ws_connect(server, alice_token, ssl_context=context)
    assert a.frames[0]["type"] == "welcome" and a.frames[0]["username"] == alice
    b = await LibchatPeer(server, context).open()
    assert isinstance(await b.upgrade(), Upgraded)
    await b.send({"type": "hello", "protocol": "1.0", "token": bob_token})
    await b.recv("welcome")
    await exchange(a, b, bob)
    await exchange(b, a, alice)
    await a.close()
    await b.close()


def test_plain_http_and_untrusted_clients_are_refused(make_server: Any, tmp_path: Path) -> None:
    """A plain-HTTP client on the TLS port gets a 400 that says what the port speaks
    (it used to get an empty reply), counted as a connection.not_tls refusal."""
    cert, key = make_certificate(tmp_path)
    server = make_server("--tls-cert", str(cert), "--tls-key", str(key))
    with pytest.raises(ssl.SSLCertVerificationError):
        http(server, "GET", "/healthz", ssl_context=ssl.create_default_context())
    server.scheme = "http"  # speak plain HTTP to the TLS port
    try:
        for _ in range(2):
            answer = http(server, "GET", "/healthz", timeout=5)
            assert answer.status == 400
            assert answer.error_code == "bad_request"
            assert answer.json["error"]["message"] == (
                "This port speaks HTTPS/WSS: use https:// or wss://")
            assert answer.headers["connection"] == "close"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"\x80garbage that is no TLS record and no HTTP\r\n\r\n")
            assert _read_all(raw).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    finally:
        server.scheme = "https"
    context = ssl.create_default_context(cafile=str(cert))
    assert http(server, "GET", "/healthz", ssl_context=context).status == 200
    metrics = http(server, "GET", "/metrics", ssl_context=context).raw.decode()
    assert 'chatd_refusals_total{reason="connection.not_tls"} 3.0' in metrics


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_health_trusts_a_self_signed_certificate_with_cacert(
    make_server: Any, tmp_path: Path
) -> None:
    """``chatd health --cacert`` checks a server with a self-signed certificate without
    SSL_CERT_FILE, by its https:// URL or the clients' wss:// one, canary included."""
    cert, key = make_certificate(tmp_path)
    server = make_server("--tls-cert", str(cert), "--tls-key", str(key))
    env = {name: value for name, value in os.environ.items()
           if name not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}

    def health(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatd", "health", *map(str, args)],
            capture_output=True, text=True, timeout=60, env=env,
        )

    https = f"https://127.0.0.1:{server.port}"
    untrusted = health("--url", https)
    assert untrusted.returncode == 2
    assert untrusted.stdout.startswith(
        "CHATD DOWN - TLS handshake failed: CERTIFICATE_VERIFY_FAILED")
    for url in (https, https + "/", f"wss://127.0.0.1:{server.port}/v1/ws"):
        done = health("--url", url, "--cacert", cert)
        assert done.returncode == 0, done
        assert done.stdout.startswith("CHATD OK - status=ok "), done
    canary = tmp_path / "canary.json"
    done = health("--url", https, "--cacert", cert, "--canary", "--canary-file", canary)
    assert done.returncode == 0, done
    assert re.fullmatch(r"CHATD OK - status=ok .* canary_rtt=\d+\.\dms\n", done.stdout)

    (tmp_path / "other").mkdir()
    other, _ = make_certificate(tmp_path / "other")  # a certificate, but not the server's
    wrong = health("--url", https, "--cacert", other)
    assert wrong.returncode == 2 and wrong.stdout.startswith("CHATD DOWN - TLS handshake failed")
    missing = health("--url", https, "--cacert", tmp_path / "missing.pem")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == (
        f"chatd: cannot load --cacert {tmp_path / 'missing.pem'}: No such file or directory\n")
