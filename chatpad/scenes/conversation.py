"""One conversation: the bubbles, the box to write in, typing signals and read marks."""

from __future__ import annotations

import time
from typing import Any

import pygame
import pygame_gui
from pygame_gui.core import ObjectID
from pygame_gui.elements import UIButton, UILabel, UITextEntryBox

from chatpad import messages as m
from chatpad.scenes.base import Scene, SceneHost, place
from chatpad.scenes.message_copy import MessageCopy
from chatpad.ui import STATUS_BAR_HEIGHT, Colors, MessageView
from libchat import limits

__all__ = ["TYPING_EVERY", "ConversationScene"]

TYPING_EVERY = 3.0  # seconds between typing signals while the user writes


class ConversationScene(Scene):
    """One conversation: bubbles, and the box to write in."""

    INPUT_H = 76

    def __init__(self, app: SceneHost, peer: str) -> None:
        super().__init__(app)
        self.peer = peer
        mgr = self.manager
        r = pygame.Rect(0, 0, 420, 44)
        self.back = UIButton(r, "\u2039 Back", mgr, object_id=ObjectID(class_id="@secondary"))
        self.title = UILabel(r, peer, mgr, object_id=ObjectID(class_id="@title"))
        self.input = UITextEntryBox(
            pygame.Rect(0, 0, 400, self.INPUT_H), "", mgr,
            placeholder_text="Write a message…  (Enter sends, Shift+Enter: new line)")
        self.send = UIButton(r, "Send", mgr)
        self.counter = UILabel(r, f"0 / {limits.MAX_MESSAGE_CHARS}", mgr,
                               object_id=ObjectID(class_id="@hint"))
        self.thread = app.model.thread(peer)
        self.view = MessageView(app.styles, self.thread, self._load_older)
        self.copying = MessageCopy(app, self.view, lambda: bool(self.text()))
        self.focus_order = [self.input, self.send, self.back]
        self.header = pygame.Rect(0, 0, 0, 0)
        self.footer = pygame.Rect(0, 0, 0, 0)
        self.last_read_sent = -1
        self.counter_value = 0
        self.typing_sent_at = -TYPING_EVERY
        self.layout(app.screen_size)
        self.focus(self.input)

    def elements(self) -> list[Any]:
        return [self.back, self.title, self.input, self.send, self.counter]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        self.header = pygame.Rect(0, STATUS_BAR_HEIGHT, w, 56)
        place(self.back, pygame.Rect(12, STATUS_BAR_HEIGHT + 9, 92, 38))
        place(self.title, pygame.Rect(116, STATUS_BAR_HEIGHT + 10, w - 132, 36))
        self.footer = pygame.Rect(0, h - self.INPUT_H - 22, w, self.INPUT_H + 22)
        place(self.input, pygame.Rect(12, self.footer.y + 8, w - 124, self.INPUT_H - 8))
        place(self.send, pygame.Rect(w - 104, self.footer.y + 8, 92, 44))
        place(self.counter, pygame.Rect(w - 224, self.footer.bottom - 22, 212, 18))
        self.view.rect = pygame.Rect(0, self.header.bottom, w, self.footer.y - self.header.bottom)
        self.view.relayout()

    def activity(self) -> str:
        """What the header says about the peer: typing, or online."""
        model = self.app.model
        if model.is_typing(self.peer):
            return "typing…"
        if model.online.get(self.peer):
            return "online"
        return ""

    def _load_older(self, before: int) -> None:
        self.app.submit(m.LoadOlder(peer=self.peer, before=before))

    def text(self) -> str:
        return self.input.get_text()

    def send_text(self) -> None:
        body = self.text().strip("\n")
        if not body.strip():
            return
        if len(body) > limits.MAX_MESSAGE_CHARS:
            return
        self.app.submit(m.Post(peer=self.peer, body=body))
        self.input.set_text("")
        self.view.at_bottom = True

    def handle(self, event: pygame.event.Event) -> bool:
        if super().handle(event) or self.copying.handle(event):
            return True
        if event.type == pygame.KEYDOWN:
            if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                if event.mod & pygame.KMOD_SHIFT:
                    # pygame_gui inserts the line break, unless it would pass the limit
                    return len(self.text()) >= limits.MAX_MESSAGE_CHARS
                if self.back.is_focused:
                    self.app.close_conversation()
                else:
                    self.send_text()
                return True
            if event.key == pygame.K_ESCAPE:
                self.app.close_conversation()
                return True
            if event.key == pygame.K_PAGEUP:
                self.view.scroll_by(self.view.rect.height - 40)
                return True
            if event.key == pygame.K_PAGEDOWN:
                self.view.scroll_by(-(self.view.rect.height - 40))
                return True
        elif event.type == pygame.TEXTINPUT and self.input.is_focused:
            room = limits.MAX_MESSAGE_CHARS - len(self.text())
            if room <= 0:
                return True  # refuse more than the limit
            if len(event.text) > room:
                pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=event.text[:room]))
                return True
        elif event.type == pygame.MOUSEWHEEL:
            if self.view.rect.collidepoint(self.app.mouse_pos):
                self.view.scroll_by(event.y * 48)
                return True
        elif event.type == pygame_gui.UI_BUTTON_PRESSED:
            if event.ui_element is self.back:
                self.app.close_conversation()
            elif event.ui_element is self.send:
                self.send_text()
                self.focus(self.input)
        return False

    def update(self, dt: float) -> None:
        self.view.pad_bottom = 44 if self.app.banner_text() else 0
        text = self.text()
        if len(text) > limits.MAX_MESSAGE_CHARS:  # a paste can pass the limit: cut it
            self.input.set_text(text[: limits.MAX_MESSAGE_CHARS])
            text = self.input.get_text()
        if len(text) != self.counter_value:
            now = time.monotonic()
            if text and now - self.typing_sent_at >= TYPING_EVERY:
                self.typing_sent_at = now
                self.app.submit(m.Typing(peer=self.peer))
            self.counter_value = len(text)
            self.counter.set_text(f"{len(text)} / {limits.MAX_MESSAGE_CHARS}")
        newest = self.view.newest_seen_from_peer()  # one below the view is not read yet
        if newest is not None and newest > self.last_read_sent and self.app.has_focus():
            self.last_read_sent = newest
            self.app.submit(m.MarkRead(peer=self.peer, up_to=newest))

    def draw(self, surface: pygame.Surface) -> None:
        self.view.draw(surface)
        surface.fill(Colors.SURFACE, self.header)
        pygame.draw.line(surface, Colors.BORDER, (self.header.x, self.header.bottom - 1),
                         (self.header.right, self.header.bottom - 1))
        activity = self.activity()
        if activity:
            label = self.app.styles.small.render(activity, Colors.ACCENT)
            surface.blit(label, label.get_rect(midright=(self.header.right - 20,
                                                         self.header.centery)))
        surface.fill(Colors.SURFACE, self.footer)
        pygame.draw.line(surface, Colors.BORDER, self.footer.topleft, self.footer.topright)
        self.copying.draw(surface)
