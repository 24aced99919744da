"""Senders and receivers for the fault runs, each feeding a :class:`Tally`.

- :class:`AnsweredSender`: one send at a time, each awaited to its ack or its error.
- :class:`SteadySender`: numbered sends at a steady pace (or as fast as the window
  allows), every answer recorded with its arrival time.
- :class:`Receiver`: a recipient taking every push (and confirming it, if asked).
- :class:`OutboxSender`: a device writing through libchat's Outbox, so that after a
  reconnect what was never acked goes again under the same client id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from libchat import protocol
from libchat.outbox import MemoryOutboxStorage, Outbox
from tests.chatd.clients import WsPeer, ws_connect
from tests.chatd.server import ChatdProcess
from tests.faults.tally import Tally


class AnsweredSender:
    """Numbered sends (``<stem>1``, ``<stem>2``...) from ``peer`` to ``to``, one at a time."""

    def __init__(self, peer: WsPeer, to: str, *, body: str = "x", timeout: float = 15.0,
                 tally: Tally | None = None, stem: str = "m") -> None:
        self.peer = peer
        self.to = to
        self.body = body
        self.timeout = timeout
        self.tally = tally or Tally("unnamed")
        self.stem = stem
        self._numbers = itertools.count(1)

    async def send(self) -> tuple[str, float]:
        """Send one: the answer's type (``ack`` or ``error``) and the seconds it took."""
        client_id = f"{self.stem}{next(self._numbers)}"
        started = time.monotonic()
        self.tally.send(client_id)
        await self.peer.send({"type": "send", "id": client_id, "to": self.to, "body": self.body})
        frame = await self.peer.recv(
            ("ack", "error"), timeout=self.timeout,
            where=lambda f: f.get("id", f.get("ref")) == client_id,
        )
        self.tally.answer(frame)
        return str(frame["type"]), time.monotonic() - started


class SteadySender:
    """Sends ``<stem>-0``, ``<stem>-1``... from ``peer`` to ``to``, one every ``interval``
    seconds (0: as fast as answers come), at most ``window`` unanswered. Records every
    answer in ``tally`` and when each ack came (``acked_at``). :meth:`run` ends once
    :meth:`stop` was called and every send is answered, or when the connection closes."""

    def __init__(self, peer: WsPeer, to: str, stem: str, tally: Tally, *,
                 interval: float = 0.0, window: int = 8, body: str = "x") -> None:
        self.peer = peer
        self.to = to
        self.stem = stem
        self.tally = tally
        self.interval = interval
        self.window = window
        self.body = body
        self.sent: list[str] = []
        self.acked_at: dict[str, float] = {}
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        credit = asyncio.Semaphore(self.window)
        sender = asyncio.get_running_loop().create_task(self._send(credit))
        try:
            await self._answers(credit)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send(self, credit: asyncio.Semaphore) -> None:
        for index in itertools.count():
            await credit.acquire()
            if self._stopped.is_set():
                return
            client_id = f"{self.stem}-{index}"
            self.sent.append(client_id)
            self.tally.send(client_id)
            try:
                await self.peer.send({"type": "send", "id": client_id, "to": self.to,
                                      "body": self.body})
            except ConnectionClosed:  # the answers' loop sees the close and ends the run
                return
            if self.interval:
                await asyncio.sleep(self.interval)  # pacing a rate, not waiting for a state

    async def _answers(self, credit: asyncio.Semaphore) -> None:
        answered = 0
        while not (self._stopped.is_set() and answered >= len(self.sent)):
            try:
                frame = await self.peer.recv(("ack", "error"), timeout=0.2)
            except AssertionError:
                if self.peer.close_code is not None:
                    return
                continue  # nothing within 0.2 s: look at the stop flag again
            answered += 1
            self.tally.answer(frame)
            if frame["type"] == "ack":
                self.acked_at[frame["id"]] = time.monotonic()
            credit.release()


class Receiver:
    """A recipient's connection: takes every pushed message into ``tally``, noting when
    each arrived (``arrived_at``, the first time), and confirms it with ``delivered``
    when ``confirm``. :meth:`run` ends at :meth:`stop` (or when ``until`` is set) or when
    the connection closes."""

    def __init__(self, peer: WsPeer, tally: Tally, *, confirm: bool = True,
                 until: asyncio.Event | None = None) -> None:
        self.peer = peer
        self.tally = tally
        self.confirm = confirm
        self.arrived_at: dict[str, float] = {}
        self._stopped = until or asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                message = await self.peer.recv("message", timeout=0.2)
            except AssertionError:
                if self.peer.close_code is not None:
                    return
                continue
            self.arrived_at.setdefault(message["id"], time.monotonic())
            self.tally.receive(message)
            if self.confirm:
                try:
                    await self.peer.send({"type": "delivered", "seqs": [message["seq"]]})
                except ConnectionClosed:
                    return


class OutboxSender:
    """A device writing through libchat's Outbox: its sends go over whichever connection
    is up, and after a reconnect every unacked one goes again with its client id.
    Answers go to the outbox (errors too: transient ones are resent later) and to
    ``tally``; ``acks`` keeps every seq an ack gave each client id."""

    def __init__(self, token: str, tally: Tally, seed: int = 7) -> None:
        self.token = token
        self.tally = tally
        self.outbox = Outbox(MemoryOutboxStorage(), random.Random(seed))
        self.peer: WsPeer | None = None
        self.acks: dict[str, set[int]] = {}
        self._read = 0  # frames of the current connection already handled

    @property
    def connected(self) -> bool:
        return self.peer is not None and self.peer.ws.state is State.OPEN

    def submit(self, to: str, body: str) -> str:
        client_id = self.outbox.submit(to, body, time.monotonic()).client_id
        self.tally.send(client_id)
        return client_id

    async def connect(self, server: ChatdProcess) -> None:
        self.peer = await ws_connect(server, self.token)
        self._read = 0
        await self._send(self.outbox.on_connected(time.monotonic()))

    def disconnected(self) -> None:
        self.handle_frames()  # answers that arrived before the connection died still count
        self.outbox.on_disconnected()
        self.peer = None

    def handle_frames(self) -> None:
        """Feed the answers that arrived to the outbox and the tally."""
        if self.peer is None:
            return
        for frame in self.peer.frames[self._read:]:
            if frame["type"] == "ack":
                self.acks.setdefault(frame["id"], set()).add(frame["seq"])
                self.tally.answer(frame)
                self.outbox.on_ack(protocol.Ack(id=frame["id"], seq=frame["seq"], ts=frame["ts"]))
            elif frame["type"] == "error":
                self.tally.answer(frame)
                self.outbox.on_error(
                    protocol.Error(code=frame["code"], message=frame.get("message"),
                                   ref=frame.get("ref"),
                                   retry_after_ms=frame.get("retry_after_ms")),
                    time.monotonic(),
                )
        self._read = len(self.peer.frames)

    async def pump(self) -> None:
        self.handle_frames()
        await self._send(self.outbox.frames_due(time.monotonic()))

    async def _send(self, sends: list[protocol.Send]) -> None:
        assert self.peer is not None
        for frame in sends:
            try:
                await self.peer.send(orjson.loads(protocol.encode_frame(frame)))
            except ConnectionClosed:
                return  # in flight on a dead connection: resent after the reconnect
