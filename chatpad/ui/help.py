"""The keys, listed on the F1 overlay (and in man/chatpad.1's KEYS section)."""

from __future__ import annotations

import pygame

from chatpad.ui.style import Colors, Styles

__all__ = ["SHORTCUTS", "draw_help"]

# (keys, what they do), in the order the overlay lists them
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Tab / Shift+Tab", "Move between fields and buttons"),
    ("Enter", "Sign in, open the chosen conversation, send, press the focused button"),
    ("Up / Down", "Choose a conversation in the list (Home, End, Page Up/Down too)"),
    ("Escape", "Back to the list; close a search, Settings or this help"),
    ("Shift+Enter", "New line in a message"),
    ("Page Up / Page Down", "Scroll the conversation"),
    ("End / Ctrl+End", "Jump to the newest message (Ctrl+End while writing)"),
    ("Ctrl+Enter", "Open the conversation of a new-message notice"),
    ("Ctrl+F", "Search the messages on this computer (works offline)"),
    ("Ctrl+,", "Settings: account, local data, sign out"),
    ("Alt+Up / Alt+Down", "Select a message (Up also does, when the box is empty)"),
    ("Ctrl+C", "Copy the selected message's text (right-click a message: Copy)"),
    ("Ctrl+Shift+L", "Switch between the light and the dark theme"),
    ("Ctrl + / Ctrl - / Ctrl 0", "Larger, smaller, normal text (80 % to 200 %)"),
    ("F5", "Reconnect now"),
    ("F1", "Show or hide these keys"),
)


def draw_help(surface: pygame.Surface, styles: Styles) -> pygame.Rect:
    """The keys over a dimmed window; returns the panel's rectangle."""
    shade = pygame.Surface(surface.get_size(), pygame.SRCALPHA)
    shade.fill(Colors.OVERLAY)
    surface.blit(shade, (0, 0))
    title = styles.name.render("Keys", Colors.TEXT)
    keys = [styles.small_bold.render(k, Colors.ACCENT) for k, _ in SHORTCUTS]
    whats = [styles.small.render(w, Colors.TEXT) for _, w in SHORTCUTS]
    line = max(styles.small.line_height, styles.small_bold.line_height) + styles.px(6)
    key_w = max(k.get_width() for k in keys)
    pad = styles.px(24)
    width = min(surface.get_width() - 24,
                pad * 2 + key_w + pad + max(w.get_width() for w in whats))
    height = min(surface.get_height() - 24,
                 pad * 2 + title.get_height() + styles.px(10) + line * len(SHORTCUTS)
                 + styles.small.line_height + styles.px(4))
    panel = pygame.Rect(0, 0, width, height)
    panel.center = surface.get_rect().center
    pygame.draw.rect(surface, Colors.SURFACE, panel, border_radius=14)
    pygame.draw.rect(surface, Colors.BORDER, panel, width=1, border_radius=14)
    clip = surface.get_clip()
    surface.set_clip(panel.inflate(-8, -8))
    surface.blit(title, (panel.x + pad, panel.y + pad))
    y = panel.y + pad + title.get_height() + styles.px(10)
    for key, what in zip(keys, whats, strict=True):
        surface.blit(key, (panel.x + pad, y))
        surface.blit(what, (panel.x + pad + key_w + pad, y))
        y += line
    hint = styles.small.render("Escape or F1 closes this.", Colors.MUTED)
    surface.blit(hint, (panel.x + pad, y + styles.px(4)))
    surface.set_clip(clip)
    return panel
