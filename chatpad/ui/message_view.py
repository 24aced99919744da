"""The bubbles of one conversation, drawn by hand: only the visible ones, from cached
layouts, so a thousand messages are never a thousand widgets."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

import pygame

from chatpad.fonts import wrap
from chatpad.items import ChatItem
from chatpad.model import Thread
from chatpad.ui.style import Colors, Styles

__all__ = ["LOAD_OLDER_MARGIN", "MessageView", "clock"]

LOAD_OLDER_MARGIN = 80  # px from the top of the history at which the next page is asked for


def clock(ts_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ts_ms / 1000))


class _Bubble:
    """A laid-out message: its wrapped lines and size, computed once per text and width."""

    __slots__ = ("height", "lines", "meta", "width")

    def __init__(self, lines: list[str], width: int, height: int, meta: str) -> None:
        self.lines = lines
        self.width = width
        self.height = height
        self.meta = meta


STATUS_LABELS = {"queued": "Queued", "sent": "Sent", "delivered": "Delivered", "read": "Read",
                 "failed": "Not sent"}
PAD_X, PAD_Y, GAP, META_GAP = 12, 8, 8, 2
TICKS_WIDTH = 18


class MessageView:
    """The bubbles of one conversation. Only visible bubbles are drawn; layouts and text
    surfaces are cached, so a long history costs the same per frame as a short one."""

    def __init__(self, styles: Styles, thread: Thread,
                 load_older: Callable[[int], None]) -> None:
        self.styles = styles
        self.thread = thread
        self.load_older = load_older
        self.rect = pygame.Rect(0, 0, 0, 0)
        self.top = 0  # content y at the top of the view
        self.at_bottom = True
        self._layout_key: tuple[int, int, int, int] = (-1, -1, -1, -1)
        self._bubbles: dict[tuple[str, str, str, str], _Bubble] = {}
        self._items: list[ChatItem] = []
        self._tops: list[int] = []
        self._height = 0
        self.pad_bottom = 0  # room kept free under the newest bubble (the offline banner)
        self.selected: tuple[str, str] | None = None  # the key of the message chosen to copy

    # --- layout -----------------------------------------------------------------------

    @property
    def max_bubble(self) -> int:
        return max(160, min(560, int(self.rect.width * 0.72)))

    def _bubble(self, item: ChatItem) -> _Bubble:
        meta = clock(item.ts)
        if item.mine:
            meta += "  " + STATUS_LABELS.get(item.status, item.status)
        key = (item.sender, item.id, item.body, meta)
        bubble = self._bubbles.get(key)
        if bubble is None:
            styles = self.styles
            inner = self.max_bubble - 2 * PAD_X
            lines = wrap(styles.body, item.body, inner)
            text_w = max((styles.body.width(line) for line in lines), default=0)
            meta_w = styles.meta.width(meta) + (TICKS_WIDTH if item.mine else 0)
            width = max(text_w, meta_w) + 2 * PAD_X
            height = (len(lines) * styles.body.line_height + META_GAP
                      + styles.meta.line_height + 2 * PAD_Y)
            bubble = self._bubbles[key] = _Bubble(lines, width, height, meta)
        return bubble

    def relayout(self) -> None:
        key = (self.thread.version, self.rect.width, self.pad_bottom, self.styles.generation)
        if key == self._layout_key:
            return
        if key[1] != self._layout_key[1] or key[3] != self._layout_key[3]:
            self._bubbles.clear()  # another width or text size: wrap again
        old_first = self._items[0].key if self._items else None
        old_height = self._height
        self._layout_key = key
        self._items = list(self.thread.items)
        self._tops = []
        y = GAP
        for item in self._items:
            self._tops.append(y)
            y += self._bubble(item).height + GAP
        self._height = y + self.pad_bottom
        if self.at_bottom:
            self.scroll_to_bottom()
            return
        # Keep what the reader looks at in place when an older page lands above it.
        if old_first is not None:
            for index, item in enumerate(self._items):
                if item.key == old_first:
                    self.top += self._tops[index] - GAP
                    break
        elif old_height:
            self.top += self._height - old_height
        self._clamp()

    def scroll_to_bottom(self) -> None:
        self.top = max(0, self._height - self.rect.height)
        self.at_bottom = True

    def _clamp(self) -> None:
        most = max(0, self._height - self.rect.height)
        self.top = max(0, min(most, self.top))
        self.at_bottom = self.top >= most - 2

    def scroll_by(self, dy: int) -> None:
        """Positive ``dy`` shows older messages."""
        self.relayout()
        self.top -= dy
        self._clamp()
        self._maybe_load_older()

    def _maybe_load_older(self) -> None:
        thread = self.thread
        if self.top <= LOAD_OLDER_MARGIN and thread.has_more and not thread.loading_older:
            oldest = thread.oldest_seq()
            if oldest is not None and thread.loaded:
                thread.loading_older = True
                self.load_older(oldest)

    # --- drawing ----------------------------------------------------------------------

    def draw(self, surface: pygame.Surface) -> None:
        self.relayout()
        styles = self.styles
        surface.fill(Colors.BACKGROUND, self.rect)
        clip = surface.get_clip()
        surface.set_clip(self.rect)
        if self.thread.loading_older or (self.thread.has_more and self.top <= GAP):
            note = styles.small.render("Loading older messages…", Colors.MUTED)
            surface.blit(note, note.get_rect(midtop=(self.rect.centerx,
                                                     self.rect.y + 6 - self.top)))
        elif not self._items:
            note = styles.small.render("No messages yet. Say hello!", Colors.MUTED)
            surface.blit(note, note.get_rect(center=self.rect.center))
        first = max(0, bisect.bisect_right(self._tops, self.top) - 1)
        bottom = self.top + self.rect.height
        for index in range(first, len(self._items)):
            y = self._tops[index]
            if y > bottom:
                break
            self._draw_bubble(surface, self._items[index], self.rect.y + y - self.top)
        surface.set_clip(clip)

    def _draw_bubble(self, surface: pygame.Surface, item: ChatItem, y: int) -> None:
        styles = self.styles
        bubble = self._bubble(item)
        if item.mine:
            x = self.rect.right - 16 - bubble.width
            fill = Colors.MINE if item.status != "failed" else Colors.ERROR
            text_color, meta_color = Colors.MINE_TEXT, Colors.MINE_META
        else:
            x = self.rect.x + 16
            fill, text_color, meta_color = Colors.THEIRS, Colors.TEXT, Colors.THEIRS_META
        box = pygame.Rect(x, y, bubble.width, bubble.height)
        pygame.draw.rect(surface, fill, box, border_radius=14)
        if not item.mine:
            pygame.draw.rect(surface, Colors.BORDER, box, width=1, border_radius=14)
        if item.key == self.selected:
            pygame.draw.rect(surface, Colors.FOCUS, box.inflate(8, 8), width=2,
                             border_radius=18)
        line_y = y + PAD_Y
        for line in bubble.lines:
            if line:
                surface.blit(styles.body.render(line, text_color), (x + PAD_X, line_y))
            line_y += styles.body.line_height
        meta = styles.meta.render(bubble.meta, meta_color)
        meta_x = box.right - PAD_X - meta.get_width() - (TICKS_WIDTH if item.mine else 0)
        meta_y = line_y + META_GAP
        surface.blit(meta, (meta_x, meta_y))
        if item.mine:
            self._draw_ticks(surface, item.status, box.right - PAD_X - TICKS_WIDTH + 4,
                             meta_y + styles.meta.line_height // 2)

    @staticmethod
    def _draw_ticks(surface: pygame.Surface, status: str, x: int, cy: int) -> None:
        color = Colors.READ if status == "read" else Colors.MINE_META
        if status == "queued":
            pygame.draw.circle(surface, color, (x + 6, cy), 5, width=1)
            hands = [(x + 6, cy - 3), (x + 6, cy), (x + 8, cy + 1)]
            pygame.draw.lines(surface, color, False, hands)
            return
        if status == "failed":
            pygame.draw.line(surface, color, (x + 2, cy - 4), (x + 10, cy + 4), 2)
            pygame.draw.line(surface, color, (x + 10, cy - 4), (x + 2, cy + 4), 2)
            return
        marks = 1 if status == "sent" else 2
        for n in range(marks):
            dx = x + n * 5
            pygame.draw.lines(surface, color, False,
                              [(dx, cy), (dx + 3, cy + 3), (dx + 9, cy - 4)], 2)

    def newest_seen_from_peer(self) -> int | None:
        """The seq of the newest message from the peer that has been on screen: scrolled
        into view, or past it. One still below the view is not read yet."""
        self.relayout()
        seen = bisect.bisect_left(self._tops, self.top + self.rect.height)
        for item in reversed(self._items[:seen]):
            if item.seq is not None and not item.mine:
                return item.seq
        return None

    def item_rect(self, item: ChatItem) -> pygame.Rect | None:
        """Where a message is on screen now, or None (tests use it)."""
        self.relayout()
        for index, candidate in enumerate(self._items):
            if candidate.key == item.key:
                bubble = self._bubble(candidate)
                return pygame.Rect(self.rect.x, self.rect.y + self._tops[index] - self.top,
                                   bubble.width, bubble.height)
        return None

    # --- selection (to copy a message) --------------------------------------------------

    def _box(self, index: int) -> pygame.Rect:
        """Where the bubble of ``self._items[index]`` is on screen now."""
        item = self._items[index]
        bubble = self._bubble(item)
        x = self.rect.right - 16 - bubble.width if item.mine else self.rect.x + 16
        return pygame.Rect(x, self.rect.y + self._tops[index] - self.top, bubble.width,
                           bubble.height)

    def bubble_at(self, pos: tuple[int, int]) -> ChatItem | None:
        """The message whose bubble is under ``pos``, if any."""
        self.relayout()
        if not self.rect.collidepoint(pos):
            return None
        index = bisect.bisect_right(self._tops, pos[1] - self.rect.y + self.top) - 1
        if 0 <= index < len(self._items) and self._box(index).collidepoint(pos):
            return self._items[index]
        return None

    def selected_item(self) -> ChatItem | None:
        if self.selected is None:
            return None
        for item in reversed(self._items):
            if item.key == self.selected:
                return item
        return None

    def select(self, item: ChatItem | None) -> None:
        """Choose ``item`` (None: none), scrolled into view."""
        self.relayout()
        self.selected = None if item is None else item.key
        if item is None:
            return
        for index, candidate in enumerate(self._items):
            if candidate.key == item.key:
                box = self._box(index)
                if box.top < self.rect.top + GAP:
                    self.scroll_by(self.rect.top + GAP - box.top)
                elif box.bottom > self.rect.bottom - GAP - self.pad_bottom:
                    self.scroll_by(self.rect.bottom - GAP - self.pad_bottom - box.bottom)
                return

    def select_step(self, step: int) -> ChatItem | None:
        """Move the selection ``step`` messages newer (negative: older); from no selection
        an older step picks the newest. Moving past the newest selects none."""
        self.relayout()
        if not self._items:
            return None
        keys = [item.key for item in self._items]
        if self.selected not in keys:
            index = len(keys) if step < 0 else len(keys) - 1
        else:
            index = keys.index(self.selected)
        index += step
        item = self._items[max(0, index)] if index < len(keys) else None
        self.select(item)
        return item

