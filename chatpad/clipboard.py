"""The system clipboard, through SDL (pygame-ce's ``pygame.scrap.put_text``); a missing
clipboard (no display, an old SDL) is logged, never fatal."""

from __future__ import annotations

import logging

import pygame

__all__ = ["put_text"]

log = logging.getLogger(__name__)


def put_text(text: str) -> bool:
    """Put ``text`` on the clipboard; False when there is none to put it on."""
    try:
        pygame.scrap.put_text(text)
    except (pygame.error, AttributeError) as exc:
        log.info("no clipboard: %s", exc)
        return False
    return True
