"""Issue 14, bug 4: the reconnect banner wraps and takes room of its own, and the window
keeps a minimum size instead of being recreated. Offline: the real scenes, no server."""

from __future__ import annotations

import time
from typing import Any

import pygame
import pytest

from chatpad import messages as m
from chatpad.app import MIN_SIZE, App
from chatpad.items import ChatItem
from chatpad.scenes import ConversationScene, ConversationsScene, LoginScene

pytestmark = pytest.mark.gui



def signed_in_with_history(app: App, messages: int = 60) -> None:
    app.apply(m.SignedIn(server="http://x", username="alice"))
    now = int(time.time() * 1000)
    items = tuple(ChatItem(peer="bob", sender="bob", id=f"b{n}", seq=n + 1,
                           body=f"message {n}", ts=now - (messages - n) * 1000, status="",
                           mine=False) for n in range(messages))
    app.apply(m.Page(peer="bob", items=items, has_more=False, older=False))
    app.apply(m.Status(state="connected", retry_at=None, outbox=0))


def outage(app: App) -> None:
    app.apply(m.Status(state="reconnecting", retry_at=time.monotonic() + 30, outbox=3))


def test_banner_wraps_when_narrow_and_never_covers_messages(app: App) -> None:
    signed_in_with_history(app)
    app.window.size = MIN_SIZE
    app.open_conversation("bob")
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    app.step(1 / 60)
    full_view = scene.view.rect.copy()
    newest = scene.thread.find("message 59")
    assert newest is not None
    outage(app)
    app.step(1 / 60)
    app.step(1 / 60)
    width = app.screen_size[0]
    lines = app.banner_lines(width)
    text = app.banner_text()
    assert text is not None and len(lines) == 2  # wrapped, not clipped
    assert " ".join(lines) == text
    assert all(app.styles.small.width(line) <= width - 48 for line in lines)
    banner = scene.banner_area
    assert banner.height == app.banner_height(width) > 0
    # the banner has room of its own, between the messages and the box to write in
    assert scene.view.rect.bottom <= banner.top and banner.bottom <= scene.footer.top
    assert scene.view.rect.height == full_view.height - banner.height
    # at the bottom: the newest message is above the banner, in full
    rect = scene.view.item_rect(newest)
    assert rect is not None and rect.bottom <= banner.top
    assert scene.view.rect.contains(rect)
    # scrolled up: still nothing of the view under the banner
    scene.view.scroll_by(300)
    app.step(1 / 60)
    assert not scene.view.at_bottom
    assert not scene.view.rect.colliderect(banner)
    # back online: the room goes back to the messages
    app.apply(m.Status(state="connected", retry_at=None, outbox=0))
    app.step(1 / 60)
    assert scene.banner_area.height == 0 and scene.view.rect == full_view


def test_banner_takes_room_under_the_conversation_list(app: App) -> None:
    signed_in_with_history(app)
    app.show(ConversationsScene(app))
    scene = app.scene
    assert isinstance(scene, ConversationsScene)
    app.step(1 / 60)
    full = scene.list.rect.copy()
    outage(app)
    app.step(1 / 60)
    banner = scene.banner_area
    assert banner.height > 0 and scene.list.rect.bottom <= banner.top
    assert scene.list.rect.height == full.height - banner.height
    assert banner.bottom == app.screen_size[1]


def test_window_keeps_a_minimum_size_and_is_never_recreated(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    monkeypatch.setattr(pygame.display, "set_mode",
                        lambda *args, **kwargs: made.append(args))  # must not be called
    window, screen = app.window, app.screen
    assert window.minimum_size == MIN_SIZE
    # the window manager shrinks the window (it keeps the minimum), or says it did
    window.size = (400, 300)
    pygame.event.post(pygame.event.Event(pygame.VIDEORESIZE, size=(400, 300), w=400, h=300))
    app.step(1 / 60)
    assert made == []
    assert app.window is window and app.screen is screen
    assert window.size == MIN_SIZE and app.screen_size == MIN_SIZE
    # the layout holds at the minimum: every screen fits in the window
    bounds = pygame.Rect((0, 0), MIN_SIZE)
    login = app.scene
    assert isinstance(login, LoginScene)
    for element in login.elements():
        assert bounds.contains(element.rect), element
    signed_in_with_history(app)
    app.open_conversation("bob")
    convo = app.scene
    assert isinstance(convo, ConversationScene)
    outage(app)
    app.step(1 / 60)
    app.step(1 / 60)
    for element in convo.elements():
        assert bounds.contains(element.rect), element
    assert convo.view.rect.height > 100 and bounds.contains(convo.banner_area)
    assert made == []
