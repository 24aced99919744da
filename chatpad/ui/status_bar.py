"""The top bar, on every screen: brand, account, connection state, outbox count."""

from __future__ import annotations

import time

import pygame

from chatpad.messages import Status
from chatpad.model import Model
from chatpad.ui.style import Colors, Styles

__all__ = ["STATUS_BAR_HEIGHT", "draw_status_bar", "status_text"]

STATUS_BAR_HEIGHT = 48


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
        x += who.get_width()
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
    keys = styles.small_bold.render("F1 Keys", Colors.MUTED)  # where the shortcuts are
    right -= keys.get_width() + 16
    if right > x + 24:
        surface.blit(keys, (right, (STATUS_BAR_HEIGHT - keys.get_height()) // 2))


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
