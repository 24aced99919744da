"""A full disk under SQLite: every send gets an error while it is full, /healthz says so,
and once room is made, acks come back within 5 s (issue 12).

The bug: while every write failed /healthz answered 200 "degraded" with db "ok", and
after space was freed the WAL (never checkpointed while commits failed) refilled it:
45 s without an ack. Needs root, to mount a small tmpfs; skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chatd.clients import ahttp, anew_user, whole_history, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.faults.senders import AnsweredSender
from tests.faults.tally import Tally

DISK = "16m"
RECOVERY = 5.0  # seconds from freeing space to the first ack: the bound


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


@run_async
async def test_a_full_disk_is_reported_and_recovered_from(
    small_disk: Path, tmp_path: Path
) -> None:
    with ChatdProcess(small_disk / "data", tmp_path / "logs") as server:
        _, token = await anew_user(server)
        bob, _ = await anew_user(server)
        peer = await ws_connect(server, token)
        tally = Tally("a full disk")
        sender = AnsweredSender(peer, bob, body="x" * 2000, tally=tally)

        async def send() -> str:
            return (await sender.send())[0]

        assert await send() == "ack"
        filler = fill(small_disk)
        deadline = time.monotonic() + 30
        while await send() == "ack":  # the WAL may have had room left
            assert time.monotonic() < deadline, "sends kept being acked on a full disk"
        health = await ahttp(server, "GET", "/healthz")
        assert health.status == 503 and health.json["db"] == "error", health

        filler.unlink()
        freed = time.monotonic()
        while await send() != "ack":
            assert time.monotonic() - freed < RECOVERY, "no ack within 5 s of freeing space"
        assert time.monotonic() - freed < RECOVERY
        assert (await ahttp(server, "GET", "/healthz")).status == 200
        tally.receive_all(await whole_history(server, token, bob))
        tally.check()
        with contextlib.suppress(Exception):
            await peer.close()
