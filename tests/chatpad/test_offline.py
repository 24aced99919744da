"""End to end: a message written while chatd is down survives closing chatpad, is sent
when the server is back, reaches the recipient exactly once, and shows sent, delivered."""

from __future__ import annotations

import time
from pathlib import Path

import pygame
import pytest

from chatpad.scenes import ConversationScene, ConversationsScene
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_screens import PASSWORD, sign_up

pytestmark = pytest.mark.gui

BODY = "written offline ✈️"


def open_bob(driver: Driver) -> ConversationScene:
    scene = driver.until(lambda: isinstance(driver.app.scene, ConversationsScene)
                         and driver.app.scene, "conversation list")
    driver.until(lambda: "bob" in scene.list.peers(), "bob in the list")
    driver.click(scene.list.row_rect(scene.list.peers().index("bob")))
    convo = driver.until(lambda: isinstance(driver.app.scene, ConversationScene)
                         and driver.app.scene, "conversation opens")
    assert isinstance(convo, ConversationScene)
    return convo


def test_offline_send_survives_restart_and_arrives_once(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        bob.connect()
        bob.send_frame({"type": "send", "id": "hello-1", "to": "alice", "body": "hi alice"})
        convo = open_bob(driver)
        driver.until(lambda: convo.thread.find("hi alice"), "bob's message")

        port = chatd.port
        chatd.stop()
        bob.close()
        driver.until(lambda: driver.app.model.status.state != "connected", "disconnect")
        driver.type(BODY)
        driver.key(pygame.K_RETURN)
        item = driver.until(lambda: convo.thread.find(BODY), "queued message shown")
        assert item.status == "queued"
        driver.until(lambda: driver.app.model.status.outbox == 1, "outbox count 1")
        assert driver.app.banner_text() is not None
    finally:
        driver.close()

    # chatpad starts again with the server still down: straight in, message still queued
    driver = Driver(chatd.url)
    try:
        assert isinstance(driver.app.scene, ConversationsScene)
        driver.until(lambda: driver.app.model.status.state == "reconnecting", "reconnecting")
        assert driver.app.model.status.outbox == 1
        convo = open_bob(driver)
        item = driver.until(lambda: convo.thread.find(BODY), "cached queued message")
        assert item.status == "queued"
        assert convo.thread.find("hi alice") is not None  # history readable offline

        chatd.start(port=port)
        driver.until(lambda: convo.thread.find(BODY).status == "sent", "sent", timeout=30)
        assert driver.app.model.status.outbox == 0

        bob.login().connect()
        push = bob.recv_until(lambda f: f["type"] == "message" and f["body"] == BODY)
        bob.send_frame({"type": "delivered", "seqs": [push["seq"]]})
        driver.until(lambda: convo.thread.find(BODY).status == "delivered", "delivered")

        status, page = bob.http("GET", "/v1/conversations/alice/messages?limit=200",
                                token=bob.token)
        assert status == 200
        assert [m["body"] for m in page["messages"]].count(BODY) == 1
        assert [i.body for i in convo.thread.items].count(BODY) == 1
    finally:
        driver.close()
        bob.close()


def test_sign_in_errors_are_specific(chatd: ChatdProcess) -> None:
    Peer(chatd.url, "carol").register()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "carol", create=True)  # taken
        scene = driver.app.scene
        driver.until(lambda: "taken" in scene.error_text, "username taken")
        scene.password.set_text("")
        driver.click(scene.password)
        driver.type("wrong-password")
        driver.click(scene.sign_in)
        driver.until(lambda: "Wrong username or password" in scene.error_text, "bad password")
        for _ in range(8):  # the login limit: 5 failures from one address, then 429
            driver.click(scene.sign_in)
            driver.until(lambda: not scene.busy, "an answer")
            if "Too many attempts" in scene.error_text:
                break
        assert "Too many attempts. Try again in" in scene.error_text  # with a countdown
        assert not scene.sign_in.is_enabled
        scene.username.set_text("x")
        scene.password.set_text(PASSWORD)
        driver.click(scene.create)
        driver.until(lambda: "Usernames are" in scene.error_text, "invalid username")
        scene.username.set_text("dave")
        scene.password.set_text("short")
        driver.click(scene.create)
        driver.until(lambda: "password needs" in scene.error_text, "weak password")
    finally:
        driver.close()


def test_unreachable_server(tmp_path: object) -> None:
    driver = Driver("http://127.0.0.1:9")  # discard port: nothing listens
    try:
        sign_up(driver, "erin", create=False)
        scene = driver.app.scene
        driver.until(lambda: "cannot be reached" in scene.error_text, "unreachable")
    finally:
        driver.close()


def test_token_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    """With 4-second tokens, chatpad refreshes at 3 s and reauths its WebSocket, so the
    connection outlives the first token and messages still flow."""
    server = ChatdProcess(tmp_path / "ttl-data", tmp_path / "ttl-logs",
                          "--token-ttl", "4").start()
    bob = Peer(server.url, "bob").register()
    driver = Driver(server.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        first = driver.app.profile.load_session()
        assert first is not None
        driver.until(lambda: (s := driver.app.profile.load_session()) is not None
                     and s.token != first.token, "a refreshed token")
        driver.until(lambda: time.time() > first.expires_at + 1, "the first token expired",
                     timeout=10)
        assert driver.app.model.status.state == "connected"
        bob.login().connect()
        bob.send_frame({"type": "send", "id": "after-expiry", "to": "alice", "body": "still?"})
        driver.until(lambda: (s := driver.app.model.summary("bob")) and s.unread == 1,
                     "a push after the first token expired")
    finally:
        driver.close()
        bob.close()
        server.stop()
