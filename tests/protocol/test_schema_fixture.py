"""The autouse schema fixture (tests/schemacheck.py) catches what the attrs types let through."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from libchat import protocol
from tests.schemacheck import SchemaChecker, SchemaViolation


def test_patched_encode_frame_rejects_a_frame_the_schema_forbids(
    schema_check: SchemaChecker,
) -> None:
    # attrs accepts a negative user_id; the schema does not.
    bad = protocol.Welcome(user_id=-1, username="bob", server_time=1)
    with pytest.raises(SchemaViolation, match="user_id"):
        protocol.encode_frame(bad)
    assert len(schema_check.take_violations()) == 1


def test_patched_encode_frame_passes_a_good_frame(schema_check: SchemaChecker) -> None:
    text = protocol.encode_frame(protocol.Ack(id="c-1", seq=7, ts=1764158400123))
    assert orjson.loads(text)["seq"] == 7
    assert schema_check.violations == []


def test_patched_encode_body_rejects_a_bad_body(schema_check: SchemaChecker) -> None:
    with pytest.raises(SchemaViolation, match="token_type"):
        protocol.encode_body(
            protocol.TokenGrant(
                token="t", token_type="bearer", expires_in=60, user_id=1, username="alice"
            )
        )
    assert schema_check.take_violations()


def test_a_class_without_a_schema_fails_loudly(schema_check: SchemaChecker) -> None:
    with pytest.raises(SchemaViolation, match="no schema"):
        protocol.encode_body(protocol.UserEntry(username="alice"))
    assert schema_check.take_violations()


def test_patched_decode_server_frame_checks_before_decoding(schema_check: SchemaChecker) -> None:
    # The codec itself accepts this receipt (it does not check id formats); the schema not.
    raw = '{"type":"receipt","status":"delivered","id":"not an id","seq":1,"ts":2}'
    with pytest.raises(SchemaViolation, match="receipt_delivered"):
        protocol.decode_server_frame(raw)
    with pytest.raises(SchemaViolation, match="not JSON"):
        protocol.decode_server_frame("{")
    assert len(schema_check.take_violations()) == 2
    good = '{"type":"presence","user":"bob","online":false}'
    assert protocol.decode_server_frame(good) == protocol.Presence(user="bob", online=False)


def test_patched_decode_response_body_checks_objects_only(schema_check: SchemaChecker) -> None:
    with pytest.raises(SchemaViolation, match=r"error\.json"):
        protocol.decode_response_body(
            b'{"error":{"code":"nope","message":"x"}}', protocol.ErrorBody
        )
    assert schema_check.take_violations()
    # Not an object: left to the codec, which answers with its own ProtocolViolation.
    with pytest.raises(protocol.ProtocolViolation):
        protocol.decode_response_body(b"<html>", protocol.ErrorBody)
    assert schema_check.violations == []


def test_paused_checks_nothing(schema_check: SchemaChecker) -> None:
    with schema_check.paused():
        protocol.encode_frame(protocol.Welcome(user_id=-1, username="Bob", server_time=1))
    assert schema_check.violations == []


def test_a_swallowed_violation_is_still_recorded(schema_check: SchemaChecker) -> None:
    with contextlib.suppress(AssertionError):  # as an asyncio callback or a thread would
        protocol.encode_frame(protocol.Presence(user="X", online=True))
    assert len(schema_check.take_violations()) == 1


@pytest.mark.schema_exempt(reason="proves the marker switches the checks off")
def test_schema_exempt_marker(schema_check: SchemaChecker) -> None:
    protocol.encode_frame(protocol.Welcome(user_id=-1, username="Bob", server_time=1))
    assert schema_check.violations == []


SWALLOWED = """
import contextlib
from libchat import protocol

def test_swallows() -> None:
    with contextlib.suppress(AssertionError):
        protocol.encode_frame(protocol.Presence(user="X", online=True))

def test_clean() -> None:
    protocol.encode_frame(protocol.Presence(user="bob", online=True))
"""


def test_a_swallowed_violation_fails_the_test_at_teardown(tmp_path: Path) -> None:
    (tmp_path / "test_swallowed.py").write_text(SWALLOWED)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.schemacheck",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed, 1 error" in run.stdout, run.stdout
    assert "ERROR at teardown of test_swallows" in run.stdout, run.stdout
    assert "protocol schema violation" in run.stdout
