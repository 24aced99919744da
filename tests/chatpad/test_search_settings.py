"""Searching the local cache with the server down, and signing out with "remove local
data": the real scenes against a real chatd, driven by posted events."""

from __future__ import annotations

import pygame
import pytest

from chatpad.scenes import (
    ConversationScene,
    ConversationsScene,
    LoginScene,
    SearchScene,
    SettingsScene,
)
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_screens import sign_up

pytestmark = pytest.mark.gui

TARGET = "Is the Café Müller still open on Sundays?"
FILLERS = 80  # newer messages after the target: it is not on the newest page


def scene_of(driver: Driver, kind: type) -> object:
    return driver.until(lambda: isinstance(driver.app.scene, kind) and driver.app.scene,
                        kind.__name__)


def test_search_offline_opens_the_message_in_place(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register().connect()
    carol = Peer(chatd.url, "carol").register().connect()
    driver = Driver(chatd.url)
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        bob.send_frame({"type": "send", "id": "target", "to": "alice", "body": TARGET})
        for n in range(FILLERS):
            bob.send_frame({"type": "send", "id": f"f{n}", "to": "alice",
                            "body": f"filler {n}"})
        driver.until(lambda: (s := driver.app.model.summary("bob"))
                     and s.preview == f"filler {FILLERS - 1}", "bob's messages cached")
        carol.send_frame({"type": "send", "id": "c1", "to": "alice",  # the newest
                          "body": "meet at the cafe? \"quotes\" and *stars*"})
        driver.until(lambda: driver.app.model.summary("carol"), "carol's message cached")
        chatd.stop()
        driver.until(lambda: driver.app.model.status.state != "connected", "offline")

        driver.key(pygame.K_f, pygame.KMOD_CTRL)  # from the list: every conversation
        search = scene_of(driver, SearchScene)
        assert isinstance(search, SearchScene) and search.peer is None
        driver.type("cafe")  # no accent typed: "Café" matches too
        driver.until(lambda: search.answered and len(search.hits) == 2, "two results")
        assert [h.item.peer for h in search.hits] == ["carol", "bob"]  # newest first
        assert ("Café", True) in search.hits[1].snippet  # the match is marked
        driver.type(' "*')  # query syntax is text: nothing found, nothing breaks
        driver.until(lambda: search.answered and search.text() == 'cafe "*', "answer")
        assert [h.item.peer for h in search.hits] == ["carol", "bob"]  # '"*' has no word
        search.entry.set_text("müller caf")
        driver.until(lambda: search.answered and len(search.hits) == 1, "one result")
        driver.key(pygame.K_DOWN)  # stays on the only row
        driver.key(pygame.K_RETURN)

        convo = scene_of(driver, ConversationScene)
        assert isinstance(convo, ConversationScene) and convo.peer == "bob"
        driver.until(lambda: convo.jump is not None and convo.jump.item is not None,
                     "scrolled to the result")
        target = convo.thread.find(TARGET)
        assert target is not None  # loaded from the cache: older than the newest page
        rect = convo.view.item_rect(target)
        assert rect is not None and convo.view.rect.contains(rect)
        assert not convo.view.at_bottom
        assert convo.thread.find(f"filler {FILLERS - 1}") is not None  # no gap below

        driver.type("a draft")
        driver.key(pygame.K_f, pygame.KMOD_CTRL)  # in a conversation: that one only
        search = scene_of(driver, SearchScene)
        assert isinstance(search, SearchScene) and search.peer == "bob"
        driver.type("CAFE")
        driver.until(lambda: search.answered and len(search.hits) == 1, "bob's only")
        assert search.hits[0].item.body == TARGET
        driver.key(pygame.K_ESCAPE)
        convo = scene_of(driver, ConversationScene)
        assert isinstance(convo, ConversationScene) and convo.text() == "a draft"
        driver.key(pygame.K_ESCAPE)
        scene_of(driver, ConversationsScene)
        driver.key(pygame.K_f, pygame.KMOD_CTRL)
        search = scene_of(driver, SearchScene)
        driver.key(pygame.K_ESCAPE)  # Escape closes the search
        scene_of(driver, ConversationsScene)
    finally:
        driver.close()
        bob.close()
        carol.close()


def test_sign_out_removing_local_data(chatd: ChatdProcess) -> None:
    bob = Peer(chatd.url, "bob").register().connect()
    driver = Driver(chatd.url)
    profile = driver.app.profile
    try:
        sign_up(driver, "alice")
        driver.until_connected()
        bob.send_frame({"type": "send", "id": "s1", "to": "alice", "body": "a secret"})
        driver.until(lambda: driver.app.model.summary("bob"), "bob's message cached")
        port = chatd.port
        chatd.stop()
        driver.until(lambda: driver.app.model.status.state != "connected", "offline")
        driver.app.open_conversation("bob")
        driver.type("never sent")
        driver.key(pygame.K_RETURN)
        driver.until(lambda: driver.app.model.status.outbox == 1, "one queued")
        driver.key(pygame.K_ESCAPE)
        scene_of(driver, ConversationsScene)

        driver.key(pygame.K_COMMA, pygame.KMOD_CTRL)
        settings = scene_of(driver, SettingsScene)
        assert isinstance(settings, SettingsScene)
        assert settings.folder == str(profile.folder)
        assert "1 message not sent yet stays queued" in settings.warning()[0]
        driver.click(settings.remove)
        assert settings.removing
        assert "will be deleted and never sent" in settings.warning()[0]
        assert profile.database.exists() and profile.session_file.exists()
        driver.click(settings.sign_out)

        scene_of(driver, LoginScene)
        driver.until(lambda: not any(p.exists() for p in profile.local_data_files()),
                     "local data deleted")
        driver.until(lambda: any("Local data removed" in text
                                 for _, text in driver.app.model.notices), "told so")

        chatd.start(port=port)  # signing in again starts a new, empty database
        sign_up(driver, "alice", create=False)
        scene_of(driver, ConversationsScene)
        driver.until_connected("connected again")
        assert profile.database.exists()
        driver.key(pygame.K_f, pygame.KMOD_CTRL)
        search = scene_of(driver, SearchScene)
        assert isinstance(search, SearchScene)
        driver.type("never")
        driver.until(lambda: search.answered, "an answer")
        assert search.hits == ()  # the queued message went with the outbox
    finally:
        driver.close()
        bob.close()
