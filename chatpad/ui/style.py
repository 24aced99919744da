"""The look of the hand-drawn parts: colours and text styles (pygame_gui's widgets take
theirs from theme.json, or theme-dark.json in the dark theme).

``Colors.X`` is read at draw time everywhere, so switching theme is
``Colors.use(DARK)``: the attributes change in place. ``Styles`` is one object the app
hands to every view; ``Styles.rescale(scale)`` replaces its text styles in place and bumps
``generation``, which cached layouts compare to know they must wrap again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pygame

from chatpad.fonts import TextStyle

__all__ = ["AVATAR_COLORS", "CHROME_MAX_SCALE", "DARK", "LIGHT", "Colors", "Styles"]

LIGHT: Mapping[str, str] = {
    "BACKGROUND": "#eef1f5",
    "SURFACE": "#ffffff",
    "TEXT": "#1c1e21",
    "MUTED": "#6b7280",
    "BORDER": "#dde1e7",
    "ACCENT": "#2b6cf6",
    "ON_ACCENT": "#ffffff",
    "FOCUS": "#2b6cf6",
    "MINE": "#2b6cf6",
    "MINE_TEXT": "#ffffff",
    "MINE_META": "#d6e4ff",
    "THEIRS": "#ffffff",
    "THEIRS_META": "#7b8190",
    "READ": "#7ff3ff",
    "FAILED": "#ffd2d2",
    "OK": "#1e9e5a",
    "WARN": "#d98a00",
    "DOWN": "#8a8f98",
    "ERROR": "#c62828",
    "HOVER": "#f4f7fc",
    "SELECTED": "#e6eefc",
    "BANNER": "#fff4d6",
    "BANNER_TEXT": "#7a5200",
    "OVERLAY": "#0f172acc",
}

DARK: Mapping[str, str] = {
    "BACKGROUND": "#121519",
    "SURFACE": "#1d2127",
    "TEXT": "#e7e9ec",
    "MUTED": "#9aa2ae",
    "BORDER": "#313741",
    "ACCENT": "#5b8ff9",
    "ON_ACCENT": "#ffffff",
    "FOCUS": "#8fb3ff",
    "MINE": "#2f63d8",
    "MINE_TEXT": "#ffffff",
    "MINE_META": "#c9d8ff",
    "THEIRS": "#262b33",
    "THEIRS_META": "#9aa2ae",
    "READ": "#7ff3ff",
    "FAILED": "#5c2b2b",
    "OK": "#3fcf84",
    "WARN": "#f0ad3b",
    "DOWN": "#8a8f98",
    "ERROR": "#ef5b5b",
    "HOVER": "#252a32",
    "SELECTED": "#263550",
    "BANNER": "#3a3120",
    "BANNER_TEXT": "#f3d38c",
    "OVERLAY": "#000000cc",
}


class Colors:
    """The current palette, as class attributes (``Colors.TEXT``); see :meth:`use`."""

    name: ClassVar[str] = "light"
    BACKGROUND = pygame.Color(LIGHT["BACKGROUND"])
    SURFACE = pygame.Color(LIGHT["SURFACE"])
    TEXT = pygame.Color(LIGHT["TEXT"])
    MUTED = pygame.Color(LIGHT["MUTED"])
    BORDER = pygame.Color(LIGHT["BORDER"])
    ACCENT = pygame.Color(LIGHT["ACCENT"])
    ON_ACCENT = pygame.Color(LIGHT["ON_ACCENT"])  # text and marks drawn on ACCENT
    FOCUS = pygame.Color(LIGHT["FOCUS"])  # the keyboard focus ring
    MINE = pygame.Color(LIGHT["MINE"])
    MINE_TEXT = pygame.Color(LIGHT["MINE_TEXT"])
    MINE_META = pygame.Color(LIGHT["MINE_META"])
    THEIRS = pygame.Color(LIGHT["THEIRS"])
    THEIRS_META = pygame.Color(LIGHT["THEIRS_META"])
    READ = pygame.Color(LIGHT["READ"])
    FAILED = pygame.Color(LIGHT["FAILED"])
    OK = pygame.Color(LIGHT["OK"])
    WARN = pygame.Color(LIGHT["WARN"])
    DOWN = pygame.Color(LIGHT["DOWN"])
    ERROR = pygame.Color(LIGHT["ERROR"])
    HOVER = pygame.Color(LIGHT["HOVER"])
    SELECTED = pygame.Color(LIGHT["SELECTED"])
    BANNER = pygame.Color(LIGHT["BANNER"])
    BANNER_TEXT = pygame.Color(LIGHT["BANNER_TEXT"])
    OVERLAY = pygame.Color(LIGHT["OVERLAY"])  # behind the help panel

    @classmethod
    def use(cls, palette: Mapping[str, str]) -> None:
        """Switch to ``palette`` (:data:`LIGHT` or :data:`DARK`) in place: every later
        ``Colors.X`` reads the new colour."""
        for attr, value in palette.items():
            setattr(cls, attr, pygame.Color(value))
        cls.name = "dark" if palette is DARK else "light"


AVATAR_COLORS = [pygame.Color(c) for c in (
    "#5b8def", "#ef6c5b", "#37b37e", "#a66ee8", "#f0a23b", "#22a6b3", "#e05a9c", "#6c7a89",
)]

CHROME_MAX_SCALE = 1.25  # the status bar keeps its 48 px: its text grows to 125 % at most

# name: (size at 100 %, bold, part of the fixed-height chrome)
_SIZES: Mapping[str, tuple[int, bool, bool]] = {
    "body": (16, False, False),
    "meta": (12, False, False),
    "name": (16, True, False),
    "small": (13, False, False),
    "small_bold": (13, True, True),
    "brand": (18, True, True),
    "avatar": (18, True, False),
}


class Styles:
    """The text styles of the hand-drawn parts (created after pygame's font init), at
    ``scale`` times their normal size."""

    body: TextStyle
    meta: TextStyle
    name: TextStyle
    small: TextStyle
    small_bold: TextStyle
    brand: TextStyle
    avatar: TextStyle

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = 0.0
        self.generation = 0  # bumped on every rescale: cached layouts compare it
        self.rescale(scale)

    def rescale(self, scale: float) -> None:
        """Make every style ``scale`` times its normal size, in place."""
        if scale == self.scale:
            return
        self.scale = scale
        self.generation += 1
        for attr, (size, bold, chrome) in _SIZES.items():
            factor = min(scale, CHROME_MAX_SCALE) if chrome else scale
            setattr(self, attr, TextStyle(max(6, round(size * factor)), bold=bold))

    def px(self, length: int) -> int:
        """A length that grows with the text (row heights, offsets)."""
        return round(length * self.scale)
