"""The real screens against a real chatd, driven by posted keyboard and mouse events."""

from __future__ import annotations

import pygame
import pytest

from chatpad.scenes import ConversationScene, ConversationsScene, LoginScene
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer

pytestmark = pytest.mark.gui

PASSWORD = "correct-horse-9"


def sign_up(driver: Driver, username: str, create: bool = True) -> None:
    scene = driver.app.scene
    assert isinstance(scene, LoginScene)
    driver.click(scene.username)
    driver.type(username)
    driver.key(pygame.K_TAB)  # keyboard navigation: username -> password
    assert scene.password.is_focused
    driver.type(PASSWORD)
    driver.click(scene.create if create else scene.sign_in)


def test_sign_up_chat_receipts_and_history(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register()
    bob.connect()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until(lambda: isinstance(driver.app.scene, ConversationsScene), "sign-up")
        driver.until_connected()
        # bob writes 200 messages before alice opens the conversation
        for n in range(200):
            bob.send_frame({"type": "send", "id": f"b{n}", "to": "alice", "body": f"old {n}"})
        for _ in range(200):
            bob.recv_until(lambda f: f["type"] == "ack")
        # find bob with the "new conversation" box and open it
        scene = driver.app.scene
        assert isinstance(scene, ConversationsScene)
        driver.click(scene.search)
        driver.type("bo")
        driver.until(lambda: scene.list.users == ("bob",), "user search")
        driver.click(scene.list.row_rect(0))
        convo = driver.until(lambda: isinstance(driver.app.scene, ConversationScene)
                             and driver.app.scene, "conversation opens")
        assert isinstance(convo, ConversationScene)
        thread = convo.thread
        driver.until(lambda: thread.find("old 199"), "newest page")
        # send: Enter sends, Shift+Enter makes a new line, emoji are fine
        driver.type("hi bob 👋")
        driver.key(pygame.K_RETURN, pygame.KMOD_SHIFT)
        driver.type("second line")
        driver.key(pygame.K_RETURN)
        body = "hi bob 👋\nsecond line"
        mine = driver.until(lambda: thread.find(body), "my message shown")
        assert mine.mine and convo.text() == ""
        driver.until(lambda: thread.find(body).status in ("sent", "delivered"), "ack")
        push = bob.recv_until(lambda f: f["type"] == "message" and f["from"] == "alice")
        assert push["body"] == body
        bob.send_frame({"type": "delivered", "seqs": [push["seq"]]})
        driver.until(lambda: thread.find(body).status == "delivered", "delivered receipt")
        bob.send_frame({"type": "read", "peer": "alice", "up_to": push["seq"]})
        driver.until(lambda: thread.find(body).status == "read", "read receipt")
        # receive
        bob.send_frame({"type": "send", "id": "live-1", "to": "alice", "body": "ça va? 😀"})
        driver.until(lambda: thread.find("ça va? 😀"), "push shown")
        # alice has the conversation open, so chatpad confirms delivery and reads it
        bob.recv_until(lambda f: f["type"] == "receipt" and f["status"] == "read")
        # scroll back to the very first of the 200 old messages: older pages load on the way
        def scrolled_to_the_top() -> bool:
            driver.wheel(40)
            return convo.view.top == 0 and not thread.has_more

        driver.until(scrolled_to_the_top, "scrolled through all history", timeout=60)
        bodies = [item.body for item in thread.items if item.body.startswith("old ")]
        assert bodies == [f"old {n}" for n in range(200)]
        first = thread.find("old 0")
        assert first is not None
        rect = convo.view.item_rect(first)
        assert rect is not None and convo.view.rect.colliderect(rect)  # on screen
    finally:
        driver.close()
        bob.close()


def test_restart_goes_straight_in_and_sign_out_clears_the_token(chatd: ChatdProcess) -> None:
    Peer(chatd.url, "alice", PASSWORD).register()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice", create=False)
        driver.until_connected("signed in")
        session_file = driver.app.profile.session_file
        assert session_file.exists()
    finally:
        driver.close()
    driver = Driver(chatd.url)
    try:
        assert isinstance(driver.app.scene, ConversationsScene)  # no sign-in screen
        driver.until_connected("reconnected")
        scene = driver.app.scene
        driver.click(scene.sign_out)
        driver.until(lambda: isinstance(driver.app.scene, LoginScene), "sign-in screen")
        assert not session_file.exists()
        # the worker reports its status after the sign-out, in a turn of its own
        driver.until(lambda: driver.app.model.status.state == "signed_out", "signed-out status")
    finally:
        driver.close()
    driver = Driver(chatd.url)
    try:
        assert isinstance(driver.app.scene, LoginScene)
    finally:
        driver.close()


def test_unread_badge_and_keyboard_open(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register().connect()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        scene = driver.app.scene
        assert isinstance(scene, ConversationsScene)
        for n in range(3):
            bob.send_frame({"type": "send", "id": f"u{n}", "to": "alice", "body": f"psst {n}"})
        summary = driver.until(lambda: (s := driver.app.model.summary("bob")) and s.unread == 3
                               and s, "three unread from bob")
        assert summary.preview == "psst 2" and not summary.mine
        driver.key(pygame.K_DOWN)  # keyboard: select the first row and open it
        driver.key(pygame.K_UP)
        driver.key(pygame.K_RETURN)
        convo = driver.until(lambda: isinstance(driver.app.scene, ConversationScene)
                             and driver.app.scene, "conversation opens")
        driver.until(lambda: convo.thread.find("psst 2"), "messages shown")
        bob.recv_until(lambda f: f["type"] == "receipt" and f["status"] == "read"
                       and f["up_to"] >= 1)
        # typing signals, both ways
        bob.send_frame({"type": "typing", "to": "alice"})
        driver.until(lambda: convo.activity() == "typing…", "bob is typing")
        driver.type("x")
        bob.recv_until(lambda f: f["type"] == "typing" and f["from"] == "alice")
        convo.input.set_text("")
        driver.key(pygame.K_ESCAPE)
        driver.until(lambda: isinstance(driver.app.scene, ConversationsScene), "back")
        assert driver.app.model.summary("bob").unread == 0
        # unread counts come from the server too: alice's other device sees none
        status, body = bob.http("GET", "/v1/conversations", token=bob.token)
        assert status == 200 and body["conversations"][0]["peer"] == "alice"
    finally:
        driver.close()
        bob.close()
