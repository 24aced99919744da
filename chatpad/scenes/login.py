"""The sign-in screen: sign in, or create an account in one step."""

from __future__ import annotations

import math
import time
from typing import Any

import pygame
import pygame_gui
from pygame_gui.core import ObjectID
from pygame_gui.elements import UIButton, UILabel

from chatpad import messages as m
from chatpad.account import SESSION_ENDED, SIGNED_OUT
from chatpad.fonts import wrap
from chatpad.scenes.base import Scene, SceneHost, place
from chatpad.ui import STATUS_BAR_HEIGHT, Colors
from chatpad.ui.entries import EntryLine
from libchat import limits

__all__ = ["AUTH_MESSAGES", "LoginScene", "in_words"]

AUTH_MESSAGES = {
    "invalid_credentials": "Wrong username or password.",
    "username_taken": "That username is taken. Pick another one.",
    "weak_password": f"The password needs {limits.MIN_PASSWORD_CHARS} to "
                     f"{limits.MAX_PASSWORD_CHARS} characters.",
    "invalid_username": f"Usernames are {limits.MIN_USERNAME_CHARS} to "
                        f"{limits.MAX_USERNAME_CHARS} characters of a-z, 0-9, _ . -",
    "unreachable": "The server cannot be reached. Check the address and your network.",
}
MESSAGE_LINES = 2  # lines kept for the message under the fields; a longer one grows the card


def in_words(seconds: int) -> str:
    """A wait as a person says it: "40 seconds", "15 minutes", "2 hours 5 minutes"."""
    if seconds < 60:
        return _count(seconds, "second")
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return _count(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    return _count(hours, "hour") + (f" {_count(minutes, 'minute')}" if minutes else "")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


class LoginScene(Scene):
    """Sign in or create an account."""

    CARD_W, CARD_H = 420, 440

    def __init__(self, app: SceneHost) -> None:
        super().__init__(app)
        mgr = self.manager
        r = pygame.Rect(0, 0, 420, 44)
        self.title = UILabel(r, "Welcome to chatpad", mgr, object_id=ObjectID(class_id="@title"))
        self.subtitle = UILabel(r, "Sign in, or create an account in one step.", mgr,
                                object_id=ObjectID(class_id="@subtitle"))
        self.server_label = UILabel(r, "SERVER", mgr, object_id=ObjectID(class_id="@field_label"))
        self.server = EntryLine(r, mgr, placeholder_text="http://127.0.0.1:8765")
        self.server.set_text(app.model.server)
        self.user_label = UILabel(r, "USERNAME", mgr, object_id=ObjectID(class_id="@field_label"))
        self.username = EntryLine(r, mgr, placeholder_text="e.g. alice")
        self.username.set_text_length_limit(limits.MAX_USERNAME_CHARS)
        self.pass_label = UILabel(r, "PASSWORD  (8 characters or more)", mgr,
                                  object_id=ObjectID(class_id="@field_label"))
        self.password = EntryLine(r, mgr)
        self.password.set_text_hidden(True)
        self.password.set_text_length_limit(limits.MAX_PASSWORD_CHARS)
        self.sign_in = UIButton(r, "Sign in", mgr)
        self.create = UIButton(r, "Create account", mgr,
                               object_id=ObjectID(class_id="@secondary"))
        self.focus_order = [self.server, self.username, self.password, self.sign_in, self.create]
        self.card = pygame.Rect(0, 0, self.CARD_W, self.CARD_H)
        self.busy = False
        self.failure: m.AuthFailed | None = None  # the server's last refusal, shown
        self.error_text = ""  # what the message under the fields says: an error, or not
        self.is_error = False  # errors are red; progress and information are not
        self.message_lines: list[str] = []  # error_text wrapped to the card
        self.message_rect = pygame.Rect(0, 0, 0, 0)
        self.layout(app.screen_size)
        reason = app.model.signed_out_reason
        if reason:
            self.show_message(reason, error=reason not in (SIGNED_OUT, SESSION_ENDED))
        self.focus(self.username if app.model.server else self.server)

    def elements(self) -> list[Any]:
        return [self.title, self.subtitle, self.server_label, self.server, self.user_label,
                self.username, self.pass_label, self.password, self.sign_in, self.create]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        card_w = min(self.CARD_W, w - 32)
        inner = card_w - 64
        line_h = self.app.styles.small.line_height
        self.message_lines = wrap(self.app.styles.small, self.error_text, inner) \
            if self.error_text else []
        extra = max(0, len(self.message_lines) - MESSAGE_LINES) * line_h
        self.card = pygame.Rect(0, 0, card_w, self.CARD_H + extra)
        self.card.center = (w // 2, STATUS_BAR_HEIGHT + (h - STATUS_BAR_HEIGHT) // 2)
        self.card.top = max(STATUS_BAR_HEIGHT + 8, self.card.top)
        x, y = self.card.x + 32, self.card.y + 28
        place(self.title, pygame.Rect(x, y, inner, 36))
        place(self.subtitle, pygame.Rect(x, y + 36, inner, 22))
        y += 74
        for label, field in ((self.server_label, self.server), (self.user_label, self.username),
                             (self.pass_label, self.password)):
            place(label, pygame.Rect(x, y, inner, 20))
            place(field, pygame.Rect(x, y + 22, inner, 40))
            y += 74
        rows = max(MESSAGE_LINES, len(self.message_lines))
        self.message_rect = pygame.Rect(x, y - 2, inner, rows * line_h)
        y += 36 + extra
        half = (inner - 12) // 2
        place(self.sign_in, pygame.Rect(x, y, half, 44))
        place(self.create, pygame.Rect(x + half + 12, y, half, 44))

    def show_message(self, text: str, *, error: bool) -> None:
        """Say ``text`` under the fields, wrapped to the card: in red if it is an error."""
        self.is_error = error
        if text == self.error_text:
            return
        self.error_text = text
        lines = len(self.message_lines)
        self.message_lines = wrap(self.app.styles.small, text, self.message_rect.width) \
            if text else []
        if max(lines, MESSAGE_LINES) != max(len(self.message_lines), MESSAGE_LINES):
            self.layout(self.app.screen_size)  # the card grows or shrinks with it

    def show_error(self, text: str) -> None:
        self.show_message(text, error=True)

    def submit(self, create: bool) -> None:
        if self.busy:
            return
        username = self.username.get_text().strip()
        password = self.password.get_text()
        if not username:
            self.show_error("Enter a username.")
            self.focus(self.username)
            return
        if not password:
            self.show_error("Enter a password.")
            self.focus(self.password)
            return
        if create and len(password) < limits.MIN_PASSWORD_CHARS:
            self.show_error(AUTH_MESSAGES["weak_password"])
            self.app.model.forget_auth_error()
            return
        self.busy = True
        self.app.model.forget_auth_error()
        self.show_message("Creating your account…" if create else "Signing in…", error=False)
        self.app.submit(m.SignIn(server=self.server.get_text().strip() or self.app.model.server,
                                 username=username, password=password, create=create))

    def handle(self, event: pygame.event.Event) -> bool:
        if super().handle(event):
            return True
        if event.type == pygame.KEYDOWN and event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            if self.create.is_focused:
                self.submit(create=True)
            else:
                self.submit(create=False)
            return True
        if event.type == pygame_gui.UI_BUTTON_PRESSED:
            if event.ui_element is self.sign_in:
                self.submit(create=False)
            elif event.ui_element is self.create:
                self.submit(create=True)
        return False

    def update(self, dt: float) -> None:
        failure = self.app.model.auth_error
        if failure is None:
            return
        if failure is not self.failure:  # a new answer from the server
            self.failure = failure
            self.busy = False
        elif failure.code != "rate_limited":
            return
        text = AUTH_MESSAGES.get(failure.code, failure.message)
        error = True
        if failure.code == "rate_limited" and failure.retry_at is not None:
            seconds = max(0, int(failure.retry_at - time.monotonic() + 0.999))
            if seconds == 0:
                self.app.model.forget_auth_error()
                text, error = "You can try again now.", False
            else:
                text = f"Too many attempts. Try again in {in_words(seconds)}."
            if seconds:
                self.sign_in.disable()
            else:
                self.sign_in.enable()
        self.show_message(text, error=error)

    def draw(self, surface: pygame.Surface) -> None:
        shadow = self.card.move(0, 3)
        pygame.draw.rect(surface, Colors.BORDER, shadow, border_radius=16)
        pygame.draw.rect(surface, Colors.SURFACE, self.card, border_radius=16)
        color = Colors.ERROR if self.is_error else Colors.MUTED
        y = self.message_rect.y
        for line in self.message_lines:
            if line:
                surface.blit(self.app.styles.small.render(line, color), (self.message_rect.x, y))
            y += self.app.styles.small.line_height
