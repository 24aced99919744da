"""Search the messages kept on this computer: all conversations (from the list), or one
(from a conversation). Works offline: the network thread answers from the local cache's
full-text index. A result opens its conversation scrolled to that message."""

from __future__ import annotations

import time
from typing import Any

import pygame
import pygame_gui
from pygame_gui.core import ObjectID
from pygame_gui.elements import UIButton, UITextEntryLine

from chatpad import messages as m
from chatpad.items import ChatItem, Hit
from chatpad.model import Model
from chatpad.scenes.base import Scene, SceneHost, place
from chatpad.ui import STATUS_BAR_HEIGHT, Colors, MessageView, Styles
from chatpad.ui.conversation_list import draw_avatar

__all__ = ["MAX_QUERY_CHARS", "JumpTarget", "SearchScene", "is_shortcut", "stamp"]

MAX_QUERY_CHARS = 200  # a search is a few words
ROW_HEIGHT = 72
INFO_HEIGHT = 36  # the line above the results: how many, or what to do
MARK_SECONDS = 2.5  # how long the message a search result opened stays outlined


def is_shortcut(event: pygame.event.Event, key: int) -> bool:
    """Ctrl+``key`` (Cmd+``key`` on macOS)."""
    return (event.type == pygame.KEYDOWN and event.key == key
            and bool(event.mod & (pygame.KMOD_CTRL | pygame.KMOD_META)))


def stamp(ts_ms: int) -> str:
    """When a found message was written: the clock today, the day this year, else the
    date with its year."""
    then = time.localtime(ts_ms / 1000)
    now = time.localtime()
    if then[:3] == now[:3]:
        return time.strftime("%H:%M", then)
    if then.tm_year == now.tm_year:
        return time.strftime("%d %b", then)
    return time.strftime("%d %b %Y", then)


class SearchScene(Scene):
    """Search the cached messages of every conversation, or of ``peer``'s only."""

    def __init__(self, app: SceneHost, peer: str | None = None) -> None:
        super().__init__(app)
        self.peer = peer
        mgr = self.manager
        r = pygame.Rect(0, 0, 420, 44)
        self.back = UIButton(r, "\u2039 Back", mgr, object_id=ObjectID(class_id="@secondary"))
        hint = ("Search messages in all conversations" if peer is None
                else f"Search messages with {peer}")
        self.entry = UITextEntryLine(r, mgr, placeholder_text=hint)
        self.entry.set_text_length_limit(MAX_QUERY_CHARS)
        self.focus_order = [self.entry, self.back]
        self.header = pygame.Rect(0, 0, 0, 0)
        self.body = pygame.Rect(0, 0, 0, 0)
        self.results = pygame.Rect(0, 0, 0, 0)
        self.sent: str | None = None  # the text last searched for
        self.hits: tuple[Hit, ...] = ()  # shown: the latest answer (kept while typing on)
        self.answered = False  # ``hits`` answer what is typed now
        self.selected = 0
        self.hover: int | None = None
        self.scroll = 0
        self.layout(app.screen_size)
        self.focus(self.entry)

    def elements(self) -> list[Any]:
        return [self.back, self.entry]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        column = min(w, 760)
        left = (w - column) // 2
        self.header = pygame.Rect(left, STATUS_BAR_HEIGHT, column, 64)
        place(self.back, pygame.Rect(left + 16, STATUS_BAR_HEIGHT + 12, 92, 40))
        place(self.entry, pygame.Rect(left + 120, STATUS_BAR_HEIGHT + 12, column - 136, 40))
        self.body = pygame.Rect(left, self.header.bottom, column, h - self.header.bottom)
        self.results = pygame.Rect(left, self.body.y + INFO_HEIGHT, column,
                                   self.body.height - INFO_HEIGHT)

    # --- input ---------------------------------------------------------------------------

    def text(self) -> str:
        return self.entry.get_text()

    def handle(self, event: pygame.event.Event) -> bool:
        if super().handle(event):
            return True
        if event.type == pygame.KEYDOWN:
            if event.key == pygame.K_ESCAPE or is_shortcut(event, pygame.K_f):
                self.leave()
                return True
            if event.key in (pygame.K_DOWN, pygame.K_UP) and self.hits:
                step = 1 if event.key == pygame.K_DOWN else -1
                self.select(max(0, min(len(self.hits) - 1, self.selected + step)))
                return True
            if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                if self.back.is_focused:
                    self.leave()
                elif self.hits:
                    self.open(self.hits[self.selected])
                return True
            if event.key in (pygame.K_PAGEDOWN, pygame.K_PAGEUP) and self.hits:
                rows = max(1, self.results.height // ROW_HEIGHT - 1)
                step = rows if event.key == pygame.K_PAGEDOWN else -rows
                self.select(max(0, min(len(self.hits) - 1, self.selected + step)))
                return True
        elif event.type == pygame.MOUSEMOTION:
            self.hover = self.index_at(event.pos)
        elif event.type == pygame.MOUSEBUTTONUP and event.button == 1:
            index = self.index_at(event.pos)
            if index is not None:
                self.open(self.hits[index])
                return True
        elif event.type == pygame.MOUSEWHEEL:
            if self.results.collidepoint(self.app.mouse_pos):
                self.scroll_by(event.y * 40)
                return True
        elif event.type == pygame_gui.UI_BUTTON_PRESSED and event.ui_element is self.back:
            self.leave()
        return False

    def leave(self) -> None:
        """Back where the search was started."""
        if self.peer is None:
            self.app.close_conversation()
        else:
            self.app.open_conversation(self.peer)

    def open(self, hit: Hit) -> None:
        """The conversation of ``hit``, scrolled to it (its page loaded from the cache)."""
        item = hit.item
        if item.seq is not None:
            self.app.model.jump = (item.peer, item.seq)
        self.app.open_conversation(item.peer)
        if item.seq is not None:
            self.app.submit(m.LoadAround(peer=item.peer, seq=item.seq))

    # --- the results ----------------------------------------------------------------------

    def row_rect(self, index: int) -> pygame.Rect:
        return pygame.Rect(self.results.x, self.results.y + index * ROW_HEIGHT - self.scroll,
                           self.results.width, ROW_HEIGHT)

    def index_at(self, pos: tuple[int, int]) -> int | None:
        if not self.results.collidepoint(pos):
            return None
        index = (pos[1] - self.results.y + self.scroll) // ROW_HEIGHT
        return index if 0 <= index < len(self.hits) else None

    def scroll_by(self, dy: int) -> None:
        most = max(0, len(self.hits) * ROW_HEIGHT - self.results.height)
        self.scroll = max(0, min(most, self.scroll - dy))

    def select(self, index: int) -> None:
        """Select a row and scroll it into view."""
        self.selected = index
        row = self.row_rect(index)
        if row.top < self.results.top:
            self.scroll_by(self.results.top - row.top)
        elif row.bottom > self.results.bottom:
            self.scroll_by(self.results.bottom - row.bottom)

    def update(self, dt: float) -> None:
        text = self.text()
        if text != self.sent:
            self.sent = text
            self.answered = False
            if text.strip():
                self.app.submit(m.SearchMessages(text=text, peer=self.peer))
            else:
                self.hits, self.answered = (), True
        if not self.answered:
            hits = self.app.model.hits(text, self.peer)
            if hits is not None:
                self.hits, self.answered = hits, True
                self.selected, self.scroll, self.hover = 0, 0, None

    def info(self) -> str:
        """The line above the results."""
        where = "all conversations" if self.peer is None else f"your chat with {self.peer}"
        if not self.text().strip():
            return f"Type to search {where}. Works offline: it searches this computer."
        if not self.answered and not self.hits:
            return "Searching…"
        count = len(self.hits)
        if not count:
            return f"No messages found in {where}."
        found = f"{count} message{'s' if count != 1 else ''} found in {where}"
        return found + ". ↑ ↓ to choose, Enter to open."

    # --- drawing --------------------------------------------------------------------------

    def draw(self, surface: pygame.Surface) -> None:
        styles = self.app.styles
        surface.fill(Colors.SURFACE, self.header)
        pygame.draw.line(surface, Colors.BORDER, self.header.bottomleft,
                         (self.header.right, self.header.bottom))
        surface.fill(Colors.SURFACE, self.body)
        info = styles.small.render(self.info(), Colors.MUTED)
        surface.blit(info, (self.body.x + 20, self.body.y + (INFO_HEIGHT - info.get_height())
                            // 2 + 2))
        clip = surface.get_clip()
        surface.set_clip(self.results)
        first = self.scroll // ROW_HEIGHT
        last = min(len(self.hits), first + self.results.height // ROW_HEIGHT + 2)
        for index in range(first, last):
            row = self.row_rect(index)
            if index == self.selected or index == self.hover:
                surface.fill(Colors.SELECTED if index == self.selected else Colors.HOVER, row)
            self._draw_hit(surface, styles, self.hits[index], row)
        surface.set_clip(clip)

    def _draw_hit(self, surface: pygame.Surface, styles: Styles, hit: Hit,
                  row: pygame.Rect) -> None:
        item = hit.item
        me = self.app.model.me or ""
        # all conversations: who the chat is with; one conversation: who wrote it
        who = item.peer if self.peer is None else (me if item.mine else item.peer)
        draw_avatar(surface, styles, who, (row.x + 40, row.centery))
        x = row.x + 76
        name = styles.name.render("You" if self.peer is not None and item.mine else who,
                                  Colors.TEXT)
        surface.blit(name, (x, row.y + 12))
        when = styles.small.render(stamp(item.ts), Colors.MUTED)
        surface.blit(when, (row.right - when.get_width() - 20, row.y + 14))
        runs = list(hit.snippet)
        if item.mine and self.peer is None:
            runs.insert(0, ("You: ", False))
        draw_snippet(surface, styles, runs, pygame.Rect(x, row.y + 38, row.right - x - 20, 24))
        pygame.draw.line(surface, Colors.BORDER, (x, row.bottom - 1),
                         (row.right, row.bottom - 1))


def draw_snippet(surface: pygame.Surface, styles: Styles, runs: list[tuple[str, bool]],
                 box: pygame.Rect) -> None:
    """One line of text with the matched words marked; the text before the first match
    is cut (with "…") so the match is always in sight."""
    plain, mark = styles.small, styles.small_bold
    lead = runs[0][0] if runs and not runs[0][1] else ""
    if lead and len(runs) > 1 and plain.width(lead) > box.width * 0.4:
        while lead and plain.width("…" + lead) > box.width * 0.4:
            lead = lead[max(1, len(lead) // 10):]
        runs = [("…" + lead.lstrip(), False), *runs[1:]]
    clip = surface.get_clip()
    surface.set_clip(box.clip(clip))
    x = box.x
    for text, is_match in runs:
        if x >= box.right:
            break
        label = (mark if is_match else plain).render(text, Colors.TEXT if is_match
                                                     else Colors.MUTED)
        if is_match:
            back = label.get_rect(topleft=(x, box.y)).inflate(4, 0)
            pygame.draw.rect(surface, Colors.BANNER, back, border_radius=4)
        surface.blit(label, (x, box.y))
        x += label.get_width()
    surface.set_clip(clip)


class JumpTarget:
    """The message a search result opened: scrolled to once it is loaded, then outlined
    for a moment. A conversation scene holds one while it has a target."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.item: ChatItem | None = None
        self.shown_at = 0.0

    @classmethod
    def take(cls, model: Model, peer: str) -> JumpTarget | None:
        seq = model.take_jump(peer)
        return None if seq is None else cls(seq)

    @property
    def is_done(self) -> bool:
        return self.item is not None and time.monotonic() - self.shown_at > MARK_SECONDS

    def update(self, view: MessageView) -> None:
        """Scroll ``view`` so the target is in the middle, as soon as it is there."""
        if self.item is not None:
            return
        for item in view.thread.items:
            if item.seq == self.seq:
                break
        else:
            return
        rect = view.item_rect(item)
        if rect is None:
            return
        view.at_bottom = False
        view.scroll_by(view.rect.centery - rect.centery)
        self.item, self.shown_at = item, time.monotonic()

    def draw(self, surface: pygame.Surface, view: MessageView) -> None:
        if self.item is None or self.is_done:
            return
        rect = view.item_rect(self.item)
        if rect is None:
            return
        if self.item.mine:
            rect.right = view.rect.right - 16
        else:
            rect.x = view.rect.x + 16
        clip = surface.get_clip()
        surface.set_clip(view.rect)
        pygame.draw.rect(surface, Colors.WARN, rect.inflate(6, 6), width=2, border_radius=16)
        surface.set_clip(clip)
