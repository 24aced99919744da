"""A restore never rewinds seqs (issue 12): after backup, more messages, restore and a
restart, a client that kept its dedupe state still receives every later message.

The bug: new messages took the seqs of those lost with the restore, which the client had
already seen, so libchat's SeenSeqs (and chatpad) dropped them as repeats: never shown.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from libchat.outbox import SeenSeqs
from tests.chatd.clients import WsPeer, anew_user, ws_connect
from tests.chatd.conftest import run_async


async def exchange(sender: WsPeer, receiver: WsPeer, to: str, ids: list[str],
                   seen: SeenSeqs) -> list[str]:
    """Send ``ids`` and receive them as a client would: the ids it shows (not repeats)."""
    shown = []
    for client_id in ids:
        await sender.send({"type": "send", "id": client_id, "to": to, "body": client_id})
        await sender.recv("ack", where=lambda f, c=client_id: f["id"] == c)
        message = await receiver.recv("message", where=lambda f, c=client_id: f["id"] == c)
        if message["seq"] not in seen:
            seen.add(message["seq"])
            shown.append(client_id)
        await receiver.send({"type": "delivered", "seqs": [message["seq"]]})
    return shown


@run_async
async def test_messages_after_a_restore_are_not_taken_for_repeats(
    make_server: Any, tmp_path: Path
) -> None:
    server = make_server()
    _, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    seen = SeenSeqs()  # bob's client, for the whole test
    a, b = await ws_connect(server, alice_token), await ws_connect(server, bob_token)
    assert await exchange(a, b, bob, ["before-1", "before-2"], seen) == ["before-1", "before-2"]
    backup = tmp_path / "backup.db"
    done = subprocess.run(
        [sys.executable, "-m", "chatd", "backup", str(backup), "--data-dir",
         str(server.data_dir), "--log-dir", str(tmp_path / "admin-logs")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lost = ["lost-1", "lost-2", "lost-3"]  # after the backup: gone with the restore
    assert await exchange(a, b, bob, lost, seen) == lost
    await a.close()
    await b.close()
    assert server.stop() == 0

    database = server.data_dir / "chatd.db"  # the documented restore
    for leftover in ("chatd.db-wal", "chatd.db-shm"):
        (server.data_dir / leftover).unlink(missing_ok=True)
    shutil.copyfile(backup, database)

    restarted = make_server(data_dir=server.data_dir)
    a, b = await ws_connect(restarted, alice_token), await ws_connect(restarted, bob_token)
    after = ["after-1", "after-2", "after-3", "after-4"]
    assert await exchange(a, b, bob, after, seen) == after
    await a.close()
    await b.close()
