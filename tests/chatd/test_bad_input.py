"""Bad input never hurts anyone else: after each piece of garbage, a healthy pair of
WebSocket users that stays open across the whole test still exchanges a message.

The hello-timeout connection is opened first and checked last, so its 10 s of real
time overlap with the other cases (the only 10 s wait in the suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Request

from chatd.auth import KEY_FILE
from tests.chatd.clients import (
    ISSUED_TOKENS,
    PASSWORD,
    TIMEOUT,
    Streamer,
    WsPeer,
    ahttp,
    anew_user,
    exchange,
    http,
    new_user,
    ws_connect,
)
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.support.poll import apoll

MAX = 64 * 1024


async def raw_exchange(server: ChatdProcess, data: bytes) -> bytes:
    """Write raw bytes on a fresh TCP connection; read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), TIMEOUT)  # -1: until EOF
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_json_error(raw: bytes, status: int, code: str) -> None:
    got, headers, body = split_response(raw)
    assert got == status, raw[:300]
    assert headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["error"]["code"] == code


async def assert_refused_hello(server: ChatdProcess, token: str) -> None:
    """Both doors refuse the token: HTTP 401, and hello -> unauthorized + 4001."""
    answer = await ahttp(server, "GET", "/v1/conversations", token=token)
    assert answer.status == 401 and answer.error_code == "unauthorized", answer
    peer = await ws_connect(server, hello=False)
    await peer.send({"type": "hello", "protocol": "1.0", "token": token})
    assert (await peer.recv("error"))["code"] == "unauthorized"
    assert await peer.wait_closed() == 4001
    with pytest.raises(InvalidStatus) as refused:
        await ws_connect(server, header_token=token, hello=False)
    assert refused.value.response.status_code == 401


def token_key(server: ChatdProcess) -> bytes:
    return (server.data_dir / KEY_FILE).read_bytes()


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


# --- the cases -----------------------------------------------------------------------


async def garbage_bytes(server: ChatdProcess) -> None:
    raw = await raw_exchange(server, secrets.token_bytes(512) + b"\r\n\r\n")
    assert_json_error(raw, 400, "bad_request")


async def malformed_http(server: ChatdProcess) -> None:
    for request in (
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /he lthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    ):
        raw = await raw_exchange(server, request)
        assert_json_error(raw, 400, "bad_request")


async def oversize_body(server: ChatdProcess) -> None:
    body = b'{"username": "' + b"a" * (65 * 1024) + b'", "password": "x"}'
    answer = await ahttp(server, "POST", "/v1/register", body)
    assert answer.status == 413 and answer.error_code == "too_large", answer
    # Announced by Content-Length but never sent: refused without reading it.
    head = (b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 70000\r\n\r\n")
    assert_json_error(await raw_exchange(server, head), 413, "too_large")
    # Chunked: refused once the size is passed.
    chunk = b"%x\r\n%s\r\n" % (MAX + 10, b"b" * (MAX + 10))
    raw = await raw_exchange(
        server, b"POST /v1/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk + b"0\r\n\r\n")
    assert_json_error(raw, 413, "too_large")


async def invalid_json_frame(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    peer = await ws_connect(server, token)
    for text in ("{not json", "", "null", "[1, 2]", '"hello"', "\ud800".encode(
            "utf-8", "surrogatepass").decode("latin-1")):
        await peer.send_raw(text)
        assert (await peer.recv("error"))["code"] == "invalid_frame", text
    await peer.send_raw(b"\x00\x01binary")
    assert (await peer.recv("error"))["code"] == "invalid_frame"
    assert peer.close_code is None
    await peer.close()


async def unknown_frame_type(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    peer = await ws_connect(server, token)
    await peer.send({"type": "launch_missiles", "id": "u-1"})
    error = await peer.recv("error")
    assert error["code"] == "invalid_frame" and error["ref"] == "u-1"
    await peer.send({"type": 17})
    assert (await peer.recv("error"))["code"] == "invalid_frame"
    await peer.send({"type": ["send"], "id": "u-2"})  # not a key of any table of types
    error = await peer.recv("error")
    assert error["code"] == "invalid_frame" and error["ref"] == "u-2"
    await peer.send({"type": {"send": 1}})
    assert (await peer.recv("error"))["code"] == "invalid_frame"
    assert peer.close_code is None
    await peer.close()


async def oversize_frame(server: ChatdProcess) -> None:
    bob, token = await anew_user(server)
    peer = await ws_connect(server, token)
    await peer.send({"type": "send", "id": "big", "to": bob, "body": "x" * (65 * 1024)})
    assert await peer.wait_closed() == 1009
    # Before the hello too.
    peer = await ws_connect(server, hello=False)
    await peer.send_raw("y" * (65 * 1024))
    assert await peer.wait_closed() == 1009


async def expired_token(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    claims = claims_of(token)
    now = int(time.time())
    claims.update(iat=now - 100, exp=now - 10)
    expired = jwt.encode(claims, token_key(server), algorithm="HS256")
    await assert_refused_hello(server, expired)


async def revoked_token(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    assert (await ahttp(server, "POST", "/v1/logout", token=token)).status == 204
    await assert_refused_hello(server, token)


async def token_of_another_key(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    forged = jwt.encode(claims_of(token), secrets.token_bytes(32), algorithm="HS256")
    await assert_refused_hello(server, forged)


async def token_alg_none(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    unsigned = jwt.encode(claims_of(token), None, algorithm="none")
    await assert_refused_hello(server, unsigned)
    # The same with the real signature glued on and a header claiming none.
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    glued = ".".join([header, *token.split(".")[1:]])
    await assert_refused_hello(server, glued)


async def token_of_another_algorithm(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    with warnings.catch_warnings():  # PyJWT frowns at a 32-byte key for HS512: so do we
        warnings.simplefilter("ignore")
        other = jwt.encode(claims_of(token), token_key(server), algorithm="HS512")
    await assert_refused_hello(server, other)


def ws_frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True,
             rsv: int = 0) -> bytes:
    """One client frame built by hand, so it can break RFC 6455 on purpose."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    else:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    if not masked:
        return head + payload
    key = secrets.token_bytes(4)
    return head + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


async def close_code_after(server: ChatdProcess, data: bytes) -> int | None:
    """Upgrade, send ``data`` raw, and return the close code the server answers with."""
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host=server.host, target="/v1/ws"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request + data)
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            if not chunk:
                return None
            client.receive_data(chunk)
            for event in client.events():
                if isinstance(event, CloseConnection):
                    return int(event.code)
    finally:
        writer.close()


async def websocket_protocol_violations(server: ChatdProcess) -> None:
    for name, data, code in [
        ("unmasked", ws_frame(1, b"{}", masked=False), 1002),
        ("invalid close code", ws_frame(8, struct.pack("!H", 999)), 1002),
        ("ping over 125 bytes", ws_frame(9, b"x" * 200), 1002),
        ("fragmented ping", ws_frame(9, b"x", fin=False), 1002),
        ("reserved bit", ws_frame(1, b"{}", rsv=0x40), 1002),
        ("unknown opcode", ws_frame(3, b"x"), 1002),
        ("continuation first", ws_frame(0, b"x"), 1002),
        ("text not UTF-8", ws_frame(1, b"\xff\xfe"), 1007),
    ]:
        assert await close_code_after(server, data) == code, name


CASES: list[tuple[str, Callable[[ChatdProcess], Awaitable[None]]]] = [
    ("garbage bytes", garbage_bytes),
    ("malformed HTTP", malformed_http),
    ("65 KiB body", oversize_body),
    ("invalid JSON frame", invalid_json_frame),
    ("unknown frame type", unknown_frame_type),
    ("65 KiB frame", oversize_frame),
    ("expired token", expired_token),
    ("revoked token", revoked_token),
    ("token signed with another key", token_of_another_key),
    ("token with alg none", token_alg_none),
    ("token with another algorithm", token_of_another_algorithm),
    ("WebSocket protocol violations", websocket_protocol_violations),
]


@run_async
async def test_bad_input_leaves_other_users_served(server: ChatdProcess) -> None:
    alice, alice_token = await anew_user(server, "healthy")
    bob, bob_token = await anew_user(server, "healthy")
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    silent = await ws_connect(server, hello=False)  # never says hello
    opened = time.monotonic()
    await exchange(a, b, bob)
    for name, case in CASES:
        try:
            await case(server)
        except Exception as exc:
            raise AssertionError(f"case {name!r}: {exc}") from exc
        await exchange(a, b, bob, "after")
        await exchange(b, a, alice, "after")
    code = await silent.wait_closed(timeout=25)
    waited = time.monotonic() - opened
    assert code == 4003
    assert waited >= 9, waited
    await exchange(a, b, bob, "end")
    health = await ahttp(server, "GET", "/healthz")
    assert health.status == 200
    await a.close()
    await b.close()


@pytest.mark.parametrize(("name", "case"), CASES, ids=[name for name, _ in CASES])
@run_async
async def test_each_bad_input_alone(server: ChatdProcess, name: str, case: Any) -> None:
    """Each case on its own (so a failure names it), with one exchange afterwards."""
    alice, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    a: WsPeer = await ws_connect(server, alice_token)
    b: WsPeer = await ws_connect(server, bob_token)
    await case(server)
    await exchange(a, b, bob)
    await exchange(b, a, alice)
    await a.close()
    await b.close()


def test_server_still_answers_plain_http_after_everything(server: ChatdProcess) -> None:
    _, token = new_user(server)
    assert http(server, "GET", "/v1/conversations", token=token).status == 200


def test_log_after_bad_input_is_json_lines_without_tokens(server: ChatdProcess) -> None:
    """Runs last: garbage in never becomes garbage (or a token) in the log."""
    text = "\n".join(path.read_text() for path in sorted(server.log_dir.glob("chatd.log*")))
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(orjson.loads(line), dict), line
    assert ISSUED_TOKENS
    for token in ISSUED_TOKENS:
        assert token.split(".")[2] not in text
    assert PASSWORD not in text


@run_async
async def test_a_reader_that_never_reads_is_dropped_and_loses_nothing(make_server: Any) -> None:
    """A client that stops reading while the server has megabytes for it: after its
    socket stays full for 10 s the server drops it (never the server's memory), and
    the messages come whole on its next connection."""
    server = make_server("--send-rate", "5000", "--send-burst", "5000")
    _, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    a = await ws_connect(server, alice_token)
    await Streamer(a, bob, "slow", window=20, text="😀" * 5000).run(count=600)  # 12 MB
    ws = await websockets.connect(server.ws_url, compression=None, max_queue=1,
                                  max_size=None)
    await ws.send(orjson.dumps({"type": "hello", "protocol": "1.0", "token": bob_token}
                               ).decode())
    assert orjson.loads(await ws.recv())["type"] == "welcome"
    started = time.monotonic()

    async def silent_reader_dropped() -> bool:
        return (await ahttp(server, "GET", "/healthz")).json["connections"] <= 1

    # Read nothing more. The server counts two WebSockets until it drops this one.
    await apoll(silent_reader_dropped, "the silent reader to be dropped", timeout=40,
                interval=0.2)
    assert time.monotonic() - started >= 9
    ws.transport.abort()
    b = await ws_connect(server, bob_token)
    seqs = [(await b.recv("message", timeout=30))["seq"] for _ in range(600)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 600
    await a.close()
    await b.close()
