"""Presence and typing, and the conversation-peer cache they both use.

Presence and typing go only to users one shares a conversation with: per user online on
this node the hub keeps the set of its conversation peers, loaded from the store once
and grown by every message pushed (local sends and other nodes' alike); it is dropped
with the user's last connection. Typing is rate-limited per connection and dropped
silently over its rate (it is ephemeral).

Across nodes (the bus): a node publishes a user's coming (its first connection there)
and going (its last); every other node tells that user's peers it holds, answers a
coming with the user's peers online there (``PeersOnline``), and answers a going with
a coming when the user still has a connection there. A first message from a user on
another node is answered with ``PeersOnline`` too: its recipient is online here.
Conversations are symmetric, so the peers here of a user coming or going elsewhere are
the users here whose peer sets hold it: the cache answers, indexed both ways on a node
that shares its database, without a store read (a thousand users reconnecting to one
node cost every other node two reads each). A user whose set is still loading announces
itself once it is loaded, and the answers to that tell it what it missed.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from chatd import bus as busmod
from chatd.hub.common import Common, log_store_error
from chatd.hub.online import Online
from chatd.observe.logs import EventLogger
from chatd.ratelimit import TokenBucket
from chatd.store import StoreError, User
from libchat import protocol
from libchat.protocol import PeerTyping, Typing

log = EventLogger(logging.getLogger(__name__))

PRESENCE_FRAMES_CACHED = 65_536  # encoded presence frames kept (two per user)
TYPING_RATE = 1.0  # typing frames per second per connection: clients send one every 3 s
TYPING_BURST = 5  # typing into a few conversations one after the other


@functools.lru_cache(maxsize=PRESENCE_FRAMES_CACHED)
def _presence_frame(user: str, online: bool) -> str:
    """A presence frame, encoded once for all who get it: a user coming online or going
    offline is told to each of its peers' connections (hundreds of frames for a user
    with many conversations, millions in a reconnect storm)."""
    return protocol.encode_frame(protocol.Presence(user=user, online=online))


def tell_presence(online: Online, user: str, is_online: bool) -> None:
    """Push a peer's presence unless this connection already has that state: a
    newcomer's snapshot of who is online can overlap the peer's own announcement."""
    sent = online.presence_sent
    if sent is None:
        online.presence_sent = sent = {}
    if sent.get(user) is not is_online:
        sent[user] = is_online
        online.session.send_text(_presence_frame(user, is_online))


class _Peers:
    """The usernames one online user shares a conversation with. Conversations are never
    deleted, so the set only grows: what the store said, plus every message pushed since
    the load began. ``loading`` is the future of the load until the store answered, then
    None (a finished future per online user cost 144 bytes to tell what None tells)."""

    __slots__ = ("loading", "names")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.names: set[str] = set()
        self.loading: asyncio.Future[None] | None = loop.create_future()


class Presence:
    """Who is told that whom is online, and typing forwarded to conversation peers."""

    def __init__(self, common: Common, *, several_nodes: bool = False) -> None:
        self._enabled = common.config.presence
        self._store = common.store
        self._roster = common.roster
        self._by_user = common.roster.by_user
        self._spawn = common.tasks.spawn
        self._publish = common.publish
        self._loop = common.loop
        self._peers: dict[str, _Peers] = {}  # per user online here: its conversation peers
        # a username -> the users here holding it; kept only where other nodes may tell
        # of users coming and going (a node alone would pay its memory for nothing)
        self._held_by: dict[str, set[str]] = {}
        self._indexed = several_nodes

    # --- presence ---------------------------------------------------------------------

    async def arrived(self, online: Online, first_device: bool) -> None:
        """A connection finished its catch-up: tell it who of its peers is online, and
        (for its user's first connection) tell them, here and on the other nodes."""
        if not self._enabled or not self._roster.is_current(online):
            return
        await self._announce(online, first_device)
        if first_device:
            self._publish(busmod.Presence(user=online.user.username, online=True))

    async def _announce(self, online: Online, first_device: bool) -> None:
        cache = self._peers_of(online.user)
        if cache.loading is not None:
            await cache.loading
        if not self._roster.is_current(online):
            return
        by_user = self._by_user
        username = online.user.username
        for peer in sorted(cache.names):
            peer_sessions = by_user.get(peer)
            if not peer_sessions:
                continue
            tell_presence(online, peer, True)
            if first_device:
                for other in peer_sessions:
                    tell_presence(other, username, True)
        if not first_device:
            self._copy_elsewhere(online)

    def _copy_elsewhere(self, online: Online) -> None:
        """Tell a user's further connection here which peers online on other nodes its
        first one was told of: the other nodes answered the user's first arrival here
        (:meth:`peers_online_elsewhere`), not this one's."""
        by_user = self._by_user
        for sibling in by_user.get(online.user.username, ()):
            if sibling is online or not sibling.presence_sent:
                continue
            for peer, is_online in list(sibling.presence_sent.items()):
                if is_online and peer not in by_user:
                    tell_presence(online, peer, True)
            return

    def left(self, user: User) -> None:
        """A user's last connection here closed: forget its peers, and tell them (here
        and on the other nodes) it is offline unless it comes back meanwhile."""
        cache = self._peers.get(user.username)
        loaded = cache.names if cache is not None and cache.loading is None else None
        self._drop_peers(user.username)
        if self._enabled:
            self._spawn(self._announce_offline(user, loaded))

    async def _announce_offline(self, user: User, peers: set[str] | None) -> None:
        """``peers``: the user's, from its cache; None when it never finished loading."""
        if user.username in self._by_user:  # came back meanwhile
            return
        self._publish(busmod.Presence(user=user.username, online=False))
        for peer in peers if peers is not None else await self._store.peers(user.id):
            for other in self._by_user.get(peer, ()):
                tell_presence(other, user.username, False)

    def changed_elsewhere(self, username: str, is_online: bool) -> None:
        """Another node says a user came online or went offline there. Offline there is
        not offline while the user has a connection here: its peers here are told
        nothing, and the other nodes, told offline too, are told online again."""
        if not self._enabled:
            return
        if not is_online and username in self._by_user:
            self._publish(busmod.Presence(user=username, online=True))
            return
        # Tell the user's peers here; a user come online is answered with those of its
        # peers online here, as a connection on this node would be told them.
        online_here: list[str] = []
        for peer in sorted(self._held_by.get(username, ())):
            peer_sessions = self._by_user.get(peer)
            if peer_sessions:
                online_here.append(peer)
                for other in peer_sessions:
                    tell_presence(other, username, is_online)
        if is_online and online_here:
            self._publish(busmod.PeersOnline(user=username, peers=tuple(online_here)))

    def peers_online_elsewhere(self, username: str, peers: tuple[str, ...]) -> None:
        """Another node answers a user's arrival here: these of its peers are online
        there. Its connections here are told (each state once)."""
        if self._enabled:
            for online in self._by_user.get(username, ()):
                for peer in peers:
                    tell_presence(online, peer, True)

    # --- typing -----------------------------------------------------------------------

    def typing(self, online: Online, frame: Typing) -> None:
        """Forward typing to a conversation peer. Dropped silently, as ephemeral signals
        are: typing to oneself, to anyone else, and over the connection's rate."""
        sender = online.user
        to = frame.to
        if to == sender.username:
            return
        now = self._loop.time()
        bucket = online.typing_bucket
        if bucket is None:
            bucket = online.typing_bucket = TokenBucket(TYPING_RATE, TYPING_BURST, now)
        if bucket.take(now):
            return
        peers = self._peers_of(sender)
        loading = peers.loading
        if loading is None:
            if to in peers.names:
                self._forward_typing(sender.username, to)
        else:
            self._spawn(self._typing_when_loaded(sender.username, to, peers, loading))

    async def _typing_when_loaded(
        self, sender: str, to: str, peers: _Peers, loading: asyncio.Future[None]
    ) -> None:
        await loading
        if to in peers.names:
            self._forward_typing(sender, to)

    def _forward_typing(self, sender: str, to: str) -> None:
        targets = self._by_user.get(to)
        if targets:
            signal = PeerTyping(sender=sender)
            for other in targets:
                other.session.send_frame(signal)
        self._publish(busmod.Typing(sender=sender, to=to))

    def typing_elsewhere(self, sender: str, to: str) -> None:
        """Another node forwards typing (it checked the peers there)."""
        for other in self._by_user.get(to, ()):
            other.session.send_frame(PeerTyping(sender=sender))

    # --- the peer cache ---------------------------------------------------------------

    def _peers_of(self, user: User) -> _Peers:
        """The conversation peers of a user online here; the first call loads them."""
        peers = self._peers.get(user.username)
        if peers is None:
            peers = self._peers[user.username] = _Peers(self._loop)
            self._spawn(self._load_peers(user, peers))
        return peers

    async def _load_peers(self, user: User, peers: _Peers) -> None:
        try:
            loaded = await self._store.peers(user.id)
            if self._peers.get(user.username) is peers:  # not gone meanwhile
                for peer in loaded:
                    self._add_peer(user.username, peers, peer)
        except StoreError:
            log_store_error(log, "peers", user=user.username)
            if self._peers.get(user.username) is peers:
                self._drop_peers(user.username)  # the next call loads again
        finally:
            loading, peers.loading = peers.loading, None
            if loading is not None:
                loading.set_result(None)

    def learn_peers(self, sender: str, recipient: str) -> None:
        """A message between two users was stored: they are conversation peers now.

        Presence is otherwise told only when a user comes or goes, so two users online
        when their first message is exchanged are told of each other here: the
        recipient that the sender is online (it has just sent over its WebSocket), the
        sender that the recipient is, if it is online here, or through the other nodes
        from the recipient's node. A connection is never told a state twice.
        """
        new_to_sender = self._learn(sender, recipient)
        new_to_recipient = self._learn(recipient, sender)
        if not self._enabled:
            return
        recipients = self._by_user.get(recipient)
        if not recipients:
            return
        if new_to_recipient is not False:
            for online in recipients:
                tell_presence(online, sender, True)
        senders = self._by_user.get(sender)
        if senders:
            if new_to_sender is not False:
                for online in senders:
                    tell_presence(online, recipient, True)
        elif new_to_recipient:  # the sender is on another node: tell it there, once
            self._publish(busmod.PeersOnline(user=sender, peers=(recipient,)))

    def _learn(self, user: str, peer: str) -> bool | None:
        """Add ``peer`` to the peers of ``user`` if they are cached: True when it was
        new, False when it was known, None when ``user`` has no cache here."""
        peers = self._peers.get(user)
        if peers is None:
            return None
        if peer in peers.names:
            return False
        self._add_peer(user, peers, peer)
        return True

    def _add_peer(self, user: str, peers: _Peers, peer: str) -> None:
        """Add ``peer`` to the set of ``user`` (online here), and to the index."""
        peers.names.add(peer)
        if not self._indexed:
            return
        holders = self._held_by.get(peer)
        if holders is None:
            self._held_by[peer] = {user}
        else:
            holders.add(user)

    def _drop_peers(self, user: str) -> None:
        """Forget the set of ``user`` (gone from here, or its load failed)."""
        peers = self._peers.pop(user, None)
        if peers is None or not self._indexed:
            return
        for peer in peers.names:
            holders = self._held_by.get(peer)
            if holders is not None:
                holders.discard(user)
                if not holders:
                    del self._held_by[peer]
