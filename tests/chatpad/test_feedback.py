"""Issue 14, bugs 4 and 7: what chatpad tells the user, and in which colour. The real
scenes under headless SDL; offline where no server is needed."""

from __future__ import annotations

from collections.abc import Iterator

import pygame
import pygame_gui
import pytest

from chatpad import messages as m
from chatpad.app import App, AppConfig
from chatpad.scenes import ConversationScene
from libchat.limits import MAX_MESSAGE_CHARS

pytestmark = pytest.mark.gui


@pytest.fixture
def app() -> Iterator[App]:
    app = App(AppConfig(offline=True))
    yield app
    app.close()


def conversation(app: App) -> ConversationScene:
    app.apply(m.SignedIn(server="http://x", username="alice"))
    app.open_conversation("bob")
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    app.step(1 / 60)
    return scene


def test_a_paste_cut_to_the_limit_says_so(app: App) -> None:
    scene = conversation(app)
    assert scene.limit_note.text == ""
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="p" * (MAX_MESSAGE_CHARS + 1)))
    app.step(1 / 60)
    app.step(1 / 60)
    assert len(scene.text()) == MAX_MESSAGE_CHARS
    assert scene.limit_note.text == "Pasted text was cut to 5,000 characters."
    assert scene.limit_note.visible
    assert not scene.limit_note.rect.colliderect(scene.counter.rect)
    assert app.screen.get_rect().contains(scene.limit_note.rect)
    # one key more is refused, and that is said too
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="x"))
    app.step(1 / 60)
    assert scene.limit_note.text == "A message can have 5,000 characters at most."
    # below the limit again: the note goes
    scene.input.set_text("short")
    app.step(1 / 60)
    assert scene.limit_note.text == ""


def test_a_clipboard_paste_cut_to_the_limit_says_so(app: App) -> None:
    scene = conversation(app)
    pygame_gui.core.utility.clipboard_copy("c" * (MAX_MESSAGE_CHARS + 1))
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_v, mod=pygame.KMOD_CTRL,
                                         unicode="", scancode=0))
    app.step(1 / 60)
    app.step(1 / 60)
    assert len(scene.text()) == MAX_MESSAGE_CHARS
    assert scene.limit_note.text == "Pasted text was cut to 5,000 characters."
