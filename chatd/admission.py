"""Who may hold a socket before saying who they are: the pre-authentication budgets.

Every socket is counted from the moment it is accepted. Until it says a valid hello it is
*anonymous*, and anonymous sockets are capped per client address and in all, the global
cap well below ``--max-connections``: a flood of anonymous sockets (bare upgrades, idle
TCP, slowloris) runs into its own budget and leaves room for signed-in users. Plain HTTP
connections never say hello, so they stay anonymous for their whole (short) life.

Client addresses are counted by :func:`address_key`: an IPv4 address, or the /64 network
of an IPv6 address (a client holds a whole /64 and could rotate through it). Trusted
addresses (``--trusted-ip``) are exempt from the per-address caps, never from the global
ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final, Protocol

__all__ = ["Admission", "Evictable", "TrustedNetworks", "address_key"]

IPV6_PREFIX: Final = 64  # one IPv6 subscriber gets a /64: limits key on it


def address_key(ip: str) -> str:
    """The key the per-address limits count ``ip`` under: IPv4 as it is (IPv4-mapped IPv6
    too), IPv6 as its /64 network. Anything unparsable (never from a real socket) as is."""
    if ":" not in ip:  # IPv4 as a socket reports it: already canonical (every accept)
        return ip
    address = _parsed(ip)
    if address is None:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def _parsed(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``ip`` as an address, an IPv4-mapped IPv6 one as IPv4; None if it is not one."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedNetworks:
    """The addresses and networks given to ``--trusted-ip``."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
        self._seen: dict[str, bool] = {}

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        known = self._seen.get(ip)
        if known is None:
            address = _parsed(ip)
            known = address is not None and any(address in net for net in self._networks)
            if len(self._seen) >= 4096:  # a cache of recent answers, not a record
                self._seen.clear()
            self._seen[ip] = known
        return known


class Evictable(Protocol):
    """An anonymous socket, as the budgets see it."""

    def evict(self) -> None:
        """Close at once: a newcomer from a less crowded address takes the slot."""


class Admission:
    """The socket budgets: every socket, anonymous sockets in all, and per address.

    ``accept`` counts a new socket as anonymous (or names the budget it would exceed);
    ``signed_in`` moves it out of the anonymous budgets once its hello is accepted;
    ``closed`` forgets it.

    When the anonymous sockets in all are at their cap, a newcomer does not simply lose:
    the oldest anonymous socket of the address holding the most is evicted for it, as
    long as that address holds more than the newcomer's would. A flood from a few
    addresses therefore cannot keep anybody else from signing in.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        max_anonymous: int,
        max_anonymous_per_ip: int,
        trusted: TrustedNetworks,
    ) -> None:
        self.max_connections = max_connections
        self.max_anonymous = max_anonymous
        self.max_anonymous_per_ip = max_anonymous_per_ip
        self._trusted = trusted
        self.sockets = 0
        self.anonymous = 0
        # per address key, its anonymous sockets, oldest first (a dict as an ordered set)
        self._anonymous_by_key: dict[str, dict[Evictable, None]] = {}

    def accept(self, ip: str, key: str, socket: Evictable) -> str | None:
        """Count a new ``socket`` from ``ip`` (``key``: its :func:`address_key`) as
        anonymous; or, when a budget is full, the budget's name (``connections``,
        ``anonymous``, ``anonymous_per_ip``) and count nothing."""
        held = self._anonymous_by_key.get(key)
        count = 0 if held is None else len(held)
        if count >= self.max_anonymous_per_ip and ip not in self._trusted:
            return "anonymous_per_ip"
        if self.anonymous >= self.max_anonymous and not self._evict_for(count + 1):
            return "anonymous"
        if self.sockets >= self.max_connections and not self._evict_for(count + 1):
            return "connections"
        if held is None:
            held = self._anonymous_by_key[key] = {}
        held[socket] = None
        self.anonymous += 1
        self.sockets += 1
        return None

    def signed_in(self, key: str, socket: Evictable) -> None:
        """An accepted anonymous socket said a valid hello."""
        self._release_anonymous(key, socket)

    def closed(self, key: str, socket: Evictable, *, anonymous: bool) -> None:
        """An accepted socket closed (``anonymous``: it never signed in)."""
        if anonymous and not self._release_anonymous(key, socket):
            return  # evicted: already forgotten
        self.sockets -= 1

    def _evict_for(self, newcomer_count: int) -> bool:
        """Evict the oldest anonymous socket of the most crowded address, if it holds more
        than ``newcomer_count``. True when a slot was freed."""
        if not self._anonymous_by_key:
            return False
        key, held = max(self._anonymous_by_key.items(), key=lambda item: len(item[1]))
        if len(held) <= newcomer_count:
            return False
        oldest = next(iter(held))
        self._release_anonymous(key, oldest)
        self.sockets -= 1
        oldest.evict()
        return True

    def _release_anonymous(self, key: str, socket: Evictable) -> bool:
        held = self._anonymous_by_key.get(key)
        if held is None or held.pop(socket, False) is False:
            return False
        self.anonymous -= 1
        if not held:
            del self._anonymous_by_key[key]
        return True
