"""Settings: who is signed in where, where the local data lives, and signing out with the
choice to remove that data from this computer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pygame
import pygame_gui
from pygame_gui.core import ObjectID
from pygame_gui.elements import UIButton, UICheckBox, UILabel

from chatpad import messages as m
from chatpad.fonts import wrap
from chatpad.scenes.base import Scene, SceneHost, place
from chatpad.ui import STATUS_BAR_HEIGHT, Colors

__all__ = ["SettingsScene"]


class SettingsScene(Scene):
    """The account and its local data; sign out, keeping or removing that data."""

    CARD_W, CARD_H = 520, 470

    def __init__(self, app: SceneHost) -> None:
        super().__init__(app)
        mgr = self.manager
        r = pygame.Rect(0, 0, 420, 44)
        self.title = UILabel(r, "Settings", mgr, object_id=ObjectID(class_id="@title"))
        self.user_label = UILabel(r, "SIGNED IN AS", mgr,
                                  object_id=ObjectID(class_id="@field_label"))
        self.server_label = UILabel(r, "SERVER", mgr, object_id=ObjectID(class_id="@field_label"))
        self.data_label = UILabel(r, "LOCAL DATA ON THIS COMPUTER", mgr,
                                  object_id=ObjectID(class_id="@field_label"))
        self.remove = UICheckBox(pygame.Rect(0, 0, 24, 24),
                                 "Remove local data from this computer", mgr)
        self.back = UIButton(r, "\u2039 Back", mgr, object_id=ObjectID(class_id="@secondary"))
        self.sign_out = UIButton(r, "Sign out", mgr)
        self.focus_order = [self.back, self.remove, self.sign_out]
        self.card = pygame.Rect(0, 0, self.CARD_W, self.CARD_H)
        self.busy = False  # signed out: waiting for the network thread
        self.layout(app.screen_size)
        self.focus(self.back)

    def elements(self) -> list[Any]:
        return [self.title, self.user_label, self.server_label, self.data_label, self.remove,
                self.back, self.sign_out]

    @property
    def folder(self) -> str:
        """The profile folder, with the home folder shortened to ``~`` outside Windows."""
        folder = self.app.profile.folder
        if os.name != "nt" and folder.is_relative_to(Path.home()):
            return str(Path("~") / folder.relative_to(Path.home()))
        return str(folder)

    @property
    def removing(self) -> bool:
        return bool(self.remove.get_state())

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        self.card = pygame.Rect(0, 0, min(self.CARD_W, w - 24), self.CARD_H)
        self.card.center = (w // 2, STATUS_BAR_HEIGHT + (h - STATUS_BAR_HEIGHT) // 2)
        x, y, inner = self.card.x + 32, self.card.y + 28, self.card.width - 64
        place(self.title, pygame.Rect(x, y, inner, 36))
        place(self.user_label, pygame.Rect(x, y + 56, inner, 20))
        place(self.server_label, pygame.Rect(x, y + 116, inner, 20))
        place(self.data_label, pygame.Rect(x, y + 176, inner, 20))
        place(self.remove, pygame.Rect(x, y + 268, 24, 24))
        half = (inner - 12) // 2
        place(self.back, pygame.Rect(x, self.card.bottom - 72, half, 44))
        place(self.sign_out, pygame.Rect(x + half + 12, self.card.bottom - 72, half, 44))

    def warning(self) -> tuple[str, pygame.Color]:
        """What signing out does to the data here, and to messages not sent yet."""
        waiting = self.app.model.status.outbox
        me = self.app.model.me or "you"
        if self.busy:
            return "Signing out…", Colors.MUTED
        if waiting:
            count = f"{waiting} message{'s' if waiting != 1 else ''} not sent yet"
            if self.removing:
                return (f"{count} will be deleted and never sent. Connect first to send "
                        "them."), Colors.ERROR
            return (f"{count} stay{'s' if waiting == 1 else ''} queued here and "
                    f"{'is' if waiting == 1 else 'are'} sent when {me} signs in again."
                    ), Colors.WARN
        if self.removing:
            return ("The history, outbox and search index on this computer are deleted. "
                    "Your messages stay on the server."), Colors.MUTED
        return ("The history stays on this computer for the next sign-in (readable by "
                "anyone who can open this folder)."), Colors.MUTED

    # --- input ---------------------------------------------------------------------------

    def handle(self, event: pygame.event.Event) -> bool:
        if super().handle(event):
            return True
        if event.type == pygame.KEYDOWN:
            if event.key == pygame.K_ESCAPE:
                self.app.close_conversation()
                return True
            if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                if self.back.is_focused:
                    self.app.close_conversation()
                    return True
                if self.sign_out.is_focused:
                    self.submit()
                    return True
        elif event.type == pygame_gui.UI_BUTTON_PRESSED:
            if event.ui_element is self.back:
                self.app.close_conversation()
            elif event.ui_element is self.sign_out:
                self.submit()
        return False

    def submit(self) -> None:
        if self.busy:
            return
        self.busy = True
        for element in (self.sign_out, self.back, self.remove):
            element.disable()
        self.app.submit(m.SignOut(remove_local_data=self.removing))

    # --- drawing --------------------------------------------------------------------------

    def draw(self, surface: pygame.Surface) -> None:
        styles = self.app.styles
        pygame.draw.rect(surface, Colors.BORDER, self.card.move(0, 3), border_radius=16)
        pygame.draw.rect(surface, Colors.SURFACE, self.card, border_radius=16)
        x, y, inner = self.card.x + 32, self.card.y + 28, self.card.width - 64
        model = self.app.model
        for top, value in ((y + 78, model.me or ""), (y + 138, model.server)):
            surface.blit(styles.body.render(value, Colors.TEXT), (x, top))
        line_y = y + 198
        for line in wrap(styles.small, self.folder, inner)[:3]:
            surface.blit(styles.small.render(line, Colors.TEXT), (x, line_y))
            line_y += styles.small.line_height
        note = "Message history, messages waiting to be sent, and the search index."
        surface.blit(styles.small.render(note, Colors.MUTED), (x, line_y + 4))
        text, color = self.warning()
        line_y = y + 304
        for line in wrap(styles.small, text, inner)[:3]:
            surface.blit(styles.small.render(line, color), (x, line_y))
            line_y += styles.small.line_height
