"""One conversation: the bubbles, the box to write in, typing signals and read marks."""

from __future__ import annotations

import time
from typing import Any

import pygame
import pygame_gui
from pygame_gui.core import ObjectID
from pygame_gui.elements import UIButton, UILabel

from chatpad import messages as m
from chatpad.items import ChatItem
from chatpad.scenes.base import Scene, SceneHost, place
from chatpad.scenes.message_copy import MessageCopy
from chatpad.scenes.search import JumpTarget, SearchScene, is_shortcut
from chatpad.ui import STATUS_BAR_HEIGHT, Colors, MessageView
from chatpad.ui.entries import EntryBox
from libchat import limits

__all__ = ["TYPING_EVERY", "ConversationScene"]

TYPING_EVERY = 3.0  # seconds between typing signals while the user writes
PASTE_CUT = f"Pasted text was cut to {limits.MAX_MESSAGE_CHARS:,} characters."
AT_LIMIT = f"A message can have {limits.MAX_MESSAGE_CHARS:,} characters at most."


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
        self.input = EntryBox(
            pygame.Rect(0, 0, 400, self.INPUT_H), "", mgr,
            placeholder_text="Write a message…  (Enter sends, Shift+Enter: new line)")
        self.send = UIButton(r, "Send", mgr)
        self.counter = UILabel(r, f"0 / {limits.MAX_MESSAGE_CHARS}", mgr,
                               object_id=ObjectID(class_id="@hint"))
        # says why the text stopped at the limit (a paste cut short, a key refused)
        self.limit_note = UILabel(r, "", mgr, object_id=ObjectID(class_id="@warning"))
        self.thread = app.model.thread(peer)
        self.view = MessageView(app.styles, self.thread, self._load_older)
        self.copying = MessageCopy(app, self.view, lambda: bool(self.text()))
        self.focus_order = [self.input, self.send, self.back]
        self.header = pygame.Rect(0, 0, 0, 0)
        self.footer = pygame.Rect(0, 0, 0, 0)
        self.last_read_sent = -1
        self.counter_value = 0
        self.typing_sent_at = -TYPING_EVERY
        summary = app.model.summary(peer)  # what was unread as it opened
        self.unread_at_open = summary.unread if summary is not None else 0
        self.newest_at_open = summary.seq if summary is not None else -1
        self.read_floor: int | None = None  # seqs up to it were read as it opened, once known
        self.layout(app.screen_size)
        self.focus(self.input)
        self.jump = JumpTarget.take(app.model, peer)  # opened from a search result
        self.input.set_text(app.model.drafts.pop(peer, ""))  # back from searching

    def elements(self) -> list[Any]:
        return [self.back, self.title, self.input, self.send, self.counter, self.limit_note]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        self.header = pygame.Rect(0, STATUS_BAR_HEIGHT, w, 56)
        place(self.back, pygame.Rect(12, STATUS_BAR_HEIGHT + 9, 92, 38))
        place(self.title, pygame.Rect(116, STATUS_BAR_HEIGHT + 10, w - 132, 36))
        self.footer = pygame.Rect(0, h - self.INPUT_H - 22, w, self.INPUT_H + 22)
        place(self.input, pygame.Rect(12, self.footer.y + 8, w - 124, self.INPUT_H - 8))
        place(self.send, pygame.Rect(w - 104, self.footer.y + 8, 92, 44))
        place(self.counter, pygame.Rect(w - 224, self.footer.bottom - 22, 212, 18))
        place(self.limit_note, pygame.Rect(12, self.footer.bottom - 22, w - 248, 18))
        self.banner_area = pygame.Rect(0, self.footer.y - self.banner_room, w, self.banner_room)
        self.view.rect = pygame.Rect(0, self.header.bottom, w,
                                     self.banner_area.y - self.header.bottom)
        self.view.relayout()
        if self.view.at_bottom:  # a shorter view (the banner came) still ends at the newest
            self.view.scroll_to_bottom()

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
        if is_shortcut(event, pygame.K_f):  # search this conversation; the draft is kept
            self.app.model.drafts[self.peer] = self.text()
            self.app.show(SearchScene(self.app, self.peer))
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
            if event.key == pygame.K_END and self.jump_to_latest_on_end(event.mod):
                return True
        elif event.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            if (event.button == 1 and self.view.shows_jump
                    and self.view.jump_rect().collidepoint(event.pos)):
                if event.type == pygame.MOUSEBUTTONUP:
                    self.view.scroll_to_bottom()
                return True
        elif event.type == pygame.TEXTINPUT and self.input.is_focused:
            room = limits.MAX_MESSAGE_CHARS - len(self.text())
            if room <= 0:
                self.note_limit(AT_LIMIT)
                return True  # refuse more than the limit
            if len(event.text) > room:
                pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=event.text[:room]))
                self.note_limit(PASTE_CUT)
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
        self.keep_banner_room(self.app.screen_size[0])
        if self.jump is not None:
            self.jump.update(self.view)
        text = self.text()
        if len(text) > limits.MAX_MESSAGE_CHARS:  # a paste can pass the limit: cut it
            self.input.set_text(text[: limits.MAX_MESSAGE_CHARS])
            text = self.input.get_text()
            self.note_limit(PASTE_CUT)
        if len(text) != self.counter_value:
            if len(text) < limits.MAX_MESSAGE_CHARS:
                self.note_limit("")  # below the limit again: nothing to explain
            now = time.monotonic()
            if text and now - self.typing_sent_at >= TYPING_EVERY:
                self.typing_sent_at = now
                self.app.submit(m.Typing(peer=self.peer))
            self.counter_value = len(text)
            self.counter.set_text(f"{len(text)} / {limits.MAX_MESSAGE_CHARS}")
        self.place_new_line()
        if not self.app.has_focus():
            self.mark_arrivals_while_away()
        newest = self.view.newest_seen_from_peer()  # one below the view is not read yet
        if newest is not None and newest > self.last_read_sent and self.app.has_focus():
            self.last_read_sent = newest
            self.app.submit(m.MarkRead(peer=self.peer, up_to=newest))
        self.view.unseen = self.unread_count()

    # --- new messages: the "New messages" line, the unread count, jump to the latest ------

    def place_new_line(self) -> None:
        """Put "New messages" above the first message that was unread as the conversation
        opened, once the page holding the newest of them is here (the cached page shown
        first may be older). It stays until the conversation is left."""
        if self.read_floor is not None:
            return
        if self.unread_at_open <= 0:
            self.read_floor = self.newest_at_open
            return
        items = self.thread.items
        newest = next((item.seq for item in reversed(items) if item.seq is not None), None)
        if newest is None or newest < self.newest_at_open:
            return
        left = self.unread_at_open
        first_unread: ChatItem | None = None
        for item in reversed(items):
            if item.seq is None or item.mine or item.seq > self.newest_at_open:
                continue
            first_unread = item
            left -= 1
            if left == 0:
                break
        if first_unread is None or first_unread.seq is None:
            self.read_floor = self.newest_at_open
            return
        self.read_floor = first_unread.seq - 1
        self.view.new_line_key = first_unread.key

    def mark_arrivals_while_away(self) -> None:
        """With no line yet, messages that arrive while the window is not in front get one
        above the first of them: the reader sees where to pick up on coming back."""
        if self.view.new_line_key is not None or self.read_floor is None:
            return
        floor = max(self.read_floor, self.last_read_sent)
        first: ChatItem | None = None
        for item in reversed(self.thread.items):
            if item.seq is None:
                continue
            if item.seq <= floor:
                break
            if not item.mine:
                first = item
        if first is not None:
            self.view.new_line_key = first.key

    def unread_count(self) -> int:
        """Messages from the peer not read yet: the ones not yet scrolled into view (or not
        seen while the window was not in front)."""
        floor = self.last_read_sent
        pending = 0
        if self.read_floor is None:  # the newest page is still coming
            floor = max(floor, self.newest_at_open)
            if self.last_read_sent < self.newest_at_open:
                pending = self.unread_at_open
        else:
            floor = max(floor, self.read_floor)
        count = 0
        for item in reversed(self.thread.items):
            if item.seq is None:
                continue
            if item.seq <= floor:
                break
            count += not item.mine
        return count + pending

    def jump_to_latest_on_end(self, mod: int) -> bool:
        """End jumps to the newest message when the box is empty (else End moves the
        cursor there); Ctrl+End always does."""
        if self.text() and not mod & pygame.KMOD_CTRL:
            return False
        self.view.scroll_to_bottom()
        return True

    def note_limit(self, text: str) -> None:
        """Say under the box why the text stopped at the limit ("": say nothing)."""
        if self.limit_note.text != text:
            self.limit_note.set_text(text)

    def draw(self, surface: pygame.Surface) -> None:
        self.view.draw(surface)
        if self.jump is not None:
            self.jump.draw(surface, self.view)
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
