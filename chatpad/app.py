"""The main thread: pygame, pygame_gui, the scenes, and the frame loop.

``App.step(dt)`` runs one frame: take the network thread's results, handle input, update,
draw. ``run()`` calls it at 60 frames per second; tests call it themselves.
"""

from __future__ import annotations

import logging
import os
import time
from importlib import resources
from pathlib import Path

import attrs
import pygame
import pygame_gui

from chatpad import messages as m
from chatpad.lock import ProfileLock
from chatpad.model import Model
from chatpad.net import NetConfig, Network
from chatpad.profile import Profile
from chatpad.scenes import ConversationScene, ConversationsScene, LoginScene, Scene
from chatpad.ui import Colors, Styles, draw_status_bar

__all__ = ["App", "AppConfig"]

log = logging.getLogger(__name__)

FPS = 60
DEFAULT_SIZE = (960, 680)
MIN_SIZE = (560, 520)
NOTICE_SECONDS = 6.0
BANNER_BOTTOM = 106  # px from the window's bottom: just above the message box
DEFAULT_SERVER = "http://127.0.0.1:8765"


@attrs.frozen(kw_only=True)
class AppConfig:
    server: str = DEFAULT_SERVER
    profile: str = "default"
    profile_root: Path | None = None  # default: platformdirs / $CHATPAD_HOME
    size: tuple[int, int] = DEFAULT_SIZE
    net: NetConfig = attrs.field(factory=NetConfig)
    offline: bool = False  # no network thread: self-test and screenshots


def theme_path() -> str:
    return str(resources.files("chatpad") / "theme.json")


class App:
    def __init__(self, config: AppConfig) -> None:
        """Raises :class:`ProfileInUse` when another chatpad runs with the profile."""
        self.profile = Profile.named(config.profile, config.profile_root)
        self.lock = None if config.offline else ProfileLock(self.profile.lock_file)
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        pygame.display.init()
        pygame.font.init()
        pygame.display.set_caption("chatpad")
        pygame.display.set_icon(
            pygame.image.load(resources.files("chatpad") / "assets/chatpad.png"))
        self.config = config
        self.screen = pygame.display.set_mode(config.size, pygame.RESIZABLE)
        self.manager = pygame_gui.UIManager(config.size, theme_path())
        self.styles = Styles()
        session = None if config.offline else self.profile.load_session()
        self.model = Model(session.server if session else config.server)
        self.network: Network | None = None
        self.sent: list[m.Command] = []  # offline mode: what would have been sent
        self.running = True
        self.mouse_pos = (0, 0)  # from the events: the pointer is where they last said
        self.clock = pygame.time.Clock()
        self.scene: Scene = LoginScene(self)
        if session is not None:
            self.model.me = session.username
            self.show(ConversationsScene(self))
        if not config.offline:
            self.network = Network(self.profile, config.net)
            self.network.start()

    # --- plumbing for scenes -------------------------------------------------------------

    @property
    def screen_size(self) -> tuple[int, int]:
        return self.screen.get_size()

    def submit(self, command: m.Command) -> None:
        if self.network is None:
            self.sent.append(command)
        else:
            self.network.submit(command)

    def has_focus(self) -> bool:
        return os.environ.get("SDL_VIDEODRIVER") == "dummy" or pygame.key.get_focused()

    def show(self, scene: Scene) -> None:
        self.scene.close()
        self.scene = scene

    def open_conversation(self, peer: str) -> None:
        self.show(ConversationScene(self, peer))
        self.submit(m.Open(peer=peer))

    def close_conversation(self) -> None:
        self.show(ConversationsScene(self))
        self.submit(m.Open(peer=None))

    # --- the frame ---------------------------------------------------------------------------

    def step(self, dt: float) -> bool:
        """One frame. Returns False once the window was closed."""
        self.apply_results()
        for event in pygame.event.get():
            self.handle(event)
        self.scene.update(dt)
        self.manager.update(dt)
        self.draw()
        pygame.display.flip()
        return self.running

    def apply_results(self) -> None:
        if self.network is None:
            return
        for result in self.network.poll():
            self.apply(result)

    def apply(self, result: m.Result) -> None:
        self.model.apply(result)
        if isinstance(result, m.SignedIn) and isinstance(self.scene, LoginScene):
            self.show(ConversationsScene(self))
        elif isinstance(result, m.SignedOut) and not isinstance(self.scene, LoginScene):
            self.show(LoginScene(self))

    def handle(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
            return
        if event.type == pygame.VIDEORESIZE:
            self.resize(event.size)
            return
        if event.type == pygame.MOUSEMOTION:
            self.mouse_pos = event.pos
        if event.type == pygame.KEYDOWN and event.key == pygame.K_F5:
            self.submit(m.Reconnect())
            return
        if not self.scene.handle(event):
            self.manager.process_events(event)

    def resize(self, size: tuple[int, int]) -> None:
        size = (max(MIN_SIZE[0], size[0]), max(MIN_SIZE[1], size[1]))
        if size != self.screen.get_size():
            self.screen = pygame.display.set_mode(size, pygame.RESIZABLE)
        self.manager.set_window_resolution(size)
        self.scene.layout(size)

    def draw(self) -> None:
        surface = self.screen
        surface.fill(Colors.BACKGROUND)
        self.scene.draw(surface)
        self.manager.draw_ui(surface)
        draw_status_bar(surface, self.styles, self.model)
        self.draw_banner(surface)
        self.draw_notices(surface)

    def banner_text(self) -> str | None:
        status = self.model.status
        if self.model.me is None or status.state in ("connected", "signed_out"):
            return None
        waiting = status.outbox
        kept = (f"{waiting} message{'s' if waiting != 1 else ''} will be sent when the "
                "connection returns." if waiting else "New messages will be sent when the "
                "connection returns.")
        if status.state == "reconnecting":
            return f"No connection to the server. {kept} Press F5 to retry now."
        return f"Connecting to the server… {kept}"

    def draw_banner(self, surface: pygame.Surface) -> None:
        text = self.banner_text()
        if text is None:
            return
        label = self.styles.small.render(text, Colors.BANNER_TEXT)
        box = pygame.Rect(0, 0, min(surface.get_width() - 24, label.get_width() + 32), 32)
        box.midbottom = (surface.get_width() // 2, surface.get_height() - BANNER_BOTTOM)
        pygame.draw.rect(surface, Colors.BANNER, box, border_radius=8)
        pygame.draw.rect(surface, Colors.WARN, box, width=1, border_radius=8)
        clip = surface.get_clip()
        surface.set_clip(box.inflate(-16, 0))
        surface.blit(label, label.get_rect(center=box.center))
        surface.set_clip(clip)

    def draw_notices(self, surface: pygame.Surface) -> None:
        now = time.monotonic()
        notices = [text for at, text in self.model.notices if now - at < NOTICE_SECONDS]
        y = surface.get_height() - BANNER_BOTTOM - 44
        for text in reversed(notices):
            label = self.styles.small.render(text, Colors.SURFACE)
            box = label.get_rect().inflate(28, 16)
            box.midbottom = (surface.get_width() // 2, y)
            pygame.draw.rect(surface, Colors.TEXT, box, border_radius=10)
            surface.blit(label, label.get_rect(center=box.center))
            y = box.top - 8

    def run(self) -> int:
        while self.step(self.clock.tick(FPS) / 1000):
            pass
        self.close()
        return 0

    def close(self) -> None:
        """Stop the network thread (it closes the WebSocket) and the window."""
        if self.network is not None:
            self.network.stop()
            self.network = None
        self.scene.close()
        pygame.display.quit()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
