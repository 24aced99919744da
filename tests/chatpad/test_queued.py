"""Issue 14, bug 7: a message written while chatd is down keeps the time it was written
at once the server takes it, and the conversation list shows it is still queued."""

from __future__ import annotations

import pygame
import pytest

from chatpad import messages as m
from chatpad.items import Summary
from chatpad.scenes import ConversationScene, ConversationsScene
from chatpad.ui.conversation_list import is_queued, stamp, when
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_screens import sign_up

pytestmark = pytest.mark.gui

BODY = "written while the server was down"


def test_a_queued_message_keeps_its_time_and_the_list_shows_it_queued(
        chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        driver.app.open_conversation("bob")
        convo = driver.app.scene
        assert isinstance(convo, ConversationScene)
        port = chatd.port
        chatd.stop()
        driver.until(lambda: driver.app.model.status.state != "connected", "disconnect")
        driver.type(BODY)
        driver.key(pygame.K_RETURN)
        queued = driver.until(lambda: convo.thread.find(BODY), "queued message shown")
        assert queued.status == "queued"
        written_at = queued.ts

        driver.key(pygame.K_ESCAPE)  # to the list: its last message is still queued
        scene = driver.until(lambda: isinstance(driver.app.scene, ConversationsScene)
                             and driver.app.scene, "conversation list")
        row = driver.until(lambda: driver.app.model.summary("bob"), "bob's row")
        assert row.preview == BODY and is_queued(row) and stamp(row) == "Queued"
        assert scene.list.peers() == ["bob"]

        chatd.start(port=port)
        row = driver.until(lambda: (s := driver.app.model.summary("bob")) and not is_queued(s)
                           and s, "sent: the row is no longer queued", timeout=30)
        assert stamp(row) == when(row.ts)
        sent = driver.app.model.thread("bob").find(BODY)
        assert sent is not None and sent.status == "sent"
        assert sent.ts == written_at  # the bubble's time: when it was written

        status, page = bob.login().http("GET", "/v1/conversations/alice/messages",
                                        token=bob.token)
        assert status == 200
        server_ts = [msg["ts"] for msg in page["messages"] if msg["body"] == BODY]
        assert server_ts and server_ts[0] > written_at  # so the test shows a difference
    finally:
        driver.close()
        bob.close()


def test_a_message_refused_for_good_shows_not_sent_in_the_list_and_its_bubble(
        chatd: ChatdProcess) -> None:
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        driver.app.submit(m.Post(peer="nobody", body="to a user who does not exist"))
        model = driver.app.model

        def row() -> Summary | None:
            return next((s for s in model.conversations if s.peer == "nobody"), None)

        driver.until(lambda: (r := row()) is not None and r.failed, "the row says not sent")
        summary = row()
        assert summary is not None
        assert not is_queued(summary)
        assert stamp(summary) == "Not sent"
        # and its bubble says so too ("Not sent", red), read back from the local history
        driver.app.open_conversation("nobody")
        thread = model.thread("nobody")
        driver.until(lambda: (i := thread.find("to a user who does not exist"))
                     and i.status == "failed", "the bubble says not sent")
    finally:
        driver.close()
