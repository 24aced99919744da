"""The token keyring (chatd.auth.Keyring, Tokens with kids) and its files (chatd.auth.keys),
and the revocation cache's retirements and families."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path

import jwt
import pytest

from chatd.auth import (
    IAT_SKEW,
    KEY_FILE,
    InvalidToken,
    KeyFileError,
    Keyring,
    RevocationCache,
    SigningKey,
    Tokens,
    UnknownKey,
)
from chatd.auth.keys import FileKeys, key_source, read_keyring, write_keyring
from chatd.auth.tokens import KEY_RELOAD_INTERVAL
from chatd.store import Retirement

KEY = bytes(range(32))
NEW_KEY = bytes(range(1, 33))
NEWER_KEY = bytes(range(2, 34))
NOW = 1_800_000_000.0
DAY = 86400


def rotated(keyring: Keyring, secret: bytes, now: float, keep: float = DAY) -> Keyring:
    return keyring.rotated(secret, now, keep)[0]


# --- the keyring -------------------------------------------------------------------------


def test_a_legacy_key_verifies_tokens_without_kid() -> None:
    keyring = Keyring.from_legacy(KEY)
    assert keyring.signing.legacy and keyring.find(None) is keyring.signing
    assert keyring.find(keyring.signing.kid) is keyring.signing
    assert keyring.find("nope") is None
    old = jwt.encode({"sub": "1", "jti": "j", "iat": int(NOW), "exp": int(NOW) + 60, "gen": 0},
                     KEY, algorithm="HS256")  # as chatd signed before keyrings: no kid
    assert "kid" not in jwt.get_unverified_header(old)
    assert Tokens(keyring, 60).decode(old, NOW).jti == "j"


def test_kids_are_derived_from_the_secret_and_do_not_show_it() -> None:
    one, two = SigningKey(secret=KEY, created_at=0), SigningKey(secret=KEY, created_at=5)
    assert one.kid == two.kid != SigningKey(secret=NEW_KEY, created_at=0).kid
    assert KEY.hex() not in one.kid and "secret" not in repr(one)


def test_the_newest_key_signs_and_every_key_verifies() -> None:
    legacy = Keyring.from_legacy(KEY)
    old_token = Tokens(legacy, 3600).issue(1, 0, NOW).token
    keyring = rotated(legacy, NEW_KEY, NOW + 10)
    assert [k.secret for k in keyring.keys] == [KEY, NEW_KEY]
    assert keyring.keys[0].retired_at == int(NOW + 10) and keyring.signing.retired_at is None
    tokens = Tokens(keyring, 3600)
    new_token = tokens.issue(1, 0, NOW + 20).token
    assert jwt.get_unverified_header(new_token)["kid"] == keyring.signing.kid
    assert tokens.decode(old_token, NOW + 30).user_id == 1
    assert tokens.decode(new_token, NOW + 30).user_id == 1
    with pytest.raises(UnknownKey):  # the old keyring has never heard of the new key
        Tokens(legacy, 3600).decode(new_token, NOW + 30)


def test_rotation_prunes_keys_retired_longer_than_the_token_lifetime() -> None:
    first = rotated(Keyring.from_legacy(KEY), NEW_KEY, NOW)
    old_token = Tokens(first, DAY).issue(1, 0, NOW).token  # signed by NEW_KEY at NOW
    # the legacy key, retired at NOW, stays while its tokens may live...
    second = rotated(first, NEWER_KEY, NOW + DAY)
    assert [k.secret for k in second.keys] == [KEY, NEW_KEY, NEWER_KEY]
    # ...and goes once DAY (plus the clock skew) has passed since it retired
    third, pruned = second.rotated(bytes(range(3, 35)), NOW + DAY + IAT_SKEW + 1, DAY)
    assert [k.secret for k in pruned] == [KEY]
    assert third.find(None) is None  # tokens without kid are refused from now on
    assert Tokens(third, DAY).decode(old_token, NOW + DAY - 1).user_id == 1


def test_a_keyring_refuses_a_repeated_or_short_key() -> None:
    with pytest.raises(ValueError):
        Keyring.from_legacy(KEY).rotated(KEY, NOW, DAY)
    with pytest.raises(ValueError):
        SigningKey(secret=b"short", created_at=0)
    with pytest.raises(ValueError):
        Keyring(())


def test_the_keyring_document_round_trips() -> None:
    keyring = rotated(rotated(Keyring.from_legacy(KEY), NEW_KEY, NOW), NEWER_KEY, NOW + 5)
    assert Keyring.decode(keyring.encode()) == keyring
    assert Keyring.decode(KEY) == Keyring.from_legacy(KEY)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"x" * 31,
        b"x" * 33,
        b"{}",
        b'{"chatd_keyring": 2, "keys": [ ]}',  # (32 bytes would read as a legacy key)
        b'{"chatd_keyring": 1, "keys": [ ]}',
        b'{"chatd_keyring": 1, "keys": [{"kid": "a"}]}',
        b'{"chatd_keyring": 1, "keys": [{"kid": "a", "secret": "!!", "created_at": 0,'
        b' "retired_at": null}]}',
    ],
)
def test_a_bad_keyring_document_is_a_key_file_error(data: bytes) -> None:
    with pytest.raises(KeyFileError):
        Keyring.decode(data)


def test_a_kid_that_does_not_match_its_secret_is_refused() -> None:
    document = Keyring.from_legacy(KEY).encode().replace(
        SigningKey(secret=KEY, created_at=0).kid.encode(), b"forged-kid"
    )
    with pytest.raises(KeyFileError):
        Keyring.decode(document)


def test_a_token_with_a_strange_kid_is_refused() -> None:
    tokens = Tokens(KEY, 60)
    claims = {"sub": "1", "jti": "j", "iat": int(NOW), "exp": int(NOW) + 60, "gen": 0}
    for kid in (5, ["a"], {"a": 1}):
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = f"{b64json(header)}.{b64json(claims)}"
        signature = hmac.new(KEY, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"
        with pytest.raises(InvalidToken):
            tokens.decode(token, NOW)


def b64json(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_family_claim() -> None:
    tokens = Tokens(KEY, 60)
    login = tokens.issue(1, 0, NOW)
    assert tokens.decode(login.token, NOW).family == login.jti
    child = tokens.issue(1, 0, NOW, family=login.jti)
    assert tokens.decode(child.token, NOW).family == login.jti
    assert jwt.decode(child.token, options={"verify_signature": False})["fam"] == login.jti
    bad = jwt.encode({"sub": "1", "jti": "j", "iat": int(NOW), "exp": int(NOW) + 60, "gen": 0,
                      "fam": 7}, KEY, algorithm="HS256")
    with pytest.raises(InvalidToken):
        tokens.decode(bad, NOW)


# --- reloading ---------------------------------------------------------------------------


def test_reload_is_rate_limited_shared_and_forgets_pruned_keys() -> None:
    """A reload asked for within KEY_RELOAD_INTERVAL of the last read waits for the next
    read allowed, then reads (it returned False at once, and the token that asked, signed
    with a key rotated just after the last read, was refused); callers at once share one
    read; a pruned key's tokens stop verifying."""
    legacy = Keyring.from_legacy(KEY)
    current = {"ring": legacy}
    loads = []

    async def loader() -> Keyring:
        loads.append(1)
        await asyncio.sleep(0)
        return current["ring"]

    async def main() -> None:
        tokens = Tokens(legacy, DAY, loader=loader)
        old = tokens.issue(1, 0, NOW).token
        tokens.decode(old, NOW)  # remembered as verified
        assert await tokens.reload(NOW) is False and len(loads) == 1
        current["ring"] = Keyring((SigningKey(secret=NEW_KEY, created_at=int(NOW)),))
        # too soon: both wait for the next read allowed (0.05 s here), and share it
        soon = NOW + KEY_RELOAD_INTERVAL - 0.05
        results = await asyncio.gather(tokens.reload(soon), tokens.reload(soon))
        assert results == [True, True] and len(loads) == 2
        with pytest.raises(InvalidToken):  # the key that signed it is gone
            tokens.decode(old, NOW + 2)
        # a clock set back an hour: the wait is still at most the interval
        started = time.monotonic()
        assert await tokens.reload(NOW - 3600) is False and len(loads) == 3
        assert time.monotonic() - started < 10 * KEY_RELOAD_INTERVAL
        assert await tokens.reload(NOW + 2.1, rate_limited=False) is False and len(loads) == 4

    asyncio.run(main())


# --- key files ---------------------------------------------------------------------------


def test_a_keyring_file_is_written_private_and_atomically(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "token.keys"
    keyring = rotated(Keyring.from_legacy(KEY), NEW_KEY, NOW)
    old_umask = os.umask(0)
    try:
        write_keyring(path, keyring)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["token.keys"]  # no temporary left
    assert read_keyring(path) == keyring
    write_keyring(path, Keyring.from_legacy(NEWER_KEY))  # replaced whole
    assert read_keyring(path) == Keyring.from_legacy(NEWER_KEY)


def test_a_legacy_key_file_reads_as_a_keyring(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(KEY)
    path.chmod(0o600)
    assert read_keyring(path) == Keyring.from_legacy(KEY)


def test_missing_and_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="No such file"):
        asyncio.run(FileKeys(tmp_path / "missing", create=False).load())
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a key")
    with pytest.raises(KeyFileError, match=str(bad)):
        read_keyring(bad)
    huge = tmp_path / "huge"
    huge.write_bytes(b"{" * 70_000)
    with pytest.raises(KeyFileError, match="larger"):
        read_keyring(huge)


def test_the_data_dir_key_is_created_when_missing(tmp_path: Path) -> None:
    source = key_source(object(), tmp_path / "data", None)
    keyring = asyncio.run(source.load())
    path = tmp_path / "data" / KEY_FILE
    assert path.read_bytes() == keyring.signing.secret and keyring.signing.legacy
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert asyncio.run(source.load()) == keyring


def test_a_token_key_file_wins_over_the_data_dir(tmp_path: Path) -> None:
    source = key_source(object(), tmp_path / "data", tmp_path / "keys")
    assert isinstance(source, FileKeys) and source.path == tmp_path / "keys"
    with pytest.raises(KeyFileError):  # never created behind the operator's back
        asyncio.run(source.load())
    assert not (tmp_path / "keys").exists() and not (tmp_path / "data").exists()


# --- the revocation cache's retirements and families -------------------------------------


def test_retirements_and_families_are_kept_until_their_tokens_expire() -> None:
    cache = RevocationCache()
    retirement = Retirement(jti="a", family="f", expires_at=int(NOW) + 10, grace_until=NOW + 2)
    assert cache.retire(retirement) is True
    assert cache.retire(retirement) is False  # not news
    assert cache.retirement("a", NOW) == retirement
    assert cache.retirement("b", NOW) is None
    assert cache.revoke_family("f", NOW + 20) is True
    assert cache.revoke_family("f", NOW + 5) is False
    assert cache.is_family_revoked("f", NOW + 19)
    assert len(cache) == 0  # families and retirements are not revoked token ids
    assert cache.retirement("a", NOW + 10) is None
    assert not cache.is_family_revoked("f", NOW + 20)
