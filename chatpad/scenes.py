"""The three screens. Each has ``handle(event)``, ``update(dt)``, ``draw(surface)``,
``layout(size)`` and ``close()``; none touches a socket: they read the model and send
commands through their host (the app), as :class:`SceneHost` describes it."""

from __future__ import annotations

import time
from typing import Any, Protocol

import pygame
import pygame_gui
from pygame_gui.core import ObjectID
from pygame_gui.elements import UIButton, UILabel, UITextEntryBox, UITextEntryLine

from chatpad import messages as m
from chatpad.model import Model
from chatpad.ui import STATUS_BAR_HEIGHT, Colors, ConversationList, MessageView, Styles
from libchat import limits

__all__ = ["ConversationScene", "ConversationsScene", "LoginScene", "Scene", "SceneHost"]

TYPING_EVERY = 3.0  # seconds between typing signals while the user writes

AUTH_MESSAGES = {
    "invalid_credentials": "Wrong username or password.",
    "username_taken": "That username is taken. Pick another one.",
    "weak_password": f"The password needs {limits.MIN_PASSWORD_CHARS} to "
                     f"{limits.MAX_PASSWORD_CHARS} characters.",
    "invalid_username": f"Usernames are {limits.MIN_USERNAME_CHARS} to "
                        f"{limits.MAX_USERNAME_CHARS} characters of a-z, 0-9, _ . -",
    "unreachable": "The server cannot be reached. Check the address and your network.",
}


class SceneHost(Protocol):
    """What a scene may use of the app that shows it: the model to read, commands to
    submit, and the window."""

    manager: pygame_gui.UIManager
    styles: Styles
    model: Model
    mouse_pos: tuple[int, int]

    @property
    def screen_size(self) -> tuple[int, int]: ...

    def submit(self, command: m.Command) -> None: ...

    def has_focus(self) -> bool: ...

    def open_conversation(self, peer: str) -> None: ...

    def close_conversation(self) -> None: ...

    def banner_text(self) -> str | None: ...


class Scene:
    """Base: keyboard focus moves with Tab through ``focus_order``."""

    def __init__(self, app: SceneHost) -> None:
        self.app = app
        self.manager = app.manager
        self.focus_order: list[Any] = []

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

    def layout(self, size: tuple[int, int]) -> None:
        pass

    def close(self) -> None:
        for element in self.elements():
            element.kill()

    def elements(self) -> list[Any]:
        return []


def _place(element: Any, rect: pygame.Rect) -> None:
    element.set_relative_position(rect.topleft)
    element.set_dimensions(rect.size)
    element.rebuild()


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
        self.server = UITextEntryLine(r, mgr, placeholder_text="http://127.0.0.1:8765")
        self.server.set_text(app.model.server)
        self.user_label = UILabel(r, "USERNAME", mgr, object_id=ObjectID(class_id="@field_label"))
        self.username = UITextEntryLine(r, mgr, placeholder_text="e.g. alice")
        self.username.set_text_length_limit(limits.MAX_USERNAME_CHARS)
        self.pass_label = UILabel(r, "PASSWORD  (8 characters or more)", mgr,
                                  object_id=ObjectID(class_id="@field_label"))
        self.password = UITextEntryLine(r, mgr)
        self.password.set_text_hidden(True)
        self.password.set_text_length_limit(limits.MAX_PASSWORD_CHARS)
        self.sign_in = UIButton(r, "Sign in", mgr)
        self.create = UIButton(r, "Create account", mgr,
                               object_id=ObjectID(class_id="@secondary"))
        self.error = UILabel(r, "", mgr, object_id=ObjectID(class_id="@error"))
        self.focus_order = [self.server, self.username, self.password, self.sign_in, self.create]
        self.card = pygame.Rect(0, 0, self.CARD_W, self.CARD_H)
        self.busy = False
        self.failure: m.AuthFailed | None = None  # the server's last refusal, shown
        self.error_text = ""
        if app.model.signed_out_reason:
            self.show_error(app.model.signed_out_reason)
        self.layout(app.screen_size)
        self.focus(self.username if app.model.server else self.server)

    def elements(self) -> list[Any]:
        return [self.title, self.subtitle, self.server_label, self.server, self.user_label,
                self.username, self.pass_label, self.password, self.sign_in, self.create,
                self.error]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        self.card = pygame.Rect(0, 0, self.CARD_W, self.CARD_H)
        self.card.center = (w // 2, STATUS_BAR_HEIGHT + (h - STATUS_BAR_HEIGHT) // 2)
        x, y, inner = self.card.x + 32, self.card.y + 28, self.CARD_W - 64
        _place(self.title, pygame.Rect(x, y, inner, 36))
        _place(self.subtitle, pygame.Rect(x, y + 36, inner, 22))
        y += 74
        for label, field in ((self.server_label, self.server), (self.user_label, self.username),
                             (self.pass_label, self.password)):
            _place(label, pygame.Rect(x, y, inner, 20))
            _place(field, pygame.Rect(x, y + 22, inner, 40))
            y += 74
        _place(self.error, pygame.Rect(x, y - 6, inner, 40))
        y += 36
        half = (inner - 12) // 2
        _place(self.sign_in, pygame.Rect(x, y, half, 44))
        _place(self.create, pygame.Rect(x + half + 12, y, half, 44))

    def show_error(self, text: str) -> None:
        self.error_text = text
        self.error.set_text(text)

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
        self.show_error("Creating your account…" if create else "Signing in…")
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
        if failure.code == "rate_limited" and failure.retry_at is not None:
            seconds = max(0, int(failure.retry_at - time.monotonic() + 0.999))
            if seconds == 0:
                self.app.model.forget_auth_error()
                text = "You can try again now."
            else:
                text = f"Too many attempts. Try again in {seconds} s."
            if seconds:
                self.sign_in.disable()
            else:
                self.sign_in.enable()
        if text != self.error_text:
            self.show_error(text)

    def draw(self, surface: pygame.Surface) -> None:
        shadow = self.card.move(0, 3)
        pygame.draw.rect(surface, Colors.BORDER, shadow, border_radius=16)
        pygame.draw.rect(surface, Colors.SURFACE, self.card, border_radius=16)


class ConversationsScene(Scene):
    """The list of conversations, and the box that finds people to talk to."""

    def __init__(self, app: SceneHost) -> None:
        super().__init__(app)
        mgr = self.manager
        r = pygame.Rect(0, 0, 420, 44)
        self.search = UITextEntryLine(r, mgr, placeholder_text="Find people by name to start "
                                                               "a new conversation")
        self.search.set_text_length_limit(limits.MAX_USERNAME_CHARS)
        self.sign_out = UIButton(r, "Sign out", mgr, object_id=ObjectID(class_id="@secondary"))
        self.list = ConversationList(app.styles)
        self.focus_order = [self.search, self.sign_out]
        self.sent_prefix = ""
        self.header = pygame.Rect(0, 0, 0, 0)
        self.layout(app.screen_size)

    def elements(self) -> list[Any]:
        return [self.search, self.sign_out]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        column = min(w, 760)
        left = (w - column) // 2
        self.header = pygame.Rect(left, STATUS_BAR_HEIGHT, column, 64)
        _place(self.search, pygame.Rect(left + 16, STATUS_BAR_HEIGHT + 12, column - 150, 40))
        _place(self.sign_out, pygame.Rect(left + column - 124, STATUS_BAR_HEIGHT + 12, 108, 40))
        self.list.rect = pygame.Rect(left, STATUS_BAR_HEIGHT + 64, column,
                                     h - STATUS_BAR_HEIGHT - 64)

    def open(self, peer: str) -> None:
        self.app.open_conversation(peer)

    def handle(self, event: pygame.event.Event) -> bool:
        if super().handle(event):
            return True
        peers = self.list.peers()
        if event.type == pygame.KEYDOWN:
            if event.key == pygame.K_DOWN and peers:
                self.list.selected = min(len(peers) - 1, self.list.selected + 1)
                return True
            if event.key == pygame.K_UP and peers:
                self.list.selected = max(0, self.list.selected - 1)
                return True
            if (event.key in (pygame.K_RETURN, pygame.K_KP_ENTER) and peers
                    and not self.sign_out.is_focused):
                self.open(peers[min(self.list.selected, len(peers) - 1)])
                return True
        elif event.type == pygame.MOUSEMOTION:
            self.list.hover = self.list.index_at(event.pos)
        elif event.type == pygame.MOUSEBUTTONUP and event.button == 1:
            index = self.list.index_at(event.pos)
            if index is not None:
                self.open(peers[index])
                return True
        elif event.type == pygame.MOUSEWHEEL:
            self.list.scroll_by(event.y * 40)
        elif event.type == pygame_gui.UI_BUTTON_PRESSED and event.ui_element is self.sign_out:
            self.app.submit(m.SignOut())
        return False

    def update(self, dt: float) -> None:
        prefix = self.search.get_text().strip().lower()
        if prefix != self.sent_prefix:
            self.sent_prefix = prefix
            self.list.selected = 0
            if prefix:
                self.app.submit(m.Search(prefix=prefix))
        model = self.app.model
        self.list.show_users = bool(prefix)
        self.list.users = model.users_found if model.users_prefix == prefix else ()
        self.list.rows = model.conversations

    def draw(self, surface: pygame.Surface) -> None:
        surface.fill(Colors.SURFACE, self.header)
        pygame.draw.line(surface, Colors.BORDER, self.header.bottomleft,
                         (self.header.right, self.header.bottom))
        self.list.draw(surface)


class ConversationScene(Scene):
    """One conversation: bubbles, and the box to write in."""

    INPUT_H = 76

    def __init__(self, app: SceneHost, peer: str) -> None:
        super().__init__(app)
        self.peer = peer
        mgr = self.manager
        r = pygame.Rect(0, 0, 420, 44)
        self.back = UIButton(r, "\u2039 Back", mgr, object_id=ObjectID(class_id="@secondary"))
        self.title = UILabel(r, peer, mgr, object_id=ObjectID(class_id="@title"))
        self.input = UITextEntryBox(
            pygame.Rect(0, 0, 400, self.INPUT_H), "", mgr,
            placeholder_text="Write a message…  (Enter sends, Shift+Enter: new line)")
        self.send = UIButton(r, "Send", mgr)
        self.counter = UILabel(r, f"0 / {limits.MAX_MESSAGE_CHARS}", mgr,
                               object_id=ObjectID(class_id="@hint"))
        self.thread = app.model.thread(peer)
        self.view = MessageView(app.styles, self.thread, self._load_older)
        self.focus_order = [self.input, self.send, self.back]
        self.header = pygame.Rect(0, 0, 0, 0)
        self.footer = pygame.Rect(0, 0, 0, 0)
        self.last_read_sent = -1
        self.counter_value = 0
        self.typing_sent_at = -TYPING_EVERY
        self.layout(app.screen_size)
        self.focus(self.input)

    def elements(self) -> list[Any]:
        return [self.back, self.title, self.input, self.send, self.counter]

    def layout(self, size: tuple[int, int]) -> None:
        w, h = size
        self.header = pygame.Rect(0, STATUS_BAR_HEIGHT, w, 56)
        _place(self.back, pygame.Rect(12, STATUS_BAR_HEIGHT + 9, 92, 38))
        _place(self.title, pygame.Rect(116, STATUS_BAR_HEIGHT + 10, w - 132, 36))
        self.footer = pygame.Rect(0, h - self.INPUT_H - 22, w, self.INPUT_H + 22)
        _place(self.input, pygame.Rect(12, self.footer.y + 8, w - 124, self.INPUT_H - 8))
        _place(self.send, pygame.Rect(w - 104, self.footer.y + 8, 92, 44))
        _place(self.counter, pygame.Rect(w - 224, self.footer.bottom - 22, 212, 18))
        self.view.rect = pygame.Rect(0, self.header.bottom, w, self.footer.y - self.header.bottom)
        self.view.relayout()

    def activity(self) -> str:
        """What the header says about the peer: typing, or online."""
        model = self.app.model
        if model.is_typing(self.peer):
            return "typing…"
        if model.online.get(self.peer):
            return "online"
        return ""

    def _load_older(self, before: int) -> None:
        self.app.submit(m.LoadOlder(peer=self.peer, before=before))

    def text(self) -> str:
        return self.input.get_text()

    def send_text(self) -> None:
        body = self.text().strip("\n")
        if not body.strip():
            return
        if len(body) > limits.MAX_MESSAGE_CHARS:
            return
        self.app.submit(m.Post(peer=self.peer, body=body))
        self.input.set_text("")
        self.view.at_bottom = True

    def handle(self, event: pygame.event.Event) -> bool:
        if super().handle(event):
            return True
        if event.type == pygame.KEYDOWN:
            if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                if event.mod & pygame.KMOD_SHIFT:
                    # pygame_gui inserts the line break, unless it would pass the limit
                    return len(self.text()) >= limits.MAX_MESSAGE_CHARS
                if self.back.is_focused:
                    self.app.close_conversation()
                else:
                    self.send_text()
                return True
            if event.key == pygame.K_ESCAPE:
                self.app.close_conversation()
                return True
            if event.key == pygame.K_PAGEUP:
                self.view.scroll_by(self.view.rect.height - 40)
                return True
            if event.key == pygame.K_PAGEDOWN:
                self.view.scroll_by(-(self.view.rect.height - 40))
                return True
        elif event.type == pygame.TEXTINPUT and self.input.is_focused:
            room = limits.MAX_MESSAGE_CHARS - len(self.text())
            if room <= 0:
                return True  # refuse more than the limit
            if len(event.text) > room:
                pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=event.text[:room]))
                return True
        elif event.type == pygame.MOUSEWHEEL:
            if self.view.rect.collidepoint(self.app.mouse_pos):
                self.view.scroll_by(event.y * 48)
                return True
        elif event.type == pygame_gui.UI_BUTTON_PRESSED:
            if event.ui_element is self.back:
                self.app.close_conversation()
            elif event.ui_element is self.send:
                self.send_text()
                self.focus(self.input)
        return False

    def update(self, dt: float) -> None:
        self.view.pad_bottom = 44 if self.app.banner_text() else 0
        text = self.text()
        if len(text) > limits.MAX_MESSAGE_CHARS:  # a paste can pass the limit: cut it
            self.input.set_text(text[: limits.MAX_MESSAGE_CHARS])
            text = self.input.get_text()
        if len(text) != self.counter_value:
            now = time.monotonic()
            if text and now - self.typing_sent_at >= TYPING_EVERY:
                self.typing_sent_at = now
                self.app.submit(m.Typing(peer=self.peer))
            self.counter_value = len(text)
            self.counter.set_text(f"{len(text)} / {limits.MAX_MESSAGE_CHARS}")
        newest = self.thread.newest_seq_from_peer()
        if newest is not None and newest > self.last_read_sent and self.app.has_focus():
            self.last_read_sent = newest
            self.app.submit(m.MarkRead(peer=self.peer, up_to=newest))

    def draw(self, surface: pygame.Surface) -> None:
        self.view.draw(surface)
        surface.fill(Colors.SURFACE, self.header)
        pygame.draw.line(surface, Colors.BORDER, (self.header.x, self.header.bottom - 1),
                         (self.header.right, self.header.bottom - 1))
        activity = self.activity()
        if activity:
            label = self.app.styles.small.render(activity, Colors.ACCENT)
            surface.blit(label, label.get_rect(midright=(self.header.right - 20,
                                                         self.header.centery)))
        surface.fill(Colors.SURFACE, self.footer)
        pygame.draw.line(surface, Colors.BORDER, self.footer.topleft, self.footer.topright)
