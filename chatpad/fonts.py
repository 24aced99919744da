"""Text drawing for the message view: a main font plus fallbacks, and caches.

The main font is the Noto Sans that pygame_gui ships (Latin, Greek, Cyrillic); pygame_gui's
Noto CJK, Arabic and Hebrew fonts and the system's emoji/symbol fonts (Segoe UI Emoji on
Windows, Noto Color Emoji or Symbola on Linux, Apple Color Emoji on macOS) fill in what it
lacks, character by character. A character no font has is drawn as the main font's
replacement box: text never makes chatpad crash.

Colour-bitmap emoji fonts (Noto Color Emoji) only come in one large size; such glyphs are
drawn at that size and scaled to the line height.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import pygame

__all__ = ["TextStyle", "data_font", "wrap"]

log = logging.getLogger(__name__)

BITMAP_EMOJI_SIZE = 109  # the one strike size Noto Color Emoji has
NOT_A_CHAR = "\U000f0000"  # private use plane 15: no font has a glyph for it
SURFACE_CACHE = 4096  # rendered runs kept: a screenful of bubbles many times over

# Marks, variation selectors and joiners: drawn with the character before them.
_JOINERS = frozenset({"Mn", "Me", "Cf"})
_SYSTEM_FALLBACKS = (
    "segoeuiemoji", "notocoloremoji", "applecoloremoji", "symbola", "notoemoji",
    "segoeuisymbol", "dejavusans",
)
_DATA_FALLBACKS = (
    "NotoSansJP-Regular.otf", "NotoSansSC-Regular.otf", "NotoSansKR-Regular.otf",
    "NotoSansArabic-Regular.ttf", "NotoSansHebrew-Regular.ttf",
)


def data_font(name: str) -> Path:
    """A font file shipped with pygame_gui (also bundled into the executable)."""
    import pygame_gui

    return Path(os.path.dirname(pygame_gui.__file__)) / "data" / name


@lru_cache(maxsize=1)
def _fallback_paths() -> tuple[str, ...]:
    paths = [str(data_font(name)) for name in _DATA_FALLBACKS if data_font(name).exists()]
    for name in _SYSTEM_FALLBACKS:
        try:
            found = pygame.font.match_font(name)
        except Exception:  # font discovery differs per platform; never fatal
            found = None
        if found and found not in paths:
            paths.append(found)
    return tuple(paths)


class _Face:
    """One font file at one size; bitmap-only fonts are loaded at their strike size."""

    def __init__(self, path: str, size: int) -> None:
        self.scale_to: int | None = None
        try:
            self.font = pygame.font.Font(path, size)
            if self.font.get_height() > size * 3:
                raise pygame.error("bitmap font")
        except (pygame.error, OSError, ValueError):
            self.font = pygame.font.Font(path, BITMAP_EMOJI_SIZE)
            self.scale_to = int(size * 1.2)
        self._notdef = self._metrics(NOT_A_CHAR)

    def _metrics(self, char: str) -> object:
        try:
            metrics = self.font.metrics(char)
        except (pygame.error, ValueError):
            return None
        return metrics[0] if metrics else None

    def has(self, char: str) -> bool:
        """Whether the font draws ``char`` itself: SDL_ttf answers a missing glyph with
        the metrics of the font's "missing" box, so compare with a surely missing one."""
        metrics = self._metrics(char)
        return metrics is not None and metrics != self._notdef

    def render(self, text: str, color: pygame.Color) -> pygame.Surface:
        surface = self.font.render(text, True, color)
        if self.scale_to is not None and surface.get_height() > 0:
            factor = self.scale_to / surface.get_height()
            size = (max(1, int(surface.get_width() * factor)), self.scale_to)
            surface = pygame.transform.smoothscale(surface.convert_alpha(), size)
        return surface


class TextStyle:
    """One font size and weight, with fallbacks and a cache of rendered runs."""

    def __init__(self, size: int, *, bold: bool = False) -> None:
        main = data_font("NotoSans-Bold.ttf" if bold else "NotoSans-Regular.ttf")
        self.main = _Face(str(main), size)
        self._fallbacks: list[_Face] | None = None
        self.size = size
        self.line_height = self.main.font.get_linesize()
        self._cache: OrderedDict[tuple[str, tuple[int, int, int, int]], pygame.Surface] = (
            OrderedDict()
        )
        self._runs: dict[str, list[tuple[_Face, str]]] = {}

    @property
    def fallbacks(self) -> list[_Face]:
        if self._fallbacks is None:
            faces: list[_Face] = []
            for path in _fallback_paths():
                try:
                    faces.append(_Face(path, self.size))
                except (pygame.error, OSError):
                    log.debug("font %s unusable", path)
            self._fallbacks = faces
        return self._fallbacks

    def _split(self, text: str) -> list[tuple[_Face, str]]:
        """Runs of text, each with the first font that has all its characters."""
        if text.isascii():
            return [(self.main, text)]
        runs = self._runs.get(text)
        if runs is not None:
            return runs
        runs = []
        for char in text:
            if runs and unicodedata.category(char) in _JOINERS:
                runs[-1] = (runs[-1][0], runs[-1][1] + char)  # stays with its base
                continue
            face = self.main
            if not (char.isascii() or self.main.has(char)):
                for candidate in self.fallbacks:
                    if candidate.has(char):
                        face = candidate
                        break
            if runs and runs[-1][0] is face:
                runs[-1] = (face, runs[-1][1] + char)
            else:
                runs.append((face, char))
        if len(self._runs) > SURFACE_CACHE:
            self._runs.clear()
        self._runs[text] = runs
        return runs

    def width(self, text: str) -> int:
        total = 0
        for face, run in self._split(text):
            if face.scale_to is None:
                total += face.font.size(run)[0]
            else:
                total += face.render(run, pygame.Color("black")).get_width()
        return total

    def render(self, text: str, color: pygame.Color | tuple[int, int, int]) -> pygame.Surface:
        """The text in one line, cached; any character at all is safe."""
        rgba = pygame.Color(color)
        key = (text, (rgba.r, rgba.g, rgba.b, rgba.a))
        surface = self._cache.get(key)
        if surface is not None:
            self._cache.move_to_end(key)
            return surface
        text = text.replace("\x00", "\ufffd")
        runs = self._split(text) if text else []
        parts = []
        for face, run in runs:
            try:
                parts.append(face.render(run, rgba))
            except pygame.error:  # e.g. a run of zero-width characters
                log.debug("a run of %d characters did not render", len(run))
        width = sum(p.get_width() for p in parts)
        surface = pygame.Surface((max(1, width), self.line_height), pygame.SRCALPHA)
        x = 0
        for part in parts:
            surface.blit(part, (x, (self.line_height - part.get_height()) // 2))
            x += part.get_width()
        self._cache[key] = surface
        if len(self._cache) > SURFACE_CACHE:
            self._cache.popitem(last=False)
        return surface


def wrap(style: TextStyle, text: str, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; newlines are kept; over-long words break."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words = paragraph.split(" ")
        line = ""
        for word in words:
            candidate = word if not line else f"{line} {word}"
            if style.width(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            # the word alone may be too long: cut it by characters
            while style.width(word) > width and len(word) > 1:
                cut = _fit(style, word, width)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _fit(style: TextStyle, word: str, width: int) -> int:
    """How many leading characters of ``word`` fit in ``width`` (at least one)."""
    low, high = 1, len(word)
    while low < high:
        mid = (low + high + 1) // 2
        if style.width(word[:mid]) <= width:
            low = mid
        else:
            high = mid - 1
    return low
