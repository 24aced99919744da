"""The conversation list (or the people a search found), drawn by hand."""

from __future__ import annotations

import time
import zlib

import pygame

from chatpad.fonts import TextStyle
from chatpad.items import Summary
from chatpad.ui.style import AVATAR_COLORS, Colors, Styles

__all__ = ["ROW_HEIGHT", "ConversationList", "draw_avatar", "draw_queued_mark", "is_queued",
           "stamp", "when"]

ROW_HEIGHT = 72  # px at the normal text size; rows grow with the text


def when(ts_ms: int) -> str:
    """A time for the conversation list: the clock today, else the day."""
    then = time.localtime(ts_ms / 1000)
    now = time.localtime()
    if then[:3] == now[:3]:
        return time.strftime("%H:%M", then)
    return time.strftime("%d %b", then)


def is_queued(summary: Summary) -> bool:
    """Whether the conversation's last message is mine and still waits in the outbox (the
    server has not given it a seq yet)."""
    return summary.mine and summary.seq < 0 and not summary.failed


def stamp(summary: Summary) -> str:
    """What the row says at its top right: "Queued", "Not sent", or when the last
    message was."""
    if summary.failed:
        return "Not sent"
    return "Queued" if is_queued(summary) else when(summary.ts)


def draw_queued_mark(surface: pygame.Surface, color: pygame.Color, x: int, cy: int) -> None:
    """The outbox's clock, as on a queued bubble."""
    pygame.draw.circle(surface, color, (x + 6, cy), 6, width=1)
    pygame.draw.lines(surface, color, False, [(x + 6, cy - 4), (x + 6, cy), (x + 9, cy + 2)])


def draw_avatar(surface: pygame.Surface, styles: Styles, name: str, center: tuple[int, int],
                radius: int = 22) -> None:
    color = AVATAR_COLORS[zlib.crc32(name.encode()) % len(AVATAR_COLORS)]
    pygame.draw.circle(surface, color, center, radius)
    letter = styles.avatar.render(name[:1].upper() or "?", Colors.ON_ACCENT)
    surface.blit(letter, letter.get_rect(center=center))


class ConversationList:
    """Rows of conversations (or of found users), drawn by hand, clickable."""

    def __init__(self, styles: Styles) -> None:
        self.styles = styles
        self.rect = pygame.Rect(0, 0, 0, 0)
        self.rows: list[Summary] = []
        self.users: tuple[str, ...] = ()
        self.show_users = False
        self.selected = 0
        self.hover: int | None = None
        self.scroll = 0
        self.focus_ring = False  # ring the selected row: it was chosen with the keyboard

    @property
    def row_height(self) -> int:
        return self.styles.px(ROW_HEIGHT)

    def peers(self) -> list[str]:
        return list(self.users) if self.show_users else [row.peer for row in self.rows]

    def row_rect(self, index: int) -> pygame.Rect:
        return pygame.Rect(self.rect.x, self.rect.y + index * self.row_height - self.scroll,
                           self.rect.width, self.row_height)

    def index_at(self, pos: tuple[int, int]) -> int | None:
        if not self.rect.collidepoint(pos):
            return None
        index = (pos[1] - self.rect.y + self.scroll) // self.row_height
        return index if 0 <= index < len(self.peers()) else None

    def scroll_by(self, dy: int) -> None:
        most = max(0, len(self.peers()) * self.row_height - self.rect.height)
        self.scroll = max(0, min(most, self.scroll - dy))

    def choose(self, index: int) -> None:
        """Select row ``index`` (clamped) from the keyboard, and scroll it into view."""
        count = len(self.peers())
        if not count:
            return
        self.selected = max(0, min(count - 1, index))
        self.focus_ring = True
        row = self.row_rect(self.selected)
        if row.top < self.rect.top:
            self.scroll -= self.rect.top - row.top
        elif row.bottom > self.rect.bottom:
            self.scroll += row.bottom - self.rect.bottom
        self.scroll_by(0)

    @property
    def rows_per_page(self) -> int:
        return max(1, self.rect.height // self.row_height)

    def draw(self, surface: pygame.Surface) -> None:
        styles = self.styles
        surface.fill(Colors.SURFACE, self.rect)
        clip = surface.get_clip()
        surface.set_clip(self.rect)
        peers = self.peers()
        if not peers:
            text = ("No one found with that name." if self.show_users
                    else "No conversations yet. Find someone above to start one.")
            hint = styles.small.render(text, Colors.MUTED)
            surface.blit(hint, hint.get_rect(midtop=(self.rect.centerx, self.rect.y + 32)))
        first = self.scroll // self.row_height
        last = min(len(peers), first + self.rect.height // self.row_height + 2)
        for index in range(first, last):
            row = self.row_rect(index)
            if index == self.hover or index == self.selected:
                surface.fill(Colors.SELECTED if index == self.selected else Colors.HOVER, row)
            radius = max(18, styles.px(22))
            draw_avatar(surface, styles, peers[index], (row.x + 18 + radius, row.centery),
                        radius)
            x = row.x + 18 + 2 * radius + 14
            name = styles.name.render(peers[index], Colors.TEXT)
            if self.show_users:
                surface.blit(name, (x, row.centery - name.get_height() // 2))
                hint = styles.small.render("Start a conversation", Colors.ACCENT)
                surface.blit(hint, (row.right - hint.get_width() - 20,
                                    row.centery - hint.get_height() // 2))
            else:
                self._draw_summary(surface, self.rows[index], row, name, x)
            pygame.draw.line(surface, Colors.BORDER, (x, row.bottom - 1),
                             (row.right, row.bottom - 1))
            if self.focus_ring and index == self.selected:
                pygame.draw.rect(surface, Colors.FOCUS, row.inflate(-6, -6), width=2,
                                 border_radius=8)
        surface.set_clip(clip)

    def _draw_summary(self, surface: pygame.Surface, summary: Summary, row: pygame.Rect,
                      name: pygame.Surface, x: int) -> None:
        styles = self.styles
        half = row.height // 2
        name_y = row.y + half - name.get_height() - 1
        surface.blit(name, (x, name_y))
        color = (Colors.ERROR if summary.failed else Colors.ACCENT if summary.unread
                 else Colors.MUTED)
        label = styles.small.render(stamp(summary), color)
        surface.blit(label, (row.right - label.get_width() - 20,
                             name_y + (name.get_height() - label.get_height()) // 2))
        preview_text = ("You: " if summary.mine else "") + summary.preview
        room = row.right - x - 70
        if is_queued(summary):  # the clock, then the text: it has not left yet
            draw_queued_mark(surface, Colors.MUTED, x,
                             row.y + half + 3 + styles.small.line_height // 2)
            x += 18
            room -= 18
        preview_text = _ellipsize(styles.small, preview_text, room)
        preview = styles.small.render(preview_text, Colors.TEXT if summary.unread
                                      else Colors.MUTED)
        surface.blit(preview, (x, row.y + half + 3))
        if summary.unread:
            count = styles.small_bold.render(
                str(summary.unread) if summary.unread < 100 else "99+", Colors.ON_ACCENT)
            high = max(24, count.get_height() + 2)
            width = max(high, count.get_width() + 12)
            badge = pygame.Rect(row.right - width - 20, row.y + half + 2, width, high)
            pygame.draw.rect(surface, Colors.ACCENT, badge, border_radius=high // 2)
            surface.blit(count, count.get_rect(center=badge.center))


def _ellipsize(style: TextStyle, text: str, width: int) -> str:
    if style.width(text) <= width:
        return text
    while text and style.width(text + "…") > width:
        text = text[: max(0, len(text) - max(1, len(text) // 8))]
    return text + "…"
