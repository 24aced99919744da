"""The bubbles of one conversation, drawn by hand: only the visible ones, from cached
layouts, so a thousand messages are never a thousand widgets."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from datetime import date, timedelta

import pygame

from chatpad.fonts import wrap
from chatpad.items import ChatItem
from chatpad.model import Thread
from chatpad.ui.style import Colors, Styles

__all__ = ["LOAD_OLDER_MARGIN", "MessageView", "clock", "day_label"]

LOAD_OLDER_MARGIN = 80  # px from the top of the history at which the next page is asked for


def clock(ts_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ts_ms / 1000))


def day_label(day: date, today: date) -> str:
    """The date separator's text: "Today", "Yesterday", "Mon 24 Nov" within the year,
    "24 Nov 2025" before it."""
    if day == today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if day.year == today.year:
        return f"{day:%a} {day.day} {day:%b}"
    return f"{day.day} {day:%b %Y}"


class _Mark:
    """A line between bubbles: a date separator (``day``), or "New messages" (None)."""

    __slots__ = ("day", "y")

    def __init__(self, y: int, day: date | None) -> None:
        self.y = y
        self.day = day


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
DAY_ROOM = 22  # px around a date separator's text (its pill and the gaps)
NEW_LINE_ROOM = 12  # px around the "New messages" text
JUMP_RADIUS = 20  # the round jump-to-latest button


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
        self._layout_key: tuple[object, ...] = ()
        self._bubbles: dict[tuple[str, str, str, str], _Bubble] = {}
        self._items: list[ChatItem] = []
        self._tops: list[int] = []
        self._height = 0
        self.new_line_key: tuple[str, str] | None = None  # "New messages" goes above it
        self.unseen = 0  # new messages below the view: the count on the jump button
        self._marks: list[_Mark] = []
        self._mark_tops: list[int] = []
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
        key = (self.thread.version, self.rect.width, self.styles.generation,
               self.thread.has_more, self.new_line_key)
        if key == self._layout_key:
            return
        if not self._layout_key or key[1:3] != self._layout_key[1:3]:
            self._bubbles.clear()  # another width or text size: wrap again
        old_first = self._items[0].key if self._items else None
        old_first_top = self._tops[0] if self._tops else GAP
        old_height = self._height
        self._layout_key = key
        self._items = list(self.thread.items)
        self._tops = []
        self._marks = []
        # Older pages may still hold more of the first day: its separator waits for them.
        day = _day(self._items[0].ts) if self._items and self.thread.has_more else None
        y = GAP
        for item in self._items:
            y, day = self._place_marks(item, y, day)
            self._tops.append(y)
            y += self._bubble(item).height + GAP
        self._mark_tops = [mark.y for mark in self._marks]
        self._height = y
        if self.at_bottom:
            self.scroll_to_bottom()
            return
        # Keep what the reader looks at in place when an older page lands above it.
        if old_first is not None:
            for index, item in enumerate(self._items):
                if item.key == old_first:
                    self.top += self._tops[index] - old_first_top
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
        self._draw_marks(surface)
        self._draw_jump(surface)
        surface.set_clip(clip)

    def _place_marks(self, item: ChatItem, y: int, day: date | None) -> tuple[int, date]:
        """Lay out the lines above ``item`` (a new day, "New messages") from ``y``; returns
        where the bubble goes and its day."""
        item_day = _day(item.ts)
        if item_day != day:
            self._marks.append(_Mark(y, item_day))
            y += self._mark_height(item_day)
        if item.key == self.new_line_key:
            self._marks.append(_Mark(y, None))
            y += self._mark_height(None)
        return y, item_day

    def _mark_height(self, day: date | None) -> int:
        """The height of a date separator (``day``) or of the "New messages" line (None)."""
        return self.styles.small_bold.line_height + (NEW_LINE_ROOM if day is None else DAY_ROOM)

    def _draw_marks(self, surface: pygame.Surface) -> None:
        if not self._marks:
            return
        styles = self.styles
        day_height = self._mark_height(date.min)
        first = max(0, bisect.bisect_right(self._mark_tops, self.top - day_height))
        bottom = self.top + self.rect.height
        today = date.today()
        for mark in self._marks[first:]:
            if mark.y > bottom:
                break
            y = self.rect.y + mark.y - self.top
            if mark.day is None:
                cy = y + self._mark_height(None) // 2 - GAP // 2
                label = styles.small_bold.render("New messages", Colors.ACCENT)
                box = label.get_rect(center=(self.rect.centerx, cy)).inflate(24, 0)
                pygame.draw.line(surface, Colors.ACCENT, (self.rect.x + 16, cy),
                                 (self.rect.right - 16, cy))
                surface.fill(Colors.BACKGROUND, box)
                surface.blit(label, label.get_rect(center=box.center))
                continue
            label = styles.small_bold.render(day_label(mark.day, today), Colors.MUTED)
            pill = label.get_rect(center=(self.rect.centerx, y + day_height // 2 - GAP // 2))
            pill = pill.inflate(24, 10)
            pygame.draw.rect(surface, Colors.SURFACE, pill, border_radius=pill.height // 2)
            pygame.draw.rect(surface, Colors.BORDER, pill, width=1,
                             border_radius=pill.height // 2)
            surface.blit(label, label.get_rect(center=pill.center))

    @property
    def shows_jump(self) -> bool:
        """The jump-to-latest button shows while the newest message is out of view."""
        return not self.at_bottom and self._height > self.rect.height

    def jump_rect(self) -> pygame.Rect:
        """Where the jump-to-latest button is (when :attr:`shows_jump`)."""
        size = 2 * JUMP_RADIUS
        return pygame.Rect(self.rect.right - 24 - size, self.rect.bottom - 20 - size, size, size)

    def _draw_jump(self, surface: pygame.Surface) -> None:
        if not self.shows_jump:
            return
        box = self.jump_rect()
        cx, cy = box.center
        pygame.draw.circle(surface, Colors.BORDER, (cx, cy + 2), JUMP_RADIUS)
        pygame.draw.circle(surface, Colors.SURFACE, (cx, cy), JUMP_RADIUS)
        pygame.draw.circle(surface, Colors.BORDER, (cx, cy), JUMP_RADIUS, width=1)
        color = Colors.ACCENT if self.unseen else Colors.MUTED
        pygame.draw.line(surface, color, (cx, cy - 8), (cx, cy + 7), 2)
        pygame.draw.lines(surface, color, False, [(cx - 6, cy + 1), (cx, cy + 7),
                                                  (cx + 6, cy + 1)], 2)
        if self.unseen:
            count = self.styles.small_bold.render(
                str(self.unseen) if self.unseen < 100 else "99+", Colors.SURFACE)
            badge = pygame.Rect(0, 0, max(20, count.get_width() + 10), 20)
            badge.center = (cx, box.top)
            pygame.draw.rect(surface, Colors.ACCENT, badge, border_radius=10)
            surface.blit(count, count.get_rect(center=badge.center))

    def mark_rect(self, label: str) -> pygame.Rect | None:
        """Where the first date separator or "New messages" line with ``label`` is on
        screen now (its full row), or None when there is none (tests use it)."""
        self.relayout()
        today = date.today()
        for mark in self._marks:
            text = "New messages" if mark.day is None else day_label(mark.day, today)
            if text == label:
                return pygame.Rect(self.rect.x, self.rect.y + mark.y - self.top,
                                   self.rect.width, self._mark_height(mark.day))
        return None

    def mark_labels(self) -> list[str]:
        """The texts of the lines between bubbles, top to bottom (tests use it)."""
        self.relayout()
        today = date.today()
        return ["New messages" if mark.day is None else day_label(mark.day, today)
                for mark in self._marks]

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
                elif box.bottom > self.rect.bottom - GAP:
                    self.scroll_by(self.rect.bottom - GAP - box.bottom)
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


def _day(ts_ms: int) -> date:
    return date.fromtimestamp(ts_ms / 1000)
