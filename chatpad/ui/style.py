"""The look of the hand-drawn parts: colours and text styles (pygame_gui's widgets take
theirs from theme.json)."""

from __future__ import annotations

import pygame

from chatpad.fonts import TextStyle

__all__ = ["AVATAR_COLORS", "Colors", "Styles"]


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
