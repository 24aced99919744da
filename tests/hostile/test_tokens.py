"""Token hygiene against real chatd processes: rotating refresh, reuse detection, key
rotation, and the keyring in a file.

A thief holding a copy of a token must not keep access by refreshing it: with
``{"rotate": true}`` the refreshed token dies after the grace period, and any later use
of it (by the thief or the victim) revokes every token descended from the same login.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from chatd.auth import Keyring, Tokens
from chatd.auth.keys import read_keyring, write_keyring
from tests.chatd.clients import (
    WsPeer,
    ahttp,
    anew_user,
    exchange,
    login,
    ws_connect,
)
from tests.chatd.conftest import _shut, run_async
from tests.chatd.pg import pg_schema, start_nodes
from tests.chatd.server import ChatdProcess
from tests.support.poll import apoll

BACKENDS = ("sqlite", "postgres")
# seconds: --refresh-grace in these tests. A real wait (a retired token dies on the wall
# clock), kept short, yet long enough for a request and a reauth inside it when busy.
GRACE = 1.0
KEY_POLL_SLACK = 10.0  # seconds on top of a token's lifetime before it must be refused

MakeServer = Callable[..., ChatdProcess]


# --- helpers ------------------------------------------------------------------------------


async def refresh(server: ChatdProcess, token: str, body: object = None) -> str:
    answer = await ahttp(server, "POST", "/v1/token/refresh", body, token=token)
    assert answer.status == 200, answer
    return str(answer.json["token"])


async def status_with(server: ChatdProcess, token: str) -> int:
    return (await ahttp(server, "GET", "/v1/conversations", token=token)).status


async def hello_refused(server: ChatdProcess, token: str) -> None:
    peer = await ws_connect(server, hello=False)
    await peer.send({"type": "hello", "protocol": "1.0", "token": token})
    assert (await peer.recv("error"))["code"] == "unauthorized"
    assert await peer.wait_closed() == 4001


async def closed_unauthorized(peer: WsPeer) -> None:
    assert (await peer.recv("error"))["code"] == "unauthorized"
    assert await peer.wait_closed() == 4001


def kid(token: str) -> str | None:
    header = jwt.get_unverified_header(token)
    return None if header.get("kid") is None else str(header["kid"])


def admin(server: ChatdProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``chatd <args>`` on ``server``'s data dir and database."""
    store = ["--data-dir", str(server.data_dir), "--log-dir", str(server.log_dir)]
    if server.db is not None:
        store += ["--db", server.db]
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args, *store],
        capture_output=True, text=True, timeout=60, check=False,
    )


# --- rotating refresh ---------------------------------------------------------------------


@run_async
async def test_a_rotated_token_is_refused_after_the_grace(make_server: MakeServer) -> None:
    server = make_server("--refresh-grace", str(GRACE))
    alice, old = await anew_user(server)
    bob, bob_token = await anew_user(server)
    stays = await ws_connect(server, old)  # will reauth with the new token
    goes = await ws_connect(server, old)  # will not
    bob_peer = await ws_connect(server, bob_token)
    started = time.time()
    new = await refresh(server, old, {"rotate": True})
    assert await status_with(server, old) == 200  # in-flight requests survive the grace
    await stays.send({"type": "reauth", "token": new})
    await stays.recv("reauthed")

    await closed_unauthorized(goes)  # at the end of the grace, like a revocation
    assert time.time() - started >= GRACE - 0.5
    await exchange(stays, bob_peer, bob)  # the reauthed connection lives on
    await exchange(bob_peer, stays, alice)
    assert await status_with(server, old) == 401
    await hello_refused(server, old)
    await stays.close()
    await bob_peer.close()


@run_async
async def test_without_rotate_the_old_token_keeps_working(make_server: MakeServer) -> None:
    """Protocol 1.0: a refresh leaves the old token valid until it expires."""
    server = make_server("--refresh-grace", "0.25")
    _alice, old = await anew_user(server)
    peer = await ws_connect(server, old)
    first = await refresh(server, old)  # no body
    second = await refresh(server, old, {"rotate": False})
    assert len({old, first, second}) == 3
    deadline = time.monotonic() + 1.0  # well past what a rotation's grace would be
    while time.monotonic() < deadline:
        assert await status_with(server, old) == 200
        await asyncio.sleep(0.1)
    assert await refresh(server, old)  # refreshing it again is no reuse either
    again = await ws_connect(server, old)
    for token in (first, second):
        assert await status_with(server, token) == 200
    assert peer.close_code is None and again.close_code is None
    await peer.close()
    await again.close()


@run_async
async def test_refreshing_a_retired_token_again_revokes_its_family(
    make_server: MakeServer,
) -> None:
    server = make_server()  # the default grace (60 s): the reuse comes within it
    alice, old = await anew_user(server)
    _bob, bob_token = await anew_user(server)
    other_device = login(server, alice)  # another login: another family
    new = await refresh(server, old, {"rotate": True})
    newest = await refresh(server, new, {"rotate": True})
    live = await ws_connect(server, newest)
    stranger = await ws_connect(server, other_device)

    # the thief (or the victim) refreshes the first token again
    answer = await ahttp(server, "POST", "/v1/token/refresh", {"rotate": True}, token=old)
    assert answer.status == 401 and answer.error_code == "unauthorized"
    await closed_unauthorized(live)
    for token in (old, new, newest):
        assert await status_with(server, token) == 401
        await hello_refused(server, token)
    assert await status_with(server, other_device) == 200
    assert await status_with(server, bob_token) == 200
    assert stranger.close_code is None
    await stranger.close()


@run_async
async def test_a_fork_made_without_rotate_cannot_outlive_a_rotation(
    make_server: MakeServer,
) -> None:
    """The thief refreshes a stolen token without rotate (a 1.0 refresh) to get a token
    of its own; once the victim's client rotates, only the newest token of the family
    may be refreshed, so the thief's next refresh, either kind, gives both away."""
    server = make_server()
    _alice, stolen = await anew_user(server)
    fork = await refresh(server, stolen)  # the thief's
    victims = await refresh(server, stolen, {"rotate": True})
    live = await ws_connect(server, victims)
    for body in (None, {"rotate": True}):
        answer = await ahttp(server, "POST", "/v1/token/refresh", body, token=fork)
        assert answer.status == 401, answer
    await closed_unauthorized(live)
    for token in (stolen, fork, victims):
        assert await status_with(server, token) == 401


@run_async
async def test_a_retired_token_used_after_its_grace_revokes_its_family(
    make_server: MakeServer,
) -> None:
    server = make_server("--refresh-grace", str(GRACE))
    _alice, old = await anew_user(server)
    new = await refresh(server, old, {"rotate": True})
    live = await ws_connect(server, new)

    async def old_refused() -> bool:
        return await status_with(server, old) == 401

    await apoll(old_refused, "the old token to be refused after the grace", interval=0.05)
    await closed_unauthorized(live)
    assert await status_with(server, new) == 401
    await hello_refused(server, new)


@run_async
async def test_a_bad_refresh_body_is_refused(server: ChatdProcess) -> None:
    _alice, token = await anew_user(server)
    for body in (b"[]", b'{"rotate": "yes"}', b"{"):
        answer = await ahttp(server, "POST", "/v1/token/refresh", body, token=token)
        assert answer.status == 400 and answer.error_code == "invalid_body", answer
    assert await status_with(server, token) == 200  # nothing was retired


# --- signing keys -------------------------------------------------------------------------


@run_async
async def test_a_rotated_out_key_verifies_until_its_tokens_expire(
    make_server: MakeServer,
) -> None:
    ttl = 3
    server = make_server("--token-ttl", str(ttl))
    alice, old = await anew_user(server)
    old_expiry = jwt.decode(old, options={"verify_signature": False})["exp"]
    done = admin(server, "key", "rotate", "--token-ttl", str(ttl))
    assert done.returncode == 0, done.stderr
    assert "new token signing key" in done.stdout

    minted = admin(server, "token", "issue", alice, "--ttl", "600")
    assert minted.returncode == 0, minted.stderr
    new = minted.stdout.strip()
    assert kid(new) is not None and kid(new) != kid(old)
    assert await status_with(server, new) == 200  # an unknown kid makes the server reload
    peer = await ws_connect(server, new)
    assert await status_with(server, old) == 200 or time.time() >= old_expiry

    async def old_refused() -> bool:
        return await status_with(server, old) == 401

    await apoll(old_refused, "the old key's token to expire", timeout=ttl + KEY_POLL_SLACK,
                interval=0.05)
    await hello_refused(server, old)
    assert await status_with(server, new) == 200

    async def logins_use_the_new_key() -> bool:
        return kid(await asyncio.to_thread(login, server, alice)) == kid(new)

    await apoll(logins_use_the_new_key, "the server to sign with the new key", interval=0.05)
    assert peer.close_code is None
    await peer.close()


@run_async
async def test_a_key_rotated_just_after_a_read_of_the_keyring_is_read_for_its_token(
    make_server: MakeServer, tmp_path: Path,
) -> None:
    """A node reads its keyring again for a token whose key it does not know, at most
    once a second. A token signed with a key rotated just after such a read, and shown
    within that second, was refused (401: its user had to sign in again); now the node
    waits for the next read allowed. Here a token with a made-up key makes the node read
    the key file; the file is rotated and a token of its new key shown at once."""
    key_file = tmp_path / "token.keys"
    write_keyring(key_file, Keyring.from_legacy(secrets.token_bytes(32)))
    server = make_server("--token-key-file", str(key_file))
    _, token = await anew_user(server)
    claims = jwt.decode(token, options={"verify_signature": False})
    made_up = jwt.encode({**claims, "jti": "x"}, secrets.token_bytes(32), algorithm="HS256",
                         headers={"kid": "made-up"})
    assert await status_with(server, made_up) == 401  # the node read the file for it
    rotated, _ = read_keyring(key_file).rotated(secrets.token_bytes(32), time.time(), 86400)
    write_keyring(key_file, rotated)
    fresh = Tokens(rotated, 3600).issue(int(claims["sub"]), claims["gen"], time.time()).token
    assert kid(fresh) not in (kid(token), "made-up")
    assert await status_with(server, fresh) == 200


def test_a_missing_or_bad_token_key_file_stops_serve(tmp_path: Path) -> None:
    bad = tmp_path / "bad.keys"
    bad.write_text("not a keyring")
    bad.chmod(0o600)
    for path, why in ((tmp_path / "missing.keys", "No such file"), (bad, "not a keyring")):
        done = subprocess.run(
            [sys.executable, "-m", "chatd", "serve", "--port", "0", "--data-dir",
             str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"),
             "--token-key-file", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("chatd: token key file"), done.stderr
        assert why in lines[0] or "keyring" in lines[0]


# --- several nodes on PostgreSQL ----------------------------------------------------------


@pytest.mark.pg
@run_async
async def test_retirement_and_reuse_close_connections_on_the_other_node(tmp_path: Path) -> None:
    with pg_schema() as url:
        a, b = start_nodes(tmp_path, url, "--refresh-grace", str(GRACE))
        try:
            _alice, old = await anew_user(a)
            on_b = await ws_connect(b, old)  # never reauths
            new = await refresh(a, old, {"rotate": True})
            await closed_unauthorized(on_b)  # node B closes it when A's grace ends
            newest_on_b = await ws_connect(b, await refresh(b, new, {"rotate": True}))
            answer = await ahttp(a, "POST", "/v1/token/refresh", {"rotate": True}, token=new)
            assert answer.status == 401  # a reuse on node A...
            await closed_unauthorized(newest_on_b)  # ...closes the family's socket on B
        finally:
            _shut(a)
            _shut(b)


@pytest.mark.pg
@run_async
async def test_a_new_key_works_on_every_node_and_a_key_file_replaces_the_database(
    tmp_path: Path,
) -> None:
    with pg_schema() as url:
        a, b = start_nodes(tmp_path / "db", url)
        try:
            alice, old = await anew_user(a)
            done = admin(a, "key", "rotate")
            assert done.returncode == 0, done.stderr
            minted = admin(a, "token", "issue", alice)
            assert minted.returncode == 0, minted.stderr
            new = minted.stdout.strip()
            assert kid(new) != kid(old)
            for node in (a, b):  # neither node was told: the unknown kid makes it reload
                assert await status_with(node, new) == 200
                assert await status_with(node, old) == 200
                await (await ws_connect(node, new)).close()
        finally:
            _shut(a)
            _shut(b)

        # The operator moves the keyring out of the database, into a file on every node.
        key_file = tmp_path / "token.keys"
        done = admin(a, "key", "rotate", "--token-key-file", str(key_file))
        assert done.returncode == 0, done.stderr
        assert key_file.stat().st_mode & 0o777 == 0o600
        a, b = start_nodes(tmp_path / "file", url, "--token-key-file", str(key_file))
        try:
            for node in (a, b):  # nobody is logged out by the move
                assert await status_with(node, old) == 200
                assert await status_with(node, new) == 200
            from_a = await asyncio.to_thread(login, a, alice)
            assert kid(from_a) not in (kid(old), kid(new))
            assert await status_with(b, from_a) == 200
            await (await ws_connect(b, from_a)).close()
            # a rotation of the file reaches both running nodes
            done = admin(a, "key", "rotate", "--token-key-file", str(key_file))
            assert done.returncode == 0, done.stderr
            minted = admin(a, "token", "issue", alice, "--token-key-file", str(key_file))
            newest = minted.stdout.strip()
            assert kid(newest) not in (kid(old), kid(new), kid(from_a))
            for node in (a, b):
                assert await status_with(node, newest) == 200
        finally:
            _shut(a)
            _shut(b)
