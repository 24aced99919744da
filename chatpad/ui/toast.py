"""The in-app notice of a message from someone whose conversation is not on screen: who,
and the first words, for a few seconds. A click (or Ctrl+Enter) opens that conversation."""

from __future__ import annotations

import pygame

from chatpad.ui.conversation_list import _ellipsize, draw_avatar
from chatpad.ui.status_bar import STATUS_BAR_HEIGHT
from chatpad.ui.style import Colors, Styles

__all__ = ["TOAST_SECONDS", "Toast"]

TOAST_SECONDS = 5.0  # long enough to read a name and a few words, short enough not to linger
TOAST_SIZE = (340, 64)
OPEN_HINT = "Ctrl+Enter"
WORDS_KEPT = 120  # characters of the message kept: more never fit in the box


class Toast:
    """At most one notice at a time: a newer message replaces the one shown."""

    def __init__(self, styles: Styles) -> None:
        self.styles = styles
        self.peer: str | None = None
        self.sender = ""
        self.words = ""
        self.left = 0.0  # seconds until it goes away
        self.rect = pygame.Rect(0, 0, *TOAST_SIZE)
        self._fitted: tuple[str, str] | None = None  # name and words cut to fit the box

    @property
    def is_shown(self) -> bool:
        return self.peer is not None

    def show(self, peer: str, sender: str, body: str) -> None:
        self.peer, self.sender = peer, sender
        self.words = " ".join(body[: 4 * WORDS_KEPT].split())[:WORDS_KEPT]
        self.left = TOAST_SECONDS
        self._fitted = None
        self.rect = pygame.Rect(0, 0, 0, 0)  # nothing to click until it is drawn

    def dismiss(self) -> None:
        self.peer = None
        self.left = 0.0

    def update(self, dt: float) -> None:
        if self.peer is not None:
            self.left -= dt
            if self.left <= 0:
                self.dismiss()

    def hit(self, pos: tuple[int, int]) -> bool:
        return self.is_shown and self.rect.collidepoint(pos)

    def text(self) -> str:
        """What it says, in one line ("bob: first words…"); the drawing fits it to the box."""
        return f"{self.sender}: {self.words}"

    def draw(self, surface: pygame.Surface) -> None:
        if self.peer is None:
            return
        styles = self.styles
        box = self.rect = pygame.Rect(0, 0, *TOAST_SIZE)
        box.topright = (surface.get_width() - 16, STATUS_BAR_HEIGHT + 10)
        shadow = box.move(0, 3)
        pygame.draw.rect(surface, Colors.BORDER, shadow, border_radius=12)
        pygame.draw.rect(surface, Colors.SURFACE, box, border_radius=12)
        pygame.draw.rect(surface, Colors.BORDER, box, width=1, border_radius=12)
        draw_avatar(surface, styles, self.sender, (box.x + 32, box.centery), radius=18)
        x = box.x + 62
        hint = styles.meta.render(OPEN_HINT, Colors.MUTED)
        surface.blit(hint, (box.right - 14 - hint.get_width(), box.y + 14))
        if self._fitted is None:
            name_room = box.right - 14 - hint.get_width() - 8 - x
            self._fitted = (_ellipsize(styles.small_bold, self.sender, name_room),
                            _ellipsize(styles.small, self.words, box.right - 14 - x))
        name, words = self._fitted
        surface.blit(styles.small_bold.render(name, Colors.TEXT), (x, box.y + 11))
        surface.blit(styles.small.render(words, Colors.MUTED), (x, box.y + 34))
