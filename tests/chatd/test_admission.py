"""The socket budgets and address keys (chatd.admission), and keyed token buckets."""

from __future__ import annotations

import pytest

from chatd.admission import Admission, TrustedNetworks, address_key
from chatd.ratelimit import KeyedBuckets


class Socket:
    def __init__(self, name: str) -> None:
        self.name = name
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


def budgets(**kwargs: int) -> Admission:
    settings = {"max_connections": 10, "max_anonymous": 4, "max_anonymous_per_ip": 2}
    settings.update(kwargs)
    return Admission(trusted=TrustedNetworks(["127.0.0.1", "10.9.0.0/16"]), **settings)


def test_an_address_gets_its_share_of_anonymous_sockets() -> None:
    admission = budgets()
    first, second, third = Socket("1"), Socket("2"), Socket("3")
    assert admission.accept("192.0.2.1", "192.0.2.1", first) is None
    assert admission.accept("192.0.2.1", "192.0.2.1", second) is None
    assert admission.accept("192.0.2.1", "192.0.2.1", third) == "anonymous_per_ip"
    admission.signed_in("192.0.2.1", first)  # a hello: no longer anonymous
    assert admission.accept("192.0.2.1", "192.0.2.1", third) is None
    assert (admission.sockets, admission.anonymous) == (3, 2)
    admission.closed("192.0.2.1", first, anonymous=False)
    admission.closed("192.0.2.1", second, anonymous=True)
    assert (admission.sockets, admission.anonymous) == (1, 1)


def test_trusted_addresses_skip_the_per_address_cap_not_the_global_one() -> None:
    admission = budgets()
    sockets = [Socket(str(i)) for i in range(5)]
    for socket in sockets[:4]:
        assert admission.accept("10.9.3.4", "10.9.3.4", socket) is None
    assert admission.accept("10.9.3.4", "10.9.3.4", sockets[4]) == "anonymous"


def test_a_newcomer_evicts_the_oldest_socket_of_the_most_crowded_address() -> None:
    admission = budgets(max_anonymous_per_ip=3)
    flood = [Socket(f"f{i}") for i in range(3)]
    for socket in flood:
        assert admission.accept("198.51.100.7", "198.51.100.7", socket) is None
    assert admission.accept("203.0.113.1", "203.0.113.1", Socket("a")) is None  # 4 of 4
    newcomer = Socket("b")
    assert admission.accept("203.0.113.2", "203.0.113.2", newcomer) is None
    assert [socket.evicted for socket in flood] == [True, False, False]
    admission.closed("198.51.100.7", flood[0], anonymous=True)  # its close comes later
    assert (admission.sockets, admission.anonymous) == (4, 4)
    # two addresses holding one each: nobody is more crowded than a newcomer would be
    for socket in flood[1:]:
        admission.closed("198.51.100.7", socket, anonymous=True)
    admission.accept("203.0.113.3", "203.0.113.3", Socket("c"))
    admission.accept("203.0.113.4", "203.0.113.4", Socket("d"))
    assert admission.accept("203.0.113.5", "203.0.113.5", Socket("e")) == "anonymous"


def test_every_socket_counts_against_max_connections() -> None:
    admission = budgets(max_connections=2)
    one, two = Socket("1"), Socket("2")
    assert admission.accept("192.0.2.1", "192.0.2.1", one) is None
    admission.signed_in("192.0.2.1", one)
    assert admission.accept("192.0.2.2", "192.0.2.2", two) is None
    admission.signed_in("192.0.2.2", two)
    assert admission.accept("192.0.2.3", "192.0.2.3", Socket("3")) == "connections"


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("not an address", "not an address"),
    ],
)
def test_limits_key_on_the_ipv4_address_or_the_ipv6_64(ip: str, key: str) -> None:
    assert address_key(ip) == key


def test_trusted_networks() -> None:
    trusted = TrustedNetworks(["127.0.0.1", "::1", "10.0.0.0/8"])
    assert "127.0.0.1" in trusted and "::1" in trusted and "10.200.1.1" in trusted
    assert "::ffff:10.1.2.3" in trusted
    assert "127.0.0.2" not in trusted and "junk" not in trusted


def test_keyed_buckets_stay_bounded() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=2, max_keys=4)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0, 0, 1000]
    for key in "bcd":
        buckets.take(key, 0.0)
    buckets.take("e", 10.0)  # full: the refilled (idle) buckets go
    assert len(buckets) == 1
    for index in range(10):  # none idle: the oldest half goes
        buckets.take(f"k{index}", 10.0)
    assert len(buckets) <= 4
