"""What every screen shares: the :class:`SceneHost` protocol (all a scene may use of the
app that shows it) and the :class:`Scene` base with Tab focus and the hooks the app calls."""

from __future__ import annotations

from typing import Any, Protocol

import pygame
import pygame_gui

from chatpad import messages as m
from chatpad.model import Model
from chatpad.profile import Profile
from chatpad.ui import Colors, Styles

__all__ = ["Scene", "SceneHost", "place"]


class SceneHost(Protocol):
    """What a scene may use of the app that shows it: the model to read, commands to
    submit, and the window."""

    manager: pygame_gui.UIManager
    styles: Styles
    model: Model
    mouse_pos: tuple[int, int]
    profile: Profile  # where the local data lives

    @property
    def screen_size(self) -> tuple[int, int]: ...

    def submit(self, command: m.Command) -> None: ...

    def has_focus(self) -> bool: ...

    def open_conversation(self, peer: str) -> None: ...

    def close_conversation(self) -> None: ...

    def show(self, scene: Scene) -> None: ...

    def banner_text(self) -> str | None: ...

    def banner_height(self, width: int) -> int: ...
    def copy_text(self, text: str) -> None: ...


class Scene:
    """Base: keyboard focus moves with Tab through ``focus_order``."""

    def __init__(self, app: SceneHost) -> None:
        self.app = app
        self.manager = app.manager
        self.focus_order: list[Any] = []
        self.banner_room = 0  # px kept free for the connection banner (0: none shown)
        self.banner_area = pygame.Rect(0, 0, 0, 0)  # where the app draws the banner

    def keep_banner_room(self, width: int) -> None:
        """Lay the screen out again when the banner (``width`` px wide) appears, goes or
        changes height, so that it takes room of its own instead of covering content."""
        room = self.app.banner_height(width)
        if room != self.banner_room:
            self.banner_room = room
            self.layout(self.app.screen_size)

    def handle(self, event: pygame.event.Event) -> bool:
        """React before pygame_gui does; True when the event is used up."""
        if event.type == pygame.KEYDOWN and event.key == pygame.K_TAB and self.focus_order:
            backwards = bool(event.mod & pygame.KMOD_SHIFT)
            self.move_focus(-1 if backwards else 1)
            return True
        return False

    def move_focus(self, step: int) -> None:
        focused = [i for i, el in enumerate(self.focus_order) if el.is_focused]
        index = (focused[0] + step) % len(self.focus_order) if focused else 0
        self.focus(self.focus_order[index])

    def focus(self, element: Any) -> None:
        self.manager.set_focus_set(element)

    def update(self, dt: float) -> None:
        pass

    def draw(self, surface: pygame.Surface) -> None:
        pass

    def draw_focus(self, surface: pygame.Surface) -> None:
        """The focus ring around the focused field or button (drawn over the widgets)."""
        for element in self.focus_order:
            if element.is_focused and element.visible:
                pygame.draw.rect(surface, Colors.FOCUS, element.rect.inflate(6, 6), width=2,
                                 border_radius=11)

    def layout(self, size: tuple[int, int]) -> None:
        pass

    def close(self) -> None:
        for element in self.elements():
            element.kill()

    def elements(self) -> list[Any]:
        return []


def place(element: Any, rect: pygame.Rect) -> None:
    element.set_relative_position(rect.topleft)
    element.set_dimensions(rect.size)
    element.rebuild()
