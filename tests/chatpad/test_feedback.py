"""Issue 14, bugs 4 and 7: what chatpad tells the user, and in which colour. The real
scenes under headless SDL; offline where no server is needed."""

from __future__ import annotations

import http.server
import threading
import time
from http import HTTPStatus

import pygame
import pygame_gui
import pytest

from chatpad import messages as m
from chatpad.app import MIN_SIZE, App
from chatpad.scenes import ConversationScene, LoginScene
from libchat.limits import MAX_MESSAGE_CHARS
from tests.chatpad.driver import Driver
from tests.chatpad.test_screens import sign_up

pytestmark = pytest.mark.gui



def conversation(app: App) -> ConversationScene:
    app.apply(m.SignedIn(server="http://x", username="alice"))
    app.open_conversation("bob")
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    app.step(1 / 60)
    return scene


def test_a_paste_cut_to_the_limit_says_so(app: App) -> None:
    scene = conversation(app)
    assert scene.limit_note.text == ""
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="p" * (MAX_MESSAGE_CHARS + 1)))
    app.step(1 / 60)
    app.step(1 / 60)
    assert len(scene.text()) == MAX_MESSAGE_CHARS
    assert scene.limit_note.text == "Pasted text was cut to 5,000 characters."
    assert scene.limit_note.visible
    assert not scene.limit_note.rect.colliderect(scene.counter.rect)
    assert app.screen.get_rect().contains(scene.limit_note.rect)
    # one key more is refused, and that is said too
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="x"))
    app.step(1 / 60)
    assert scene.limit_note.text == "A message can have 5,000 characters at most."
    # below the limit again: the note goes
    scene.input.set_text("short")
    app.step(1 / 60)
    assert scene.limit_note.text == ""


def test_a_clipboard_paste_cut_to_the_limit_says_so(app: App) -> None:
    scene = conversation(app)
    pygame_gui.core.utility.clipboard_copy("c" * (MAX_MESSAGE_CHARS + 1))
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_v, mod=pygame.KMOD_CTRL,
                                         unicode="", scancode=0))
    app.step(1 / 60)
    app.step(1 / 60)
    assert len(scene.text()) == MAX_MESSAGE_CHARS
    assert scene.limit_note.text == "Pasted text was cut to 5,000 characters."


# --- the sign-in screen ---------------------------------------------------------------------


def pixels(surface: pygame.Surface, rect: pygame.Rect) -> list[tuple[int, int, int]]:
    raw = pygame.image.tobytes(surface.subsurface(rect), "RGB")
    return [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]


def darkest(surface: pygame.Surface, rect: pygame.Rect) -> int:
    """The lowest brightness (0-255) of any pixel inside ``rect`` (its border left out)."""
    return min(sum(rgb) // 3 for rgb in pixels(surface, rect.inflate(-8, -8)))


def reddish(surface: pygame.Surface, rect: pygame.Rect) -> bool:
    return any(r - g > 60 for r, g, _ in pixels(surface, rect))


def login(app: App) -> LoginScene:
    scene = app.scene
    assert isinstance(scene, LoginScene)
    return scene


def test_placeholders_are_muted_and_typed_text_is_not(app: App) -> None:
    scene = login(app)
    scene.focus(scene.password)
    scene.server.set_text("")
    app.step(1 / 60)
    app.step(1 / 60)
    for field in (scene.server, scene.username):  # empty: the placeholder shows
        assert darkest(app.screen, field.rect) > 100, field.placeholder_text
    scene.focus(scene.username)
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="alice"))
    app.step(1 / 60)
    scene.focus(scene.password)
    app.step(1 / 60)
    app.step(1 / 60)
    assert darkest(app.screen, scene.username.rect) < 60  # typed text is dark
    convo = conversation(app)
    convo.focus(convo.send)
    app.step(1 / 60)
    app.step(1 / 60)
    assert darkest(app.screen, convo.input.rect) > 100
    convo.focus(convo.input)
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="hello"))
    app.step(1 / 60)
    app.step(1 / 60)
    assert darkest(app.screen, convo.input.rect) < 60


def test_progress_and_information_are_not_red(app: App) -> None:
    scene = login(app)
    scene.username.set_text("alice")
    scene.password.set_text("secret-pass-1")
    scene.submit(create=False)
    app.step(1 / 60)
    assert scene.error_text == "Signing in…" and not scene.is_error
    assert not reddish(app.screen, scene.message_rect)
    app.apply(m.AuthFailed(code="invalid_credentials", message="no"))
    app.step(1 / 60)
    assert scene.error_text == "Wrong username or password." and scene.is_error
    assert reddish(app.screen, scene.message_rect)
    # signed out: said in the neutral colour on the fresh sign-in screen
    app.apply(m.SignedIn(server="http://x", username="alice"))
    app.apply(m.SignedOut(reason="Signed out."))
    app.step(1 / 60)
    scene = login(app)
    assert scene.error_text == "Signed out." and not scene.is_error
    assert not reddish(app.screen, scene.message_rect)


@pytest.mark.parametrize(("seconds", "said"), [
    (875, "15 minutes"), (40, "40 seconds"), (1, "1 second"), (60, "1 minute"),
    (3600, "1 hour"), (7500, "2 hours 5 minutes"),
])
def test_a_lockout_is_given_in_words(app: App, seconds: int, said: str) -> None:
    scene = login(app)
    app.apply(m.AuthFailed(code="rate_limited", message="Too many attempts",
                           retry_at=time.monotonic() + seconds - 0.5))
    app.step(1 / 60)
    assert scene.error_text == f"Too many attempts. Try again in {said}."
    assert scene.is_error and not scene.sign_in.is_enabled


@pytest.mark.parametrize("size", [(960, 680), MIN_SIZE])
def test_the_unreachable_server_error_is_wrapped_not_clipped(size: tuple[int, int]) -> None:
    driver = Driver("http://127.0.0.1:9", size=size)  # the discard port: nothing listens
    try:
        sign_up(driver, "erin", create=False)
        scene = login(driver.app)
        driver.until(lambda: "cannot be reached" in scene.error_text, "unreachable")
        driver.step()
        text = "The server cannot be reached. Check the address and your network."
        assert scene.error_text == text and scene.is_error
        assert len(scene.message_lines) == 2 and " ".join(scene.message_lines) == text
        small = driver.app.styles.small
        assert all(small.width(line) <= scene.message_rect.width for line in scene.message_lines)
        assert scene.card.contains(scene.message_rect)
        assert scene.message_rect.bottom <= scene.sign_in.rect.top
        assert scene.message_rect.top >= scene.password.rect.bottom
        assert reddish(driver.app.screen, scene.message_rect)
    finally:
        driver.close()


def test_a_long_error_grows_the_card(app: App) -> None:
    app.window.size = MIN_SIZE
    app.step(1 / 60)
    scene = login(app)
    normal = scene.card.copy()
    long = "The server refused this for a reason it explains at length, " * 3
    app.apply(m.AuthFailed(code="something_new", message=long.strip()))
    app.step(1 / 60)
    assert len(scene.message_lines) > 2 and " ".join(scene.message_lines) == long.strip()
    assert scene.card.height > normal.height
    assert scene.message_rect.bottom <= scene.sign_in.rect.top
    assert scene.card.contains(scene.sign_in.rect)


class _NotChatd(http.server.BaseHTTPRequestHandler):
    """A web server that is not chatd: no POST at all (501), or 404 for every path."""

    not_found = False

    def do_POST(self) -> None:
        if not self.not_found:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED)
            return
        self.send_error(HTTPStatus.NOT_FOUND)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _NotFound(_NotChatd):
    not_found = True


@pytest.mark.parametrize(("handler", "answer"), [
    (_NotChatd, "501 Not Implemented"), (_NotFound, "404 Not Found"),
])
def test_a_server_that_is_not_chatd_is_named_so(handler: type[_NotChatd], answer: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    driver = Driver(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        sign_up(driver, "erin", create=False)
        scene = login(driver.app)
        driver.until(lambda: "answered" in scene.error_text, "the answer")
        assert scene.error_text == ("That address does not look like a chatd server "
                                    f"(it answered {answer}).")
        assert scene.is_error and not scene.busy
    finally:
        driver.close()
        server.shutdown()
        server.server_close()
        thread.join()
