"""Hand-drawn parts of the screens: colours, the status bar, the conversation list and
the message view. pygame_gui draws the form controls; these draw what would be too slow
or too plain as widgets (a thousand bubbles are never a thousand elements)."""

from __future__ import annotations

import bisect
import time
import zlib
from collections.abc import Callable

import pygame

from chatpad.fonts import TextStyle, wrap
from chatpad.items import ChatItem, Summary
from chatpad.messages import Status
from chatpad.model import Model, Thread

__all__ = ["Colors", "ConversationList", "MessageView", "Styles", "draw_status_bar"]

STATUS_BAR_HEIGHT = 48
ROW_HEIGHT = 72
LOAD_OLDER_MARGIN = 80  # px from the top of the history at which the next page is asked for


class Colors:
    BACKGROUND = pygame.Color("#eef1f5")
    SURFACE = pygame.Color("#ffffff")
    TEXT = pygame.Color("#1c1e21")
    MUTED = pygame.Color("#6b7280")
    BORDER = pygame.Color("#dde1e7")
    ACCENT = pygame.Color("#2b6cf6")
    MINE = pygame.Color("#2b6cf6")
    MINE_TEXT = pygame.Color("#ffffff")
    MINE_META = pygame.Color("#d6e4ff")
    THEIRS = pygame.Color("#ffffff")
    THEIRS_META = pygame.Color("#7b8190")
    READ = pygame.Color("#7ff3ff")
    FAILED = pygame.Color("#ffd2d2")
    OK = pygame.Color("#1e9e5a")
    WARN = pygame.Color("#d98a00")
    DOWN = pygame.Color("#8a8f98")
    ERROR = pygame.Color("#c62828")
    HOVER = pygame.Color("#f4f7fc")
    SELECTED = pygame.Color("#e6eefc")
    BANNER = pygame.Color("#fff4d6")
    BANNER_TEXT = pygame.Color("#7a5200")


AVATAR_COLORS = [pygame.Color(c) for c in (
    "#5b8def", "#ef6c5b", "#37b37e", "#a66ee8", "#f0a23b", "#22a6b3", "#e05a9c", "#6c7a89",
)]


class Styles:
    """The text styles of the hand-drawn parts (created after pygame's font init)."""

    def __init__(self) -> None:
        self.body = TextStyle(16)
        self.meta = TextStyle(12)
        self.name = TextStyle(16, bold=True)
        self.small = TextStyle(13)
        self.small_bold = TextStyle(13, bold=True)
        self.brand = TextStyle(18, bold=True)
        self.avatar = TextStyle(18, bold=True)


def clock(ts_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ts_ms / 1000))


def when(ts_ms: int) -> str:
    """A time for the conversation list: the clock today, else the day."""
    then = time.localtime(ts_ms / 1000)
    now = time.localtime()
    if then[:3] == now[:3]:
        return time.strftime("%H:%M", then)
    return time.strftime("%d %b", then)


def status_text(status: Status) -> tuple[str, pygame.Color]:
    """What the status bar says about the connection."""
    state = status.state
    if state == "connected":
        return "Connected", Colors.OK
    if state == "connecting":
        return "Connecting…", Colors.WARN
    if state == "reconnecting":
        left = 0.0 if status.retry_at is None else status.retry_at - time.monotonic()
        seconds = max(0, round(left))
        return f"Reconnecting in {seconds} s", Colors.WARN
    if state == "signed_out":
        return "Not signed in", Colors.DOWN
    return "Offline", Colors.DOWN


def draw_status_bar(surface: pygame.Surface, styles: Styles, model: Model) -> None:
    """The top bar, on every screen: brand, account, connection state, outbox count."""
    width = surface.get_width()
    bar = pygame.Rect(0, 0, width, STATUS_BAR_HEIGHT)
    surface.fill(Colors.SURFACE, bar)
    pygame.draw.line(surface, Colors.BORDER, (0, bar.bottom - 1), (width, bar.bottom - 1))
    brand = styles.brand.render("chatpad", Colors.ACCENT)
    surface.blit(brand, (16, (STATUS_BAR_HEIGHT - brand.get_height()) // 2))
    x = 16 + brand.get_width() + 10
    if model.me:
        who = styles.small.render(f"· {model.me}", Colors.MUTED)
        surface.blit(who, (x, (STATUS_BAR_HEIGHT - who.get_height()) // 2))
    right = width - 16
    outbox = model.status.outbox
    label = "Outbox empty" if outbox == 0 else f"{outbox} waiting to send"
    pill = _pill(styles, label, Colors.MUTED if outbox == 0 else Colors.WARN)
    right -= pill.get_width()
    surface.blit(pill, (right, (STATUS_BAR_HEIGHT - pill.get_height()) // 2))
    text, color = status_text(model.status)
    pill = _pill(styles, text, color, dot=True)
    right -= pill.get_width() + 8
    surface.blit(pill, (right, (STATUS_BAR_HEIGHT - pill.get_height()) // 2))


def _pill(styles: Styles, text: str, color: pygame.Color, *, dot: bool = False) -> pygame.Surface:
    label = styles.small_bold.render(text, color)
    pad = 10
    dot_w = 14 if dot else 0
    pill = pygame.Surface((label.get_width() + 2 * pad + dot_w, 28), pygame.SRCALPHA)
    tint = pygame.Color(color.r, color.g, color.b, 28)
    pygame.draw.rect(pill, tint, pill.get_rect(), border_radius=14)
    if dot:
        pygame.draw.circle(pill, color, (pad + 4, 14), 5)
    pill.blit(label, (pad + dot_w, (28 - label.get_height()) // 2))
    return pill


def draw_avatar(surface: pygame.Surface, styles: Styles, name: str, center: tuple[int, int],
                radius: int = 22) -> None:
    color = AVATAR_COLORS[zlib.crc32(name.encode()) % len(AVATAR_COLORS)]
    pygame.draw.circle(surface, color, center, radius)
    letter = styles.avatar.render(name[:1].upper() or "?", Colors.SURFACE)
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

    def peers(self) -> list[str]:
        return list(self.users) if self.show_users else [row.peer for row in self.rows]

    def row_rect(self, index: int) -> pygame.Rect:
        return pygame.Rect(self.rect.x, self.rect.y + index * ROW_HEIGHT - self.scroll,
                           self.rect.width, ROW_HEIGHT)

    def index_at(self, pos: tuple[int, int]) -> int | None:
        if not self.rect.collidepoint(pos):
            return None
        index = (pos[1] - self.rect.y + self.scroll) // ROW_HEIGHT
        return index if 0 <= index < len(self.peers()) else None

    def scroll_by(self, dy: int) -> None:
        most = max(0, len(self.peers()) * ROW_HEIGHT - self.rect.height)
        self.scroll = max(0, min(most, self.scroll - dy))

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
        first = self.scroll // ROW_HEIGHT
        last = min(len(peers), first + self.rect.height // ROW_HEIGHT + 2)
        for index in range(first, last):
            row = self.row_rect(index)
            if index == self.hover or index == self.selected:
                surface.fill(Colors.SELECTED if index == self.selected else Colors.HOVER, row)
            draw_avatar(surface, styles, peers[index], (row.x + 40, row.centery))
            x = row.x + 76
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
        surface.set_clip(clip)

    def _draw_summary(self, surface: pygame.Surface, summary: Summary, row: pygame.Rect,
                      name: pygame.Surface, x: int) -> None:
        styles = self.styles
        surface.blit(name, (x, row.y + 12))
        stamp = styles.small.render(when(summary.ts), Colors.ACCENT if summary.unread
                                    else Colors.MUTED)
        surface.blit(stamp, (row.right - stamp.get_width() - 20, row.y + 14))
        preview_text = ("You: " if summary.mine else "") + summary.preview
        room = row.right - x - 70
        preview_text = _ellipsize(styles.small, preview_text, room)
        preview = styles.small.render(preview_text, Colors.TEXT if summary.unread
                                      else Colors.MUTED)
        surface.blit(preview, (x, row.y + 40))
        if summary.unread:
            count = styles.small_bold.render(
                str(summary.unread) if summary.unread < 100 else "99+", Colors.SURFACE)
            width = max(24, count.get_width() + 12)
            badge = pygame.Rect(row.right - width - 20, row.y + 38, width, 24)
            pygame.draw.rect(surface, Colors.ACCENT, badge, border_radius=12)
            surface.blit(count, count.get_rect(center=badge.center))


def _ellipsize(style: TextStyle, text: str, width: int) -> str:
    if style.width(text) <= width:
        return text
    while text and style.width(text + "…") > width:
        text = text[: max(0, len(text) - max(1, len(text) // 8))]
    return text + "…"


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
        self._layout_key: tuple[int, int, int] = (-1, -1, -1)
        self._bubbles: dict[tuple[str, str, str, str], _Bubble] = {}
        self._items: list[ChatItem] = []
        self._tops: list[int] = []
        self._height = 0
        self.pad_bottom = 0  # room kept free under the newest bubble (the offline banner)

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
        key = (self.thread.version, self.rect.width, self.pad_bottom)
        if key == self._layout_key:
            return
        if key[1] != self._layout_key[1]:
            self._bubbles.clear()
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

    def item_rect(self, item: ChatItem) -> pygame.Rect | None:
        """Where a message is on screen now, or None (tests use it)."""
        self.relayout()
        for index, candidate in enumerate(self._items):
            if candidate.key == item.key:
                bubble = self._bubble(candidate)
                return pygame.Rect(self.rect.x, self.rect.y + self._tops[index] - self.top,
                                   bubble.width, bubble.height)
        return None
