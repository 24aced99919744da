"""Sends whose answers a fault test times: each one awaited to its ack or its error."""

from __future__ import annotations

import itertools
import time

from tests.chatd.clients import WsPeer


class AnsweredSender:
    """Numbered sends (``m1``, ``m2``...) from ``peer`` to ``to``, one at a time."""

    def __init__(self, peer: WsPeer, to: str, *, body: str = "x", timeout: float = 15.0) -> None:
        self.peer = peer
        self.to = to
        self.body = body
        self.timeout = timeout
        self._numbers = itertools.count(1)

    async def send(self) -> tuple[str, float]:
        """Send one: the answer's type (``ack`` or ``error``) and the seconds it took."""
        client_id = f"m{next(self._numbers)}"
        started = time.monotonic()
        await self.peer.send({"type": "send", "id": client_id, "to": self.to, "body": self.body})
        frame = await self.peer.recv(
            ("ack", "error"), timeout=self.timeout,
            where=lambda f: f.get("id", f.get("ref")) == client_id,
        )
        return str(frame["type"]), time.monotonic() - started
