"""The hub's side of the bus between nodes (:mod:`chatd.bus`).

:class:`Publisher` tells the other nodes what happened here (a no-op on a single node);
it is made before the hub, since :class:`chatd.hub.sessions.Sessions` publishes token
deaths. :class:`Bridge` acts on what the other nodes publish, for this node's
connections, through the parts that own each kind of event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from chatd import bus as busmod
from chatd.auth import RevocationCache
from chatd.hub.common import Tasks, log_store_error
from chatd.hub.messaging import Messaging
from chatd.hub.presence import Presence
from chatd.hub.receipts import Receipts
from chatd.hub.sessions import Sessions
from chatd.observe.logs import EventLogger
from chatd.store import Store, StoreError

log = EventLogger(logging.getLogger(__name__))


class Publisher:
    """Publishes bus events as background jobs (waited for at shutdown): the events of
    one loop turn in one job, a message and its receipt each make one, and at 1,000
    msg/s one job per event was a few percent of a core (issue 17). Nothing while no
    other node listens."""

    def __init__(self, bus: busmod.Bus | None = None) -> None:
        self.bus: busmod.Bus = bus or busmod.LocalBus()
        self.tasks = Tasks(asyncio.get_running_loop())
        self._pending: list[busmod.BusEvent] = []  # for the job already started

    @property
    def several_nodes(self) -> bool:
        """Whether other nodes may share this node's database (and hear its events)."""
        return not isinstance(self.bus, busmod.LocalBus)

    def publish(self, event: busmod.BusEvent) -> None:
        if self.bus.others_listening:
            if not self._pending:
                self.tasks.spawn(self._publish_pending())
            self._pending.append(event)

    async def _publish_pending(self) -> None:
        events, self._pending = self._pending, []
        await self.bus.publish_many(events)


class Bridge:
    """Other nodes' events, acted on for this node's connections."""

    def __init__(
        self,
        store: Store,
        tasks: Tasks,
        *,
        sessions: Sessions,
        messaging: Messaging,
        receipts: Receipts,
        presence: Presence,
        resync: Callable[[], None],
        on_store_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._spawn = tasks.spawn
        self._sessions = sessions
        self._messaging = messaging
        self._receipts = receipts
        self._presence = presence
        self._revocations: RevocationCache = sessions.revocations
        self._by_user = sessions.roster.by_user
        self._resync = resync  # push every local connection its undelivered messages again
        # the store was changed by another process (chatd.bus.StoreChanged), or such
        # notices may have been lost (a bus resync): the server polls for the changes
        self._on_store_changed = on_store_changed
        self._remote_seqs: list[int] = []  # MessageStored seqs from other nodes, to fetch
        self._remote_delivered: list[int] = []  # Delivered seqs for local senders, to fetch

    def on_event(self, event: busmod.BusEvent) -> None:
        """Something happened on another node: act for this node's connections."""
        match event:
            case busmod.MessageStored(recipient=recipient, sender=sender, seq=seq):
                self._presence.learn_peers(sender, recipient)
                if recipient in self._by_user or sender in self._by_user:
                    if not self._remote_seqs:
                        self._spawn(self._push_remote())
                    self._remote_seqs.append(seq)
            case busmod.Delivered(sender=sender, seqs=seqs):
                if sender in self._by_user:
                    if not self._remote_delivered:
                        self._spawn(self._remote_receipts())
                    self._remote_delivered.extend(seqs)
            case busmod.ReadUpTo(reader=reader, peer=peer, up_to=up_to, ts=ts):
                self._receipts.read_receipt(reader, peer, up_to, ts)
            case busmod.Typing(sender=sender, to=to):
                self._presence.typing_elsewhere(sender, to)
            case busmod.Presence(user=user, online=is_online):
                self._presence.changed_elsewhere(user, is_online)
            case busmod.PeersOnline(user=user, peers=peers):
                self._presence.peers_online_elsewhere(user, peers)
            case busmod.TokenRevoked(jti=jti, expires_at=expires_at):
                self._revocations.add(jti, expires_at)
                self._sessions.revoke_token(jti)
            case busmod.TokenRetired():
                retirement = event.retirement()
                if self._revocations.retire(retirement):
                    self._sessions.retire_token(retirement)
            case busmod.FamilyRevoked(family=family, expires_at=expires_at):
                if self._revocations.revoke_family(family, expires_at):
                    self._sessions.revoke_family(family)
            case busmod.UserRevoked(username=username):
                self._spawn(self._remote_user_change(username))
            case busmod.StoreChanged():
                self._on_store_changed()

    def resynced(self) -> None:
        """The bus listener reconnected: the events and change notices of the gap are
        lost, so push again what local users may have missed and look for changes."""
        self._resync()
        self._on_store_changed()

    async def _push_remote(self) -> None:
        await asyncio.sleep(0)  # gather every seq announced in this loop turn
        seqs, self._remote_seqs = self._remote_seqs, []
        try:
            messages = await self._store.messages_by_seq(seqs)
        except StoreError:
            # Announced but unreadable (a connection to the database died): catch the
            # local connections up instead, or these pushes wait for a reconnect.
            log.warning("bus.push_failed", count=len(seqs))
            self._resync()
            return
        for message in messages:
            self._messaging.push(message)

    async def _remote_receipts(self) -> None:
        await asyncio.sleep(0)  # gather every seq announced in this loop turn: one read
        seqs, self._remote_delivered = self._remote_delivered, []
        try:
            messages = await self._store.messages_by_seq(seqs)
        except StoreError:
            # Receipts are neither stored nor queued (the contract): the senders see
            # these messages delivered in their history.
            log_store_error(log, "remote_receipts", count=len(seqs))
            return
        marked = [m for m in messages if m.delivered_at]
        self._receipts.send_delivered_receipts(marked, 0, local_only=True)

    async def _remote_user_change(self, username: str) -> None:
        try:
            user = await self._store.user_by_name(username)
        except StoreError:
            log_store_error(log, "remote_user_change", user=username)
            self._on_store_changed()  # the look for changes closes what it must
            return
        if user is not None:
            self._sessions.revoke_user(user)
