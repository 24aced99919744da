"""The message box (live counter, the 5000 limit, Enter and Shift+Enter), Tab between
fields, and resizing: offline, no server needed."""

from __future__ import annotations

import pygame
import pytest

from chatpad import messages as m
from chatpad.app import App
from chatpad.scenes import ConversationScene, LoginScene
from libchat.limits import MAX_MESSAGE_CHARS

pytestmark = pytest.mark.gui



def post(*events: pygame.event.Event) -> None:
    for event in events:
        pygame.event.post(event)


def key(k: int, mod: int = 0) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod, unicode="", scancode=0)


def text(t: str) -> pygame.event.Event:
    return pygame.event.Event(pygame.TEXTINPUT, text=t)


def test_counter_limit_enter_and_shift_enter(app: App) -> None:
    app.apply(m.SignedIn(server="http://x", username="alice"))
    app.open_conversation("bob")
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    scene.input.set_text("a" * 4990)  # as a paste would
    app.step(1 / 60)
    assert scene.counter.text == f"4990 / {MAX_MESSAGE_CHARS}"
    post(text("b" * 20))  # only 10 fit
    app.step(1 / 60)
    app.step(1 / 60)
    assert len(scene.text()) == MAX_MESSAGE_CHARS
    assert scene.counter.text == f"{MAX_MESSAGE_CHARS} / {MAX_MESSAGE_CHARS}"
    post(text("c"), key(pygame.K_RETURN, pygame.KMOD_SHIFT))
    app.step(1 / 60)
    assert len(scene.text()) == MAX_MESSAGE_CHARS  # refused
    scene.input.set_text("")
    post(text("line one"), key(pygame.K_RETURN, pygame.KMOD_SHIFT), text("line two"))
    app.step(1 / 60)
    assert scene.text() == "line one\nline two"
    post(key(pygame.K_RETURN))
    app.step(1 / 60)
    assert m.Post(peer="bob", body="line one\nline two") in app.sent
    assert scene.text() == ""


def test_tab_moves_between_sign_in_fields(app: App) -> None:
    scene = app.scene
    assert isinstance(scene, LoginScene)
    assert scene.username.is_focused
    order = [scene.password, scene.sign_in, scene.create, scene.server, scene.username]
    for expected in order:
        post(key(pygame.K_TAB))
        app.step(1 / 60)
        assert expected.is_focused
    post(key(pygame.K_TAB, pygame.KMOD_SHIFT))
    app.step(1 / 60)
    assert scene.server.is_focused


def test_resizing_lays_the_screens_out_again(app: App) -> None:
    app.apply(m.SignedIn(server="http://x", username="alice"))
    app.open_conversation("bob")
    app.window.size = (1280, 900)  # as the user drags the window's corner
    app.step(1 / 60)
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    assert app.screen_size == (1280, 900)
    assert scene.send.rect.right == 1280 - 12
    assert scene.view.rect.width == 1280
    app.window.size = (100, 100)
    app.step(1 / 60)
    assert app.screen_size == (560, 520)  # a minimum size keeps the layout usable
