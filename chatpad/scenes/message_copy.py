"""Choosing a message in a conversation and copying its text: click a bubble (or Alt+Up,
Alt+Down; Up when the box is empty), then Ctrl+C; or right-click a bubble for "Copy"."""

from __future__ import annotations

from collections.abc import Callable

import pygame

from chatpad.scenes.base import SceneHost
from chatpad.ui import Colors, MessageView

__all__ = ["MessageCopy"]

MENU_LABEL = "Copy text"


class MessageCopy:
    """The selection of one bubble in ``view``, the Ctrl+C that copies it, and the small
    right-click menu. ``is_writing`` tells whether the message box holds text (then Up and
    Down are the box's)."""

    def __init__(self, app: SceneHost, view: MessageView,
                 is_writing: Callable[[], bool]) -> None:
        self.app = app
        self.view = view
        self.is_writing = is_writing
        self.menu: pygame.Rect | None = None  # the open right-click menu

    def copy(self) -> bool:
        item = self.view.selected_item()
        if item is None:
            return False
        self.app.copy_text(item.body)
        return True

    def handle(self, event: pygame.event.Event) -> bool:
        """True when the event is used up."""
        if event.type == pygame.MOUSEBUTTONDOWN:
            return self._click(event.pos, event.button)
        if event.type == pygame.KEYDOWN:
            return self._key(event)
        if event.type == pygame.TEXTINPUT:
            self.view.selected = None  # writing again: Ctrl+C is the box's
            self.menu = None
        return False

    def _click(self, pos: tuple[int, int], button: int) -> bool:
        if self.menu is not None:
            hit = self.menu.collidepoint(pos)
            self.menu = None
            if hit and button == 1:
                self.copy()
                return True
        item = self.view.bubble_at(pos)
        if button == 3 and item is not None:
            self.view.select(item)
            self.menu = self._menu_rect(pos)
            return True
        if button == 1:
            self.view.selected = None if item is None else item.key
            return item is not None
        return False

    def _key(self, event: pygame.event.Event) -> bool:
        key, mod = event.key, event.mod
        selected = self.view.selected is not None
        if self.menu is not None and key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            self.menu = None
            return self.copy()
        if key == pygame.K_ESCAPE and (self.menu is not None or selected):
            self.menu = None
            self.view.selected = None
            return True
        if key == pygame.K_c and mod & (pygame.KMOD_CTRL | pygame.KMOD_META) and selected:
            return self.copy()
        if key in (pygame.K_UP, pygame.K_DOWN):
            alt = bool(mod & pygame.KMOD_ALT)
            if alt or (not self.is_writing() and (selected or key == pygame.K_UP)):
                self.menu = None
                self.view.select_step(-1 if key == pygame.K_UP else 1)
                return True
        return False

    def _menu_rect(self, pos: tuple[int, int]) -> pygame.Rect:
        styles = self.app.styles
        rect = pygame.Rect(pos, (styles.small.width(MENU_LABEL) + styles.px(32),
                                 styles.small.line_height + styles.px(16)))
        return rect.clamp(self.view.rect)

    def draw(self, surface: pygame.Surface) -> None:
        if self.menu is None:
            return
        styles = self.app.styles
        pygame.draw.rect(surface, Colors.SURFACE, self.menu, border_radius=8)
        if self.menu.collidepoint(self.app.mouse_pos):
            pygame.draw.rect(surface, Colors.SELECTED, self.menu.inflate(-4, -4),
                             border_radius=6)
        pygame.draw.rect(surface, Colors.BORDER, self.menu, width=1, border_radius=8)
        label = styles.small.render(MENU_LABEL, Colors.TEXT)
        surface.blit(label, label.get_rect(midleft=(self.menu.x + styles.px(16),
                                                    self.menu.centery)))
