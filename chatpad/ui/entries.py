"""Text fields whose placeholder looks like a placeholder.

pygame_gui draws a field's placeholder in the colour of typed text, so an empty field
looks filled in. These draw it in the theme's ``placeholder_text`` colour (chatpad's own
key in the ``text_entry_line`` and ``text_entry_box`` blocks of theme.json).
"""

from __future__ import annotations

from typing import Any

import pygame
from pygame_gui.elements import UITextEntryBox, UITextEntryLine

__all__ = ["EntryBox", "EntryLine"]

PLACEHOLDER_KEY = "placeholder_text"  # the theme colour of placeholder text


class EntryLine(UITextEntryLine):
    """A :class:`UITextEntryLine` with a muted placeholder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._placeholder_shown = False
        super().__init__(*args, **kwargs)
        self._show_placeholder_colour()

    def placeholder_shown(self) -> bool:
        return not self.text and not self.is_focused and bool(self.placeholder_text)

    def update(self, time_delta: float) -> None:
        super().update(time_delta)
        self._show_placeholder_colour()

    def _show_placeholder_colour(self) -> None:
        shown = self.placeholder_shown()
        if shown != self._placeholder_shown:
            self._placeholder_shown = shown
            self.rebuild()  # the text colour is fixed when the shape is built

    def rebuild(self) -> None:
        if not getattr(self, "_placeholder_shown", False):
            super().rebuild()
            return
        typed = self.text_colour
        self.text_colour = self.ui_theme.get_colour_or_gradient(PLACEHOLDER_KEY,
                                                                self.combined_element_ids)
        try:
            super().rebuild()
        finally:
            self.text_colour = typed


class EntryBox(UITextEntryBox):
    """A :class:`UITextEntryBox` with a muted placeholder."""

    def placeholder_shown(self) -> bool:
        return not self.html_text and bool(self.placeholder_text) and not self.is_focused

    def parse_html_into_style_data(self) -> None:
        parser = self.parser
        if parser is None or not self.placeholder_shown():
            super().parse_html_into_style_data()
            return
        colour: pygame.Color | Any = self.ui_theme.get_colour_or_gradient(
            PLACEHOLDER_KEY, self.combined_element_ids)
        default, current = parser.default_style["font_colour"], parser.current_style.get(
            "font_colour")
        parser.default_style["font_colour"] = parser.current_style["font_colour"] = colour
        try:
            super().parse_html_into_style_data()
        finally:
            parser.default_style["font_colour"] = default
            parser.current_style["font_colour"] = current
