"""The list of conversations, and the box that finds people to talk to."""

from __future__ import annotations

from typing import Any

import pygame
import pygame_gui
from pygame_gui.core import ObjectID
from pygame_gui.elements import UIButton

from chatpad import messages as m
from chatpad.scenes.base import Scene, SceneHost, place
from chatpad.scenes.search import SearchScene, is_shortcut
from chatpad.scenes.settings import SettingsScene
from chatpad.ui import STATUS_BAR_HEIGHT, Colors, ConversationList
from chatpad.ui.entries import EntryLine
from libchat import limits

__all__ = ["ConversationsScene"]


class ConversationsScene(Scene):
    """The list of conversations, and the box that finds people to talk to."""

    def __init__(self, app: SceneHost, select: str | None = None) -> None:
        """``select``: the peer to choose once the list shows it (the conversation just
        left, so the keyboard goes on from there)."""
        super().__init__(app)
        self.pending_select = select
        mgr = self.manager
        r = pygame.Rect(0, 0, 420, 44)
        self.search = EntryLine(r, mgr, placeholder_text="Find people to start a "
                                                          "conversation")
        self.search.set_text_length_limit(limits.MAX_USERNAME_CHARS)
        self.find_messages = UIButton(r, "Search", mgr, object_id=ObjectID(class_id="@secondary"),
                                      tool_tip_text="Search your messages (Ctrl+F)")
        self.settings = UIButton(r, "Settings", mgr, object_id=ObjectID(class_id="@secondary"),
                                 tool_tip_text="Account, local data, sign out (Ctrl+,)")
        self.sign_out = UIButton(r, "Sign out", mgr, object_id=ObjectID(class_id="@secondary"))
        self.list = ConversationList(app.styles)
        self.focus_order = [self.search, self.find_messages, self.settings, self.sign_out]
        self.sent_prefix = ""
        self.header = pygame.Rect(0, 0, 0, 0)
        self.layout(app.screen_size)

    def elements(self) -> list[Any]:
        return [self.search, self.find_messages, self.settings, self.sign_out]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        column = min(w, 760)
        left = (w - column) // 2
        self.header = pygame.Rect(left, STATUS_BAR_HEIGHT, column, 64)
        top = STATUS_BAR_HEIGHT + 12
        right = left + column - 16
        for button, width in ((self.sign_out, 100), (self.settings, 100),
                              (self.find_messages, 88)):
            place(button, pygame.Rect(right - width, top, width, 40))
            right -= width + 8
        place(self.search, pygame.Rect(left + 16, top, right - left - 16, 40))
        self.list.rect = pygame.Rect(left, STATUS_BAR_HEIGHT + 64, column,
                                     h - STATUS_BAR_HEIGHT - 64 - self.banner_room)
        self.banner_area = pygame.Rect(left, h - self.banner_room, column, self.banner_room)

    def open(self, peer: str) -> None:
        self.app.open_conversation(peer)

    def handle(self, event: pygame.event.Event) -> bool:
        if super().handle(event):
            return True
        peers = self.list.peers()
        if is_shortcut(event, pygame.K_f):
            self.app.show(SearchScene(self.app))
            return True
        if is_shortcut(event, pygame.K_COMMA):
            self.app.show(SettingsScene(self.app))
            return True
        if event.type == pygame.KEYDOWN:
            return self.handle_key(event, peers)
        elif event.type == pygame.TEXTINPUT:
            if not any(element.is_focused for element in self.focus_order):
                self.focus(self.search)  # typing finds people; pygame_gui types it there
        elif event.type == pygame.MOUSEMOTION:
            self.list.hover = self.list.index_at(event.pos)
        elif event.type == pygame.MOUSEBUTTONUP and event.button == 1:
            index = self.list.index_at(event.pos)
            if index is not None:
                self.open(peers[index])
                return True
        elif event.type == pygame.MOUSEWHEEL:
            self.list.scroll_by(event.y * 40)
        elif event.type == pygame_gui.UI_BUTTON_PRESSED:
            if event.ui_element is self.sign_out:
                self.app.submit(m.SignOut())
            elif event.ui_element is self.find_messages:
                self.app.show(SearchScene(self.app))
            elif event.ui_element is self.settings:
                self.app.show(SettingsScene(self.app))
        return False

    def handle_key(self, event: pygame.event.Event, peers: list[str]) -> bool:
        """The list from the keyboard: Up, Down, Page Up, Page Down (and Home, End outside
        the search box) choose a row, Enter opens it or presses the focused button."""
        steps = {pygame.K_DOWN: 1, pygame.K_UP: -1, pygame.K_PAGEDOWN: self.list.rows_per_page,
                 pygame.K_PAGEUP: -self.list.rows_per_page}
        if not self.search.is_focused:
            steps |= {pygame.K_HOME: -len(peers), pygame.K_END: len(peers)}
        if event.key in steps and peers:
            self.list.choose(self.list.selected + steps[event.key])
            return True
        if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            if self.sign_out.is_focused:
                self.app.submit(m.SignOut())
            elif self.find_messages.is_focused:
                self.app.show(SearchScene(self.app))
            elif self.settings.is_focused:
                self.app.show(SettingsScene(self.app))
            elif peers:
                self.open(peers[min(self.list.selected, len(peers) - 1)])
            return True
        if event.key == pygame.K_ESCAPE and self.search.get_text():
            self.search.set_text("")
            return True
        return False

    def update(self, dt: float) -> None:
        self.keep_banner_room(self.list.rect.width)
        prefix = self.search.get_text().strip().lower()
        if prefix != self.sent_prefix:
            self.sent_prefix = prefix
            self.list.selected = 0
            if prefix:
                self.app.submit(m.Search(prefix=prefix))
        model = self.app.model
        self.list.show_users = bool(prefix)
        self.list.users = model.users_found if model.users_prefix == prefix else ()
        self.list.rows = model.conversations
        if self.pending_select is not None and self.pending_select in self.list.peers():
            self.list.choose(self.list.peers().index(self.pending_select))
            self.pending_select = None

    def draw(self, surface: pygame.Surface) -> None:
        surface.fill(Colors.SURFACE, self.header)
        pygame.draw.line(surface, Colors.BORDER, self.header.bottomleft,
                         (self.header.right, self.header.bottom))
        self.list.draw(surface)
