"""The header's "online" follows the truth: it shows for a peer connected before the
conversation opened, and goes when chatpad itself loses the server."""

from __future__ import annotations

import pytest

from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_offline import open_bob
from tests.chatpad.test_screens import sign_up

pytestmark = pytest.mark.gui


def test_online_for_a_peer_already_connected_and_not_while_disconnected(
        chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register().connect()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        # both are connected before their conversation exists, and before it opens
        bob.send_frame({"type": "send", "id": "hi", "to": "alice", "body": "hi alice"})
        convo = open_bob(driver)
        driver.until(lambda: convo.thread.find("hi alice"), "bob's message")
        driver.until(lambda: convo.activity() == "online", "bob shown online")

        chatd.stop()  # alice's chatpad loses the server; bob's presence is unknown now
        driver.until(lambda: driver.app.model.status.state != "connected", "disconnected")
        driver.step(2)
        assert convo.activity() == ""
    finally:
        driver.close()
        bob.close()


def test_online_for_a_peer_connected_before_me(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register().connect()
    alice = Peer(chatd.url, "alice", "correct-horse-9").register().connect()
    alice.send_frame({"type": "send", "id": "hi", "to": "bob", "body": "hi bob"})
    alice.recv_until(lambda f: f["type"] == "ack")
    alice.close()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice", create=False)
        convo = open_bob(driver)
        driver.until(lambda: convo.activity() == "online", "bob shown online")
    finally:
        driver.close()
        bob.close()
