"""The hub's facade: routes each connection's frames to the part that owns them.

The parts, one job each: :mod:`~chatd.hub.sessions` (who is online, hellos, tokens),
:mod:`~chatd.hub.messaging` (send -> commit -> ack -> push), :mod:`~chatd.hub.catchup`
(what a new connection missed), :mod:`~chatd.hub.receipts` (delivered and read marks),
:mod:`~chatd.hub.presence` (presence, typing) and :mod:`~chatd.hub.bridge` (the other
nodes). They get their collaborators here, in their constructors; none imports another
that imports it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from chatd.accounts import Accounts
from chatd.bus import BusEvent
from chatd.config import Config
from chatd.hub.bridge import Bridge, Publisher
from chatd.hub.catchup import CatchUp, PushFailures
from chatd.hub.common import Common, Tasks
from chatd.hub.messaging import Messaging
from chatd.hub.online import Online, Session
from chatd.hub.presence import Presence
from chatd.hub.receipts import Receipts
from chatd.hub.sessions import Sessions, SignIn
from chatd.observe.metrics import Metrics
from chatd.store import Retirement, Store, User
from chatd.turn import LoopTurn
from chatd.users import UserDirectory
from libchat.events import SendRefused
from libchat.protocol import Delivered, Hello, Read, Reauth, Send, Typing


class Hub:
    """Who is online on which connections, and everything that moves between them.

    ``sessions`` (the roster, and the listener of token deaths that
    :class:`~chatd.accounts.Accounts` was given) and ``publisher`` are made before
    ``accounts``; the hub builds the other parts around them.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        users: UserDirectory,
        accounts: Accounts,
        metrics: Metrics,
        *,
        sessions: Sessions,
        publisher: Publisher,
        turn: LoopTurn,
        on_store_changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._turn = turn
        self._tasks = Tasks(loop)
        self._publisher = publisher
        self._sessions = sessions
        common = Common(
            config=config, store=store, users=users, metrics=metrics, roster=sessions.roster,
            tasks=self._tasks, publish=publisher.publish, clock=clock, loop=loop,
        )
        self._signin = SignIn(common, accounts, sessions, welcomed=self._welcomed,
                              receive=self.receive)
        self._presence = Presence(common, several_nodes=publisher.several_nodes)
        # Messaging first: its batch of a loop turn's sends runs before the receipts'
        # batch of delivered marks, so a turn keeps each connection's frame order.
        self._messaging = Messaging(common, turn, learn_peers=self._presence.learn_peers)
        self._failures = PushFailures(common)
        self._catch_up = CatchUp(common, self._failures)
        self._receipts = Receipts(common, turn, self._failures)
        self._bridge = Bridge(
            store, self._tasks, sessions=sessions, messaging=self._messaging,
            receipts=self._receipts, presence=self._presence,
            resync=self.resync, on_store_changed=on_store_changed,
        )
        self._pending = self._signin.pending
        self._by_session = sessions.roster.by_session
        self._stopping = False  # shutting down: sends are refused, not accepted

    # --- frames -----------------------------------------------------------------------

    def receive(self, session: Session, frames: list[object]) -> None:
        """Handle the frames one read produced, in order. Sends and delivered marks are
        grouped: every connection's of one loop turn go to the store together."""
        pending = self._pending.get(session.conn_id)
        if pending is not None:  # a hello is being checked: keep order
            pending.extend(frames)
            return
        online = self._by_session.get(session.conn_id)
        if online is None:
            self._before_welcome(session, frames)
            return
        sends: list[Send] = []
        seqs: list[int] = []
        for frame in frames:
            # (no Hello here: the engine refuses a second one itself, libchat.server)
            if isinstance(frame, Send):
                if self._stopping:
                    self._messaging.refuse_for_shutdown(online, frame.id)
                else:
                    sends.append(frame)
            elif isinstance(frame, Delivered):
                seqs.extend(frame.seqs)
            elif isinstance(frame, Read):
                self._receipts.read(online, frame)
            elif isinstance(frame, Typing):
                self._presence.typing(online, frame)
            elif isinstance(frame, Reauth):
                self._signin.reauth(online, frame)
            elif isinstance(frame, SendRefused):
                self._messaging.reject(online, frame.id, frame.code, frame.message)
        if sends:
            self._messaging.accept(online, sends)
        if seqs:
            self._receipts.delivered(online, seqs)

    def _before_welcome(self, session: Session, frames: list[object]) -> None:
        """The engine hands frames over only from the hello on: check it, then handle
        the frames after it once the connection is welcomed."""
        for index, frame in enumerate(frames):
            if isinstance(frame, Hello):
                self._signin.hello(session, frame, frames[index + 1 :])
                return

    def _welcomed(self, online: Online, first_device: bool) -> None:
        self._tasks.spawn(self._serve(online, first_device))

    async def _serve(self, online: Online, first_device: bool) -> None:
        """Catch a connection up, then tell it (and its peers) who is online."""
        await self._catch_up.run(online)
        await self._presence.arrived(online, first_device)

    def disconnected(self, session: Session, cause: str = "closed") -> None:
        """A session's connection is gone; ``cause`` says why (for the log)."""
        self._signin.forget(session.conn_id)
        online, last_device = self._sessions.remove(session.conn_id)
        if online is None:
            return
        if online.unconfirmed:
            self._failures.closed_with_unconfirmed(online, cause)
        if last_device:
            self._presence.left(online.user)

    def resync(self) -> None:
        """The bus lost events: send every local connection its undelivered messages
        again (clients drop repeats by seq)."""
        for online in list(self._by_session.values()):
            if not online.catching_up:
                online.catching_up = True
                self._tasks.spawn(self._serve(online, first_device=False))

    # --- shutdown ---------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Shutdown begins: every send from now on gets ``internal_error`` (send it again,
        to another node or after the restart) instead of being accepted."""
        self._stopping = True

    def refuse_uncommitted(self) -> None:
        """Shutdown, once the grace for commits is over: every send still waiting for its
        commit gets its error now, before the connections close. (If the commit lands
        after all, a resend gets the original ack.)"""
        self._messaging.refuse_uncommitted()

    async def wait_idle(self) -> None:
        """Wait for every in-flight operation (sends awaiting their commit, receipts)."""
        running, publishing = self._tasks.running, self._publisher.tasks.running
        while running or publishing or self._turn.pending:
            await asyncio.sleep(0)  # let this turn's sends reach the store
            if running or publishing:
                # asyncio.wait, not gather: a caller's timeout must not cancel them (the
                # sends among them are answered by refuse_uncommitted)
                await asyncio.wait(running | publishing)

    # --- tokens (other processes' changes, seen by the server's poll) -----------------

    def revoke_token(self, jti: str) -> None:
        self._sessions.revoke_token(jti)

    def revoke_user(self, user: User) -> None:
        self._sessions.revoke_user(user)

    def retire_token(self, retirement: Retirement) -> None:
        self._sessions.retire_token(retirement)

    def revoke_family(self, family: str) -> None:
        self._sessions.revoke_family(family)

    # --- other nodes ------------------------------------------------------------------

    async def start_bus(self) -> None:
        await self._publisher.bus.start(self.on_bus_event, on_resync=self._bridge.resynced)

    async def close_bus(self) -> None:
        await self._publisher.bus.close()

    def on_bus_event(self, event: BusEvent) -> None:
        """Something happened on another node: act for this node's connections."""
        self._bridge.on_event(event)
