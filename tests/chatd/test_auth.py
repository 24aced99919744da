"""chatd.auth: key file, argon2id passwords, JWTs, login limits, revocation cache."""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from argon2 import PasswordHasher

from chatd.auth import (
    KEY_FILE,
    OWASP_FLOOR,
    Claims,
    HashParams,
    InvalidToken,
    KeyFileError,
    LoginAdmission,
    LoginLimiter,
    Passwords,
    PasswordsBusy,
    RevocationCache,
    Tokens,
    load_or_create_key,
)
from tests.support.aio import run

T = TypeVar("T")
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_800_000_000.0

# --- key file ----------------------------------------------------------------------------


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = load_or_create_key(data_dir)
    assert len(key) == 32
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key
    assert load_or_create_key(data_dir) == key
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temporary file left


def test_two_data_dirs_get_different_keys(tmp_path: Path) -> None:
    assert load_or_create_key(tmp_path / "a") != load_or_create_key(tmp_path / "b")


@pytest.mark.parametrize("size", [0, 31, 33])
def test_key_file_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_or_create_key(tmp_path)


def test_loose_key_file_mode_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(KEY)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="chatd.auth"):
        assert load_or_create_key(tmp_path) == KEY
    (record,) = caplog.records
    assert record.getMessage() == "file.mode_open"
    assert record.fields["path"] == path and record.fields["mode"] == "0o644"  # type: ignore[attr-defined]
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="chatd.auth"):
        load_or_create_key(tmp_path)
    assert caplog.text == ""


def test_losing_the_creation_race_uses_the_winner_s_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = os.urandom(32)
    real_link = os.link

    def link_after_someone_else(src: Any, dst: Any) -> None:
        Path(dst).write_bytes(winner)  # another process linked its key first
        os.chmod(dst, 0o600)
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_someone_else)
    assert load_or_create_key(tmp_path) == winner
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]


# --- passwords ---------------------------------------------------------------------------


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that remembers which functions ran in it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.calls: list[str] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="module")
def executor() -> Iterator[CountingExecutor]:
    with CountingExecutor() as pool:
        yield pool


@pytest.fixture(scope="module")
def passwords(executor: CountingExecutor) -> Passwords:
    return Passwords(executor)


def test_hash_and_verify_in_the_executor(passwords: Passwords, executor: CountingExecutor) -> None:
    async def body() -> tuple[str, bool, bool]:
        hashed = await passwords.hash("correct horse")
        return (
            hashed,
            await passwords.verify(hashed, "correct horse"),
            await passwords.verify(hashed, "wrong horse"),
        )

    executor.calls.clear()
    hashed, right, wrong = run(body)
    assert right is True
    assert wrong is False
    assert executor.calls == ["hash", "_check", "_check"]
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not passwords.needs_rehash(hashed)


def test_unknown_user_costs_a_real_verification(
    passwords: Passwords, executor: CountingExecutor
) -> None:
    executor.calls.clear()
    dummy_password = "whatever it is"
    assert run(lambda: passwords.verify(None, dummy_password)) is False
    assert executor.calls == ["_check"]
    # the dummy hash is a real argon2id hash at the configured cost
    assert passwords._dummy_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_verify_refuses_a_hash_that_is_not_argon2(
    passwords: Passwords, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="chatd.auth"):
        assert run(lambda: passwords.verify("not a hash", "password1")) is False
    assert "password.hash_invalid" in caplog.text
    assert "password1" not in caplog.text
    assert passwords.needs_rehash("not a hash")


def test_a_full_hashing_queue_refuses_more_work(executor: CountingExecutor) -> None:
    """The bug: the argon2 queue was unbounded, so 60 logins at once made everybody wait."""
    passwords = Passwords(executor, max_queued=2)

    async def body() -> list[object]:
        return list(await asyncio.gather(
            *(passwords.verify(None, "whatever pass") for _ in range(3)),
            return_exceptions=True,
        ))

    results = run(body)
    assert results.count(False) == 2 and isinstance(results[2], PasswordsBusy)
    assert not passwords.is_busy  # the queue drained


def test_weaker_hashes_need_a_rehash(passwords: Passwords) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("password1")
    assert passwords.needs_rehash(old)
    assert run(lambda: passwords.verify(old, "password1")) is True  # still usable to log in


def test_parameters_below_the_floor_are_refused(executor: CountingExecutor) -> None:
    assert HashParams(time_cost=2, memory_cost=19456, parallelism=1) == OWASP_FLOOR
    with pytest.raises(ValueError):
        Passwords(executor, HashParams(memory_cost=8192))
    stronger = HashParams(time_cost=3)
    assert stronger.is_at_least(OWASP_FLOOR)
    assert not OWASP_FLOOR.is_at_least(stronger)


# --- tokens ------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    parts = [json.dumps(header).encode(), json.dumps(claims).encode()]
    return ".".join([b64(parts[0]), b64(parts[1]), b64(signature)])


def good_claims(**changes: Any) -> dict[str, Any]:
    claims = {"sub": "7", "jti": "j1", "iat": int(NOW), "exp": int(NOW) + 60, "gen": 0}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_token_round_trip() -> None:
    tokens = Tokens(KEY, ttl=3600)
    issued = tokens.issue(user_id=42, generation=3, now=NOW + 0.7)
    assert issued.expires_in == 3600
    assert issued.expires_at == int(NOW) + 3600
    claims = tokens.decode(issued.token, now=NOW + 10)
    assert claims == Claims(
        user_id=42, jti=issued.jti, issued_at=int(NOW), expires_at=int(NOW) + 3600, generation=3
    )
    payload = jwt.decode(issued.token, options={"verify_signature": False})
    assert payload["sub"] == "42"
    assert set(payload) == {"sub", "jti", "iat", "exp", "gen"}
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


def test_every_token_gets_its_own_jti() -> None:
    tokens = Tokens(KEY, ttl=60)
    jtis = {tokens.issue(user_id=1, generation=0, now=NOW).jti for _ in range(50)}
    assert len(jtis) == 50


def test_expiry_follows_the_injected_clock() -> None:
    tokens = Tokens(KEY, ttl=60)
    issued = tokens.issue(user_id=1, generation=0, now=NOW)
    tokens.decode(issued.token, now=NOW + 59.9)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.decode(issued.token, now=NOW + 60)
    # a token made long ago by our own clock is expired even though PyJWT's clock differs
    old = Tokens(KEY, ttl=60).issue(user_id=1, generation=0, now=1000.0)
    with pytest.raises(InvalidToken):
        tokens.decode(old.token, now=NOW)


def test_token_issued_in_the_future_is_refused() -> None:
    tokens = Tokens(KEY, ttl=3600)
    issued = tokens.issue(user_id=1, generation=0, now=NOW + 600)
    with pytest.raises(InvalidToken, match="future"):
        tokens.decode(issued.token, now=NOW)
    near = tokens.issue(user_id=1, generation=0, now=NOW + 30)  # within the clock skew
    assert tokens.decode(near.token, now=NOW).user_id == 1


def test_wrong_key_is_refused() -> None:
    issued = Tokens(OTHER_KEY, ttl=60).issue(user_id=1, generation=0, now=NOW)
    with pytest.raises(InvalidToken):
        Tokens(KEY, ttl=60).decode(issued.token, now=NOW)


def test_alg_none_is_refused() -> None:
    tokens = Tokens(KEY, ttl=60)
    unsigned = jwt.encode(good_claims(), key=None, algorithm="none")
    with pytest.raises(InvalidToken):
        tokens.decode(unsigned, now=NOW)
    by_hand = handmade({"alg": "none", "typ": "JWT"}, good_claims())
    with pytest.raises(InvalidToken):
        tokens.decode(by_hand, now=NOW)


def test_other_algorithms_are_refused() -> None:
    tokens = Tokens(KEY, ttl=60)
    hs512 = jwt.encode(good_claims(), KEY * 2, algorithm="HS512")
    with pytest.raises(InvalidToken):
        tokens.decode(hs512, now=NOW)
    # key confusion: an "RS256" token "signed" with HMAC over the shared key
    rs256 = handmade({"alg": "RS256", "typ": "JWT"}, good_claims(), signature=b"x" * 256)
    with pytest.raises(InvalidToken):
        tokens.decode(rs256, now=NOW)


@pytest.mark.parametrize(
    "garbage", ["", "garbage", "a.b.c", "....", "é.é.é", "eyJhbGciOiJIUzI1NiJ9..", "x" * 5000]
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        Tokens(KEY, ttl=60).decode(garbage, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        good_claims(sub=None),
        good_claims(jti=None),
        good_claims(iat=None),
        good_claims(exp=None),
        good_claims(gen=None),
        good_claims(sub=7),
        good_claims(sub="alice"),
        good_claims(sub="-1"),
        good_claims(jti=""),
        good_claims(jti=5),
        good_claims(gen="0"),
        good_claims(gen=True),
        good_claims(exp=float(NOW + 60)),
    ],
)
def test_missing_or_malformed_claims_are_refused(claims: dict[str, Any]) -> None:
    token = jwt.encode(claims, KEY, algorithm="HS256")
    with pytest.raises(InvalidToken):
        Tokens(KEY, ttl=60).decode(token, now=NOW)


def test_tokens_refuse_a_short_key_and_a_bad_ttl() -> None:
    with pytest.raises(ValueError):
        Tokens(b"short", ttl=60)
    with pytest.raises(ValueError):
        Tokens(KEY, ttl=0)


# --- login limiter -----------------------------------------------------------------------


class MemoryFailureLog:
    """A real FailureLog in memory, as the Store keeps it in a table."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str, str]] = []  # (at, ip, username), kept sorted

    async def reserve_login_attempt(
        self, ip: str, username: str, since: float,
        decide: Callable[[list[float], list[float]], float | None],
    ) -> float | None:
        await asyncio.sleep(0)  # a store round trip: others may come in between calls
        ip_times = [at for at, row_ip, _ in self.rows if row_ip == ip and at >= since]
        account_times = [at for at, _, name in self.rows if name == username and at >= since]
        at = decide(ip_times, account_times)
        if at is not None:
            bisect.insort(self.rows, (at, ip, username))
        return at

    async def release_login_attempt(self, ip: str, username: str, at: float) -> None:
        self.rows.remove((at, ip, username))


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter_at(clock: Clock, **kwargs: Any) -> LoginLimiter:
    return LoginLimiter(MemoryFailureLog(), clock=clock, **kwargs)


async def fail(limiter: LoginLimiter, ip: str, user: str) -> None:
    """A login that is admitted and then fails (its record is kept)."""
    ticket = (await limiter.admit(ip, user)).ticket
    assert ticket is not None
    limiter.failed(ticket)


async def retry_after(limiter: LoginLimiter, ip: str, user: str) -> int:
    """The Retry-After of a refused login (0: it was admitted, and then failed)."""
    admission = await limiter.admit(ip, user)
    if admission.ticket is not None:
        limiter.failed(admission.ticket)
    return admission.retry_after


def test_five_failures_then_refused_until_the_oldest_leaves() -> None:
    async def body() -> None:
        clock = Clock()
        limiter = limiter_at(clock)
        ip = "203.0.113.9"
        for i in range(5):
            clock.now = NOW + i
            await fail(limiter, ip, f"user{i}")
        # the sixth login, whatever its password: refused until NOW leaves the window
        clock.now = NOW + 10
        assert await retry_after(limiter, ip, "alice") == 890
        clock.now = NOW + 10.2
        assert await retry_after(limiter, ip, "alice") == 890
        clock.now = NOW + 899.5
        assert await retry_after(limiter, ip, "alice") == 1
        # the window slides: at NOW + 900 the first failure no longer counts
        clock.now = NOW + 900
        assert await retry_after(limiter, ip, "alice") == 0  # admitted, and it failed
        # now NOW + 1 is the oldest
        assert await retry_after(limiter, ip, "alice") == 1
        clock.now = NOW + 901
        assert await retry_after(limiter, ip, "bob") == 0
        # other IPs are not affected
        assert await retry_after(limiter, "198.51.100.1", "carol") == 0

    run(body)


def test_logins_that_arrive_together_cannot_pass_the_limit_together() -> None:
    """The bug: the limit was checked before the password and the failure recorded after
    it, so 40 logins sent at once were all checked. Attempts count when admitted; the
    ones after the fifth wait for the outcome of those in flight, which all fail."""

    async def body() -> list[LoginAdmission]:
        limiter = limiter_at(Clock())

        async def wrong(index: int) -> LoginAdmission:
            admission = await limiter.admit("203.0.113.9", f"user{index}")
            if admission.ticket is not None:
                await asyncio.sleep(0.01)  # the password check
                limiter.failed(admission.ticket)
            return admission

        return list(await asyncio.gather(*(wrong(i) for i in range(50))))

    admissions = run(body)
    assert sum(a.ticket is not None for a in admissions) == 5
    assert all(a.retry_after == 900 for a in admissions if a.ticket is None)


def test_honest_logins_that_arrive_together_are_served_in_turn() -> None:
    """Twenty right passwords at once from one address: none is refused, since those in
    flight turn out not to be failures."""

    async def body() -> list[LoginAdmission]:
        limiter = limiter_at(Clock())

        async def right() -> LoginAdmission:
            admission = await limiter.admit("203.0.113.9", "alice")
            assert admission.ticket is not None
            await asyncio.sleep(0.001)  # the password check
            await limiter.release(admission.ticket)
            return admission

        return list(await asyncio.gather(*(right() for _ in range(20))))

    assert all(a.ticket is not None and a.ticket.at == NOW for a in run(body))


def test_a_released_attempt_is_no_failure() -> None:
    async def body() -> None:
        clock = Clock()
        limiter = limiter_at(clock)
        for i in range(4):
            clock.now = NOW + i
            await fail(limiter, "ip", "alice")
        clock.now = NOW + 5
        success = (await limiter.admit("ip", "alice")).ticket
        assert success is not None
        await limiter.release(success)  # it succeeded: no reset, but no failure either
        clock.now = NOW + 6
        await fail(limiter, "ip", "alice")
        clock.now = NOW + 7
        assert await retry_after(limiter, "ip", "alice") == 893

    run(body)


def test_more_failures_than_the_limit_wait_until_enough_have_left() -> None:
    limiter = limiter_at(Clock(), max_failures=2, window=100.0)
    # three failures on record (say, from before an upgrade): until NOW + 10 leaves
    failures = [NOW, NOW + 10.0, NOW + 20.0]
    assert limiter.decide(failures, [], NOW + 30).retry_after == 80
    assert limiter.decide(failures, [], NOW + 110).at == NOW + 110


def test_concurrent_attempts_on_one_account_wait_in_line_and_pay_each() -> None:
    """Each attempt against one account (from any IP) is admitted once the one before it
    has its outcome, then waits its own delay: concurrent attempts pay one after another."""

    async def body() -> list[float]:
        clock = Clock()
        limiter = limiter_at(clock, account_max_wait=60.0)

        async def wrong(index: int) -> float:
            ticket = (await limiter.admit(f"10.0.0.{index}", "ALICE")).ticket
            assert ticket is not None
            clock.now = max(clock.now, ticket.at)  # the host sleeps until then
            limiter.failed(ticket)
            return ticket.at - NOW

        return list(await asyncio.gather(*(wrong(i) for i in range(9))))

    assert run(body) == [0, 0, 0, 0.5, 1.5, 3.5, 7.5, 15.5, 23.5]


def test_an_attempt_whose_turn_comes_too_late_is_refused() -> None:
    """The line counts: arriving at NOW, a turn at NOW + 15.5 plus 8 s is over 20 s."""
    limiter = limiter_at(Clock())
    line = [NOW, NOW, NOW, NOW + 0.5, NOW + 1.5, NOW + 3.5, NOW + 7.5, NOW + 15.5]
    assert limiter.decide([], line, NOW + 15.5, started=NOW).retry_after == 4


def test_an_account_line_longer_than_the_max_wait_is_refused() -> None:
    limiter = limiter_at(Clock())  # account_max_wait 20 s
    # seven in line, the last to be checked at NOW + 12: the next waits 8 s after it
    line = [NOW, NOW, NOW, NOW + 0.5, NOW + 1.5, NOW + 3.5, NOW + 12.0]
    assert limiter.decide([], line, NOW).at == NOW + 20.0  # 12 + 8: just fits
    assert limiter.decide([], [*line, NOW + 20.0], NOW).retry_after == 8  # 28 s: in 8


def test_account_delay_survives_huge_counts() -> None:
    assert limiter_at(Clock()).account_delay(10**6) == 8.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0},
        {"window": 0.0},
        {"account_base_delay": -1.0},
        {"account_base_delay": 2.0, "account_max_delay": 1.0},
        {"account_max_wait": 1.0},
    ],
)
def test_limiter_refuses_nonsense_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LoginLimiter(MemoryFailureLog(), **kwargs)


# --- revocation cache --------------------------------------------------------------------


def test_revocations_last_until_the_token_expires() -> None:
    cache = RevocationCache()
    cache.add("a", expires_at=NOW + 10)
    cache.load([("b", NOW + 20), ("c", NOW - 1)])
    assert cache.is_revoked("a", now=NOW)
    assert cache.is_revoked("b", now=NOW)
    assert not cache.is_revoked("c", now=NOW)  # already expired: pruned
    assert not cache.is_revoked("zz", now=NOW)
    assert len(cache) == 2
    assert not cache.is_revoked("a", now=NOW + 10)
    assert cache.is_revoked("b", now=NOW + 10)
    assert len(cache) == 1
    cache.prune(NOW + 20)
    assert len(cache) == 0


def test_revoking_again_keeps_the_later_expiry() -> None:
    cache = RevocationCache()
    cache.add("a", expires_at=NOW + 10)
    cache.add("a", expires_at=NOW + 30)
    cache.add("a", expires_at=NOW + 5)  # an older record changes nothing
    assert cache.is_revoked("a", now=NOW + 20)
    assert not cache.is_revoked("a", now=NOW + 30)
    assert len(cache) == 0
