"""TLS: with ``--tls-cert``/``--tls-key`` chatd serves HTTPS and WSS. The certificate is
made by the test with the ``openssl`` command (the ``cryptography`` package is not a
dependency)."""

from __future__ import annotations

import shutil
import ssl
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
    cert, key = make_certificate(tmp_path)
    server = make_server("--tls-cert", str(cert), "--tls-key", str(key))
    with pytest.raises(ssl.SSLCertVerificationError):
        http(server, "GET", "/healthz", ssl_context=ssl.create_default_context())
    server.scheme = "http"  # speak plain HTTP to the TLS port
    try:
        with pytest.raises(Exception):  # noqa: B017  (reset, bad status line or EOF)
            http(server, "GET", "/healthz", timeout=5)
    finally:
        server.scheme = "https"
    context = ssl.create_default_context(cafile=str(cert))
    assert http(server, "GET", "/healthz", ssl_context=context).status == 200
