"""The HTTP rows of the contract against a real chatd: a plain ``http.client`` client for
every rule, and libchat's client engine over every endpoint."""

from __future__ import annotations

import random
import re
import string
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest

from libchat import limits, protocol
from libchat.events import HttpResponse
from tests.chatd.clients import (
    PASSWORD,
    LibchatPeer,
    Response,
    ahttp,
    anew_user,
    exchange,
    field_is,
    http,
    login,
    new_user,
    register,
    unique_name,
    ws_connect,
)
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess

# The contract holds on both stores (see conftest.pytest_generate_tests).
BACKENDS = ("sqlite", "postgres")


def creds(name: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"username": name, "password": password}


def assert_error(answer: Response, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- registration ---------------------------------------------------------------------


def test_register_answers_201_with_user_id_and_username(server: ChatdProcess) -> None:
    name = unique_name("reg")
    answer = http(server, "POST", "/v1/register", creds(name))
    assert answer.status == 201
    body = answer.json
    assert body["username"] == name
    assert isinstance(body["user_id"], int)


@pytest.mark.parametrize("name", [
    "ab",  # too short
    "a" * 33,  # too long
    "has space",
    "émile",
    "a/b",
    "semi;colon",
    "plus+sign",
    "",
])
def test_register_refuses_bad_usernames(server: ChatdProcess, name: str) -> None:
    answer = http(server, "POST", "/v1/register", creds(name))
    assert_error(answer, 400, "invalid_username")


def test_register_accepts_every_allowed_character_and_both_length_bounds(
    server: ChatdProcess,
) -> None:
    stem = unique_name("k")
    shortest = "".join(random.choices(string.ascii_lowercase, k=3))
    longest = f"{stem}_.-".ljust(32, "9")
    for name in (shortest, longest, f"0-9_a.z{stem}"):
        answer = http(server, "POST", "/v1/register", creds(name))
        assert answer.status == 201, (name, answer)
        assert answer.json["username"] == name


def test_usernames_are_case_insensitive_and_stored_lower_case(server: ChatdProcess) -> None:
    name = unique_name("case")
    answer = http(server, "POST", "/v1/register", creds(name.upper()))
    assert answer.status == 201, answer
    assert answer.json["username"] == name
    assert_error(http(server, "POST", "/v1/register", creds(name)), 409, "username_taken")
    assert_error(http(server, "POST", "/v1/register", creds(name.title())), 409,
                 "username_taken")
    grant = http(server, "POST", "/v1/login", creds(name.upper()))
    assert grant.status == 200 and grant.json["username"] == name


def test_taken_username_gets_409(server: ChatdProcess) -> None:
    name = register(server)
    assert_error(http(server, "POST", "/v1/register", creds(name, "another password")), 409,
                 "username_taken")


def test_concurrent_registrations_of_one_name_give_one_account(server: ChatdProcess) -> None:
    name = unique_name("race")
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(
            lambda password: http(server, "POST", "/v1/register", creds(name, password)),
            [f"password number {i}" for i in range(6)],
        ))
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [201, 409, 409, 409, 409, 409], answers
    winner = next(i for i, answer in enumerate(answers) if answer.status == 201)
    assert login(server, name, f"password number {winner}")


@pytest.mark.parametrize(("length", "ok"), [(7, False), (8, True), (1024, True), (1025, False)])
def test_password_length_is_8_to_1024_characters(
    server: ChatdProcess, length: int, ok: bool
) -> None:
    name = unique_name("pw")
    password = "é" * length  # characters, not bytes
    answer = http(server, "POST", "/v1/register", creds(name, password))
    if ok:
        assert answer.status == 201, answer
        assert login(server, name, password)
    else:
        assert_error(answer, 400, "weak_password")


@pytest.mark.parametrize("body", [
    {"username": 12345, "password": PASSWORD},
    {"username": "someone", "password": None},
    {"username": "someone", "password": ["a list"]},
    {"username": "someone"},
    {"password": PASSWORD},
    ["username", "password"],
    "a string",
    b"{not json",
    b"",
])
def test_register_and_login_refuse_a_malformed_body(server: ChatdProcess, body: Any) -> None:
    for path in ("/v1/register", "/v1/login"):
        assert_error(http(server, "POST", path, body), 400, "invalid_body")


# --- login ----------------------------------------------------------------------------


def test_login_answers_a_bearer_token_grant(server: ChatdProcess) -> None:
    name = register(server)
    answer = http(server, "POST", "/v1/login", creds(name))
    assert answer.status == 200
    body = answer.json
    assert body["token_type"] == "Bearer"
    assert isinstance(body["token"], str) and body["token"]
    assert body["expires_in"] == 86400
    assert body["username"] == name and isinstance(body["user_id"], int)


def test_unknown_user_and_wrong_password_get_the_same_error(make_server: Any) -> None:
    server = make_server()  # its own IP limiter: failures here must not starve others
    name = register(server)
    wrong = http(server, "POST", "/v1/login", creds(name, "not the password"))
    unknown = http(server, "POST", "/v1/login", creds(unique_name("nobody")))
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json == unknown.json


def test_sixth_login_from_one_ip_gets_429_with_retry_after(make_server: Any) -> None:
    server = make_server()
    name = register(server)
    for _ in range(5):
        answer = http(server, "POST", "/v1/login", creds(unique_name("ghost")))
        assert_error(answer, 401, "invalid_credentials")
    for password in ("still wrong", PASSWORD):  # the right password is refused too
        answer = http(server, "POST", "/v1/login", creds(name, password))
        assert_error(answer, 429, "rate_limited")
        retry_after = answer.headers["retry-after"]
        assert re.fullmatch(r"[0-9]+", retry_after), retry_after
        assert 1 <= int(retry_after) <= 15 * 60
    # Registration is not a login attempt: still served.
    register(server)


# --- tokens: logout, refresh, bad tokens ---------------------------------------------


def test_missing_or_bad_token_gets_401_unauthorized(server: ChatdProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer not.a.jwt"}):
        answer = http(server, "GET", "/v1/conversations", headers=headers)
        assert_error(answer, 401, "unauthorized")
    for path in ("/v1/logout", "/v1/token/refresh"):
        assert_error(http(server, "POST", path, token="garbage.garbage.garbage"), 401,
                     "unauthorized")


@run_async
async def test_logout_revokes_that_token_on_http_and_websocket(server: ChatdProcess) -> None:
    name, token = await anew_user(server)
    other_token = login(server, name)
    answer = await ahttp(server, "POST", "/v1/logout", token=token)
    assert answer.status == 204 and answer.raw == b""
    assert_error(await ahttp(server, "GET", "/v1/conversations", token=token), 401,
                 "unauthorized")
    assert_error(await ahttp(server, "POST", "/v1/token/refresh", token=token), 401,
                 "unauthorized")
    assert_error(await ahttp(server, "POST", "/v1/logout", token=token), 401, "unauthorized")
    peer = await ws_connect(server, token, hello=False)
    await peer.send({"type": "hello", "protocol": "1.0", "token": token})
    error = await peer.recv("error")
    assert error["code"] == "unauthorized"
    assert await peer.wait_closed() == 4001
    # The user's other token is untouched.
    assert (await ahttp(server, "GET", "/v1/conversations", token=other_token)).status == 200


def test_refresh_gives_a_new_token_and_the_old_one_stays_valid(server: ChatdProcess) -> None:
    name, token = new_user(server)
    answer = http(server, "POST", "/v1/token/refresh", token=token)
    assert answer.status == 200, answer
    body = answer.json
    assert body["token_type"] == "Bearer" and body["username"] == name
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["token"] != token
    for each in (token, body["token"]):
        assert http(server, "GET", "/v1/conversations", token=each).status == 200


# --- user search --------------------------------------------------------------------


def test_user_search_prefix_case_insensitive_sorted_excludes_caller(
    server: ChatdProcess,
) -> None:
    stem = unique_name("srch")
    me, token = new_user(server)
    names = [register(server, f"{stem}{suffix}") for suffix in ("c", "a", "b")]
    register(server, unique_name("other"))
    answer = http(server, "GET", f"/v1/users?prefix={stem.upper()}", token=token)
    assert answer.status == 200, answer
    assert answer.json == {"users": [{"username": n} for n in sorted(names)]}
    # The caller is left out even when the prefix matches.
    mine = http(server, "GET", f"/v1/users?prefix={me}", token=token)
    assert mine.json == {"users": []}
    theirs = http(server, "GET", f"/v1/users?prefix={stem}", token=login(server, names[0]))
    assert [u["username"] for u in theirs.json["users"]] == sorted(names[1:])


def test_user_search_returns_at_most_20(server: ChatdProcess) -> None:
    stem = unique_name("many")
    names = sorted(register(server, f"{stem}x{i:02d}") for i in range(23))
    _, token = new_user(server)
    answer = http(server, "GET", f"/v1/users?prefix={stem}", token=token)
    assert [u["username"] for u in answer.json["users"]] == names[:20]


def test_user_search_needs_a_prefix(server: ChatdProcess) -> None:
    _, token = new_user(server)
    for target in ("/v1/users?prefix=", "/v1/users"):
        assert_error(http(server, "GET", target, token=token), 400, "invalid_query")
    assert_error(http(server, "GET", "/v1/users?prefix=a"), 401, "unauthorized")


# --- conversations and history ------------------------------------------------------


async def send_messages(peer: Any, to: str, count: int, stem: str) -> list[dict[str, Any]]:
    """Send ``count`` messages and return their acks, in order."""
    acks = []
    for index in range(count):
        client_id = f"{stem}-{index}"
        await peer.send({"type": "send", "id": client_id, "to": to, "body": f"m{index}"})
        acks.append(await peer.recv("ack", where=field_is("id", client_id)))
    return acks


@run_async
async def test_history_pages_backwards_and_forwards_with_has_more(server: ChatdProcess) -> None:
    alice, alice_token = await anew_user(server, "al")
    bob, bob_token = await anew_user(server, "bo")
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    acks = await send_messages(a, bob, 6, "h")
    acks += await send_messages(b, alice, 5, "r")
    seqs = [ack["seq"] for ack in acks]
    assert seqs == sorted(seqs)
    path = f"/v1/conversations/{bob}/messages"
    whole = (await ahttp(server, "GET", path, token=alice_token)).json
    assert whole["has_more"] is False
    assert [m["seq"] for m in whole["messages"]] == seqs
    first = whole["messages"][0]
    assert set(first) == {"id", "seq", "from", "to", "body", "ts", "delivered_at", "read_at"}
    assert (first["id"], first["from"], first["to"], first["body"]) == ("h-0", alice, bob, "m0")
    assert first["ts"] == acks[0]["ts"]
    # Backwards from the newest, 4 at a time: each page oldest first.
    pages: list[list[int]] = []
    before: int | None = None
    while True:
        query = "?limit=4" + ("" if before is None else f"&before={before}")
        page = (await ahttp(server, "GET", path + query, token=alice_token)).json
        got = [m["seq"] for m in page["messages"]]
        assert got == sorted(got)
        pages.append(got)
        if not page["has_more"]:
            break
        before = got[0]
    assert pages == [seqs[7:], seqs[3:7], seqs[:3]]
    # Forwards: a page that starts from any point, and bob sees the same conversation.
    middle = (await ahttp(server, "GET", f"{path}?before={seqs[5]}&limit=200",
                          token=alice_token)).json
    assert [m["seq"] for m in middle["messages"]] == seqs[:5] and middle["has_more"] is False
    exact = (await ahttp(server, "GET", f"{path}?before={seqs[3]}&limit=3",
                         token=alice_token)).json
    assert [m["seq"] for m in exact["messages"]] == seqs[:3] and exact["has_more"] is False
    mirror = (await ahttp(server, "GET", f"/v1/conversations/{alice.upper()}/messages",
                          token=bob_token)).json
    assert [m["seq"] for m in mirror["messages"]] == seqs
    await a.close()
    await b.close()


@run_async
async def test_history_default_limit_is_50(server: ChatdProcess) -> None:
    alice, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    # 51 messages from both sides (each side stays within its send burst).
    acks = await send_messages(a, bob, 30, "p") + await send_messages(b, alice, 21, "q")
    page = (await ahttp(server, "GET", f"/v1/conversations/{bob}/messages",
                        token=alice_token)).json
    assert len(page["messages"]) == 50 and page["has_more"] is True
    assert [m["seq"] for m in page["messages"]] == [ack["seq"] for ack in acks[1:]]
    await a.close()
    await b.close()


@pytest.mark.parametrize("query", [
    "limit=0", "limit=201", "limit=abc", "limit=-1", "limit=1.5", "before=x", "before=-3",
    "limit=", "before=",
])
def test_history_refuses_a_bad_query(server: ChatdProcess, query: str) -> None:
    _, token = new_user(server)
    peer = register(server)
    answer = http(server, "GET", f"/v1/conversations/{peer}/messages?{query}", token=token)
    assert_error(answer, 400, "invalid_query")


def test_history_of_an_unknown_user_is_404(server: ChatdProcess) -> None:
    _, token = new_user(server)
    answer = http(server, "GET", f"/v1/conversations/{unique_name('ghost')}/messages",
                  token=token)
    assert_error(answer, 404, "unknown_user")
    answer = http(server, "GET", f"/v1/conversations/{unique_name('ghost')}/messages")
    assert_error(answer, 401, "unauthorized")


@run_async
async def test_conversations_newest_first_with_unread_counts(server: ChatdProcess) -> None:
    me, my_token = await anew_user(server, "me")
    friends = [await anew_user(server, f"f{i}") for i in range(3)]
    mine = await ws_connect(server, my_token)
    peers = [await ws_connect(server, token) for _, token in friends]
    # friend0 sends me 3, friend1 sends me 1, then I write to friend2, then friend0 again.
    await send_messages(peers[0], me, 3, "a")
    await send_messages(peers[1], me, 1, "b")
    await send_messages(mine, friends[2][0], 2, "c")
    last = (await send_messages(peers[0], me, 1, "d"))[0]
    answer = (await ahttp(server, "GET", "/v1/conversations", token=my_token)).json
    rows = answer["conversations"]
    assert [row["peer"] for row in rows] == [friends[0][0], friends[2][0], friends[1][0]]
    assert [row["unread"] for row in rows] == [4, 0, 1]
    assert rows[0]["last_message"]["seq"] == last["seq"]
    assert rows[0]["last_message"]["id"] == "d-0"
    assert rows[1]["last_message"]["from"] == me
    # Reading up to the third message of friend0 leaves one unread.
    page = (await ahttp(server, "GET", f"/v1/conversations/{friends[0][0]}/messages",
                        token=my_token)).json
    await mine.send({"type": "read", "peer": friends[0][0], "up_to": page["messages"][2]["seq"]})
    await peers[0].recv("receipt", where=lambda f: f["status"] == "read")
    rows = (await ahttp(server, "GET", "/v1/conversations", token=my_token)).json[
        "conversations"]
    assert [row["unread"] for row in rows] == [1, 0, 1]
    # The other side counts its own unread: friend2 has 2 from me.
    theirs = (await ahttp(server, "GET", "/v1/conversations", token=friends[2][1])).json
    assert [(r["peer"], r["unread"]) for r in theirs["conversations"]] == [(me, 2)]
    for peer in (mine, *peers):
        await peer.close()


# --- routing, WebSocket upgrade refusals, health, metrics ----------------------------


def test_unknown_path_is_404_not_found(server: ChatdProcess) -> None:
    for path in ("/", "/v2/login", "/v1/conversations/x/messages/extra", "/v1/users/x"):
        assert_error(http(server, "GET", path), 404, "not_found")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/login", "POST"),
    ("PUT", "/v1/register", "POST"),
    ("POST", "/v1/conversations", "GET"),
    ("DELETE", "/healthz", "GET"),
    ("POST", "/v1/ws", "GET"),
])
def test_wrong_method_is_405_with_allow(
    server: ChatdProcess, method: str, path: str, allow: str
) -> None:
    answer = http(server, method, path)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == allow


def upgrade_headers(**extra: str) -> dict[str, str]:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    headers.update(extra)
    return headers


def test_wrong_websocket_version_is_426_with_the_supported_one(server: ChatdProcess) -> None:
    answer = http(server, "GET", "/v1/ws", headers=upgrade_headers(**{
        "Sec-WebSocket-Version": "8"}))
    assert_error(answer, 426, "unsupported_version")
    assert answer.headers["sec-websocket-version"] == "13"


def test_bad_upgrade_is_400(server: ChatdProcess) -> None:
    assert_error(http(server, "GET", "/v1/ws"), 400, "bad_request")
    answer = http(server, "GET", "/v1/ws", headers=upgrade_headers(**{
        "Sec-WebSocket-Key": "short"}))
    assert_error(answer, 400, "bad_request")


def test_upgrade_with_a_foreign_origin_is_403(server: ChatdProcess) -> None:
    answer = http(server, "GET", "/v1/ws", headers=upgrade_headers(Origin="https://evil.example"))
    assert_error(answer, 403, "origin_not_allowed")


def test_upgrade_with_a_bad_authorization_header_is_401(server: ChatdProcess) -> None:
    answer = http(server, "GET", "/v1/ws", headers=upgrade_headers(
        Authorization="Bearer not.a.token"))
    assert_error(answer, 401, "unauthorized")


def test_healthz_reports_its_fields(server: ChatdProcess) -> None:
    answer = http(server, "GET", "/healthz")
    assert answer.status == 200, answer
    body = answer.json
    assert set(body) == {"status", "version", "protocol", "uptime_s", "connections", "db",
                         "disk_used_pct"}
    assert body["status"] in ("ok", "degraded")
    assert body["protocol"] == limits.PROTOCOL_VERSION  # the server's own, newest
    assert body["db"] == "ok"
    assert isinstance(body["connections"], int) and body["connections"] >= 0
    assert isinstance(body["uptime_s"], int | float) and body["uptime_s"] >= 0
    assert 0 <= body["disk_used_pct"] <= 100


@run_async
async def test_healthz_counts_open_websockets(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    before = (await ahttp(server, "GET", "/healthz")).json["connections"]
    peer = await ws_connect(server, token)
    during = (await ahttp(server, "GET", "/healthz")).json["connections"]
    assert during == before + 1
    await peer.close()


def test_metrics_is_prometheus_text(server: ChatdProcess) -> None:
    answer = http(server, "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.raw.decode()
    assert "# TYPE " in text and "# HELP " in text
    sample = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEinfNa]+( [0-9]+)?$")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert sample.match(line), line


# --- the same endpoints through libchat's client engine ------------------------------


@run_async
async def test_every_endpoint_through_libchat_client(server: ChatdProcess) -> None:
    client = await LibchatPeer(server).open()
    name, peer = unique_name("lc"), register(server)

    async def ok(method: str, *args: Any, **kwargs: Any) -> HttpResponse:
        answer = await client.call(method, *args, **kwargs)
        assert 200 <= answer.status < 300, answer
        return answer

    registered = await ok("register", protocol.Credentials(username=name, password=PASSWORD))
    assert registered.status == 201 and registered.body.username == name
    refused = await client.call("login", protocol.Credentials(username=name, password="x" * 9))
    assert refused.status == 401 and refused.body.error.code == "invalid_credentials"
    grant = (await ok("login", protocol.Credentials(username=name, password=PASSWORD))).body
    assert isinstance(grant, protocol.TokenGrant) and grant.username == name
    fresh = (await ok("refresh", grant.token)).body
    assert isinstance(fresh, protocol.TokenGrant) and fresh.token != grant.token
    found = (await ok("search_users", grant.token, peer[:-1])).body
    assert protocol.UserEntry(username=peer) in found.users
    assert (await ok("conversations", grant.token)).body.conversations == ()
    page = (await ok("history", grant.token, peer, limit=10)).body
    assert page.messages == () and page.has_more is False
    missing = await client.call("history", grant.token, unique_name("ghost"))
    assert missing.status == 404 and missing.body.error.code == "unknown_user"
    health = (await ok("health")).body
    assert isinstance(health, protocol.Health) and health.db == "ok"
    assert b"# TYPE" in (await ok("metrics")).body
    logout = await ok("logout", grant.token)
    assert logout.status == 204 and logout.body is None
    assert (await client.call("conversations", grant.token)).status == 401
    assert (await ok("conversations", fresh.token)).status == 200
    await client.close()


@run_async
async def test_libchat_client_upgrade_and_hello_on_a_used_http_connection(
    server: ChatdProcess,
) -> None:
    alice, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    client = await LibchatPeer(server).open()
    assert (await client.call("conversations", alice_token)).status == 200
    answer = await client.upgrade()
    assert not isinstance(answer, HttpResponse), answer
    await client.send({"type": "hello", "protocol": "1.0", "token": alice_token})
    welcome = await client.recv("welcome")
    assert welcome["username"] == alice and welcome["protocol"] == "1.0.0"
    b = await ws_connect(server, bob_token)
    await exchange(client, b, bob)
    await exchange(b, client, alice)
    await client.close()
    await b.close()


def test_login_limit_counts_only_401s_and_a_success_does_not_reset_it(
    make_server: Any,
) -> None:
    server = make_server()
    name = register(server)
    for _ in range(8):  # malformed logins are not failures
        assert_error(http(server, "POST", "/v1/login", {"username": name}), 400, "invalid_body")
    for _ in range(4):
        assert_error(http(server, "POST", "/v1/login", creds(name, "wrong password")), 401,
                     "invalid_credentials")
    # Four failures against the account slow it down but do not lock it.
    assert login(server, name)
    assert_error(http(server, "POST", "/v1/login", creds(name, "wrong again")), 401,
                 "invalid_credentials")
    answer = http(server, "POST", "/v1/login", creds(name))
    assert_error(answer, 429, "rate_limited")
    # Until the oldest failure (seconds ago) leaves the 15-minute window.
    assert 15 * 60 - 120 <= int(answer.headers["retry-after"]) <= 15 * 60


def test_login_limit_is_per_ip_and_failures_never_lock_the_account(make_server: Any) -> None:
    """Five failures from 127.0.0.2 close that IP, not 127.0.0.1; the failures against
    the account slow its logins down, but the right password still works."""
    server = make_server()
    name = register(server)
    for _ in range(5):
        answer = http(server, "POST", "/v1/login", creds(name, "wrong password"),
                      source_ip="127.0.0.2")
        assert_error(answer, 401, "invalid_credentials")
    assert_error(http(server, "POST", "/v1/login", creds(name), source_ip="127.0.0.2"), 429,
                 "rate_limited")
    # The account has five failures: its logins from elsewhere are slowed, not refused.
    started = time.monotonic()
    assert login(server, name, timeout=60)
    assert time.monotonic() - started > 0.5
    assert login(server, register(server))  # other accounts are not slowed


def test_user_search_prefix_is_literal(server: ChatdProcess) -> None:
    stem = unique_name("lit")
    _, token = new_user(server)
    underscore = register(server, f"{stem}_x")
    register(server, f"{stem}ax")
    dot = register(server, f"{stem}.y")
    register(server, f"{stem}by")
    for prefix, expected in ((f"{stem}_", [underscore]), (f"{stem}.", [dot]),
                             (f"{stem}%", [])):
        answer = http(server, "GET", f"/v1/users?prefix={quote(prefix)}", token=token)
        assert [u["username"] for u in answer.json["users"]] == expected, prefix


def test_user_search_leaves_out_the_caller_within_the_20(server: ChatdProcess) -> None:
    stem = unique_name("cap")
    me = register(server, f"{stem}a00")
    others = [register(server, f"{stem}b{i:02d}") for i in range(21)]
    answer = http(server, "GET", f"/v1/users?prefix={stem}", token=login(server, me))
    assert [u["username"] for u in answer.json["users"]] == others[:20]


def test_keep_alive_serves_several_requests_on_one_connection(server: ChatdProcess) -> None:
    import http.client as httpclient

    _, token = new_user(server)
    conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for path in ("/healthz", "/v1/conversations", "/nope", "/v1/conversations"):
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == (404 if path == "/nope" else 200)
    finally:
        conn.close()
