"""The main thread: pygame, pygame_gui, the scenes, and the frame loop.

``App.step(dt)`` runs one frame: take the network thread's results, handle input, update,
draw. ``run()`` calls it at 60 frames per second; tests call it themselves.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import attrs
import pygame
import pygame_gui

from chatpad import messages as m
from chatpad.appearance import is_dark, preload_widget_fonts, widget_theme
from chatpad.clipboard import put_text
from chatpad.fonts import wrap
from chatpad.lock import ProfileLock
from chatpad.model import Model
from chatpad.net import NetConfig, Network
from chatpad.notifier import Notifier
from chatpad.preferences import Preferences, preferences_file
from chatpad.profile import Profile
from chatpad.scenes import ConversationScene, ConversationsScene, LoginScene, Scene
from chatpad.ui import Colors, Styles, draw_status_bar
from chatpad.ui.help import draw_help
from chatpad.ui.style import DARK, LIGHT

__all__ = ["App", "AppConfig"]

log = logging.getLogger(__name__)

FPS = 60
DEFAULT_SIZE = (960, 680)
MIN_SIZE = (560, 520)  # the window manager keeps the window at least this big
NOTICE_SECONDS = 6.0
BANNER_BOTTOM = 106  # px from the window's bottom: where notices sit without a banner
BANNER_MARGIN = 8  # px around the banner, inside the room the scene keeps for it
BANNER_PAD = (16, 7)  # px between the banner's border and its text
DEFAULT_SERVER = "http://127.0.0.1:8765"


@attrs.frozen(kw_only=True)
class AppConfig:
    server: str = DEFAULT_SERVER
    profile: str = "default"
    profile_root: Path | None = None  # default: platformdirs / $CHATPAD_HOME
    size: tuple[int, int] = DEFAULT_SIZE
    net: NetConfig = attrs.field(factory=NetConfig)
    offline: bool = False  # no network thread: self-test and screenshots
    theme: str | None = None  # --theme: light, dark or system; remembered in the profile


def theme_path() -> str:
    return str(resources.files("chatpad") / "theme.json")


# Ctrl + these: text one size larger (+1), smaller (-1), or the normal size (0)
ZOOM_KEYS = {pygame.K_EQUALS: 1, pygame.K_PLUS: 1, pygame.K_KP_PLUS: 1,
             pygame.K_MINUS: -1, pygame.K_KP_MINUS: -1, pygame.K_0: 0, pygame.K_KP_0: 0}
# what a platform may type along with those shortcuts (X11 sends "=" with Ctrl+=)
SHORTCUT_TEXT = frozenset({"=", "+", "-", "0", "l", "L"})


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
        self.window = _display_window()
        self.window.minimum_size = MIN_SIZE  # resizing never needs a new window
        self.load_preferences()
        self.widget_theme = widget_theme(self.dark, self.preferences.font_scale)
        self.manager = pygame_gui.UIManager(config.size, self.widget_theme)
        preload_widget_fonts(self.manager.get_theme().get_font_dictionary(), self.widget_theme)
        self.styles = Styles(self.preferences.font_scale)
        self.help_shown = False  # the F1 overlay with the keys
        self.swallow_text = False  # drop the character a Ctrl shortcut may also type
        self.clipboard: Callable[[str], bool] = put_text  # tests may put their own
        session = None if config.offline else self.profile.load_session()
        self.model = Model(session.server if session else config.server)
        self.network: Network | None = None
        self.sent: list[m.Command] = []  # offline mode: what would have been sent
        self.running = True
        self.mouse_pos = (0, 0)  # from the events: the pointer is where they last said
        self.clock = pygame.time.Clock()
        self._banner_key: tuple[str, int] | None = None
        self._banner_lines: list[str] = []
        self.focus_override: bool | None = None  # tests: the window is (not) in front
        self.notifier = Notifier(self)  # title, taskbar flash and toast for new messages
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
        if self.focus_override is not None:
            return self.focus_override
        return os.environ.get("SDL_VIDEODRIVER") == "dummy" or pygame.key.get_focused()

    def show(self, scene: Scene) -> None:
        self.scene.close()
        self.scene = scene

    def open_conversation(self, peer: str) -> None:
        self.show(ConversationScene(self, peer))
        self.submit(m.Open(peer=peer))

    def close_conversation(self) -> None:
        self.show(ConversationsScene(self, select=getattr(self.scene, "peer", None)))
        self.submit(m.Open(peer=None))

    # --- the frame ---------------------------------------------------------------------------

    def step(self, dt: float) -> bool:
        """One frame. Returns False once the window was closed."""
        self.apply_results()
        for event in pygame.event.get():
            self.handle(event)
        self.scene.update(dt)
        self.notifier.update(dt)
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
        arrived = self.notifier.arrivals(result)
        self.model.apply(result)
        self.notifier.notify(arrived)
        if isinstance(result, m.SignedIn) and isinstance(self.scene, LoginScene):
            self.show(ConversationsScene(self))
        elif isinstance(result, m.SignedOut) and not isinstance(self.scene, LoginScene):
            self.show(LoginScene(self))

    def handle(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
            return
        if event.type in (pygame.VIDEORESIZE, pygame.WINDOWSIZECHANGED):
            self.resize()
            return
        if event.type == pygame.MOUSEMOTION:
            self.mouse_pos = event.pos
        if event.type == pygame.KEYDOWN and event.key == pygame.K_F5:
            self.submit(m.Reconnect())
            return
        if self.handle_shortcut(event) or self.notifier.handle(event):
            return
        if not self.scene.handle(event):
            self.manager.process_events(event)

    def resize(self) -> None:
        """The window changed size: lay the screen out again. SDL has resized the display
        surface already, and the window's minimum size keeps it usable; the window itself
        is never recreated (``set_mode`` would destroy it)."""
        self.screen = pygame.display.get_surface()
        size = self.screen.get_size()
        if size == self.manager.window_resolution:
            return  # VIDEORESIZE and WINDOWSIZECHANGED both come for one resize
        self.manager.set_window_resolution(size)
        self.scene.layout(size)

    def draw(self) -> None:
        surface = self.screen
        surface.fill(Colors.BACKGROUND)
        self.scene.draw(surface)
        self.manager.draw_ui(surface)
        self.scene.draw_focus(surface)
        draw_status_bar(surface, self.styles, self.model)
        self.draw_banner(surface)
        self.draw_notices(surface)
        self.notifier.draw(surface)
        if self.help_shown:
            draw_help(surface, self.styles)

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

    def banner_lines(self, width: int) -> list[str]:
        """The banner's text wrapped to a window ``width`` px wide (no banner: none)."""
        text = self.banner_text()
        if text is None:
            return []
        inner = width - 2 * (BANNER_MARGIN + BANNER_PAD[0])
        key = (text, inner)
        if key != self._banner_key:
            self._banner_key, self._banner_lines = key, wrap(self.styles.small, text, inner)
        return self._banner_lines

    def banner_height(self, width: int) -> int:
        """The room, in px, a scene keeps free for the banner above its bottom controls
        (0: no banner), so the banner never covers what the scene shows."""
        lines = self.banner_lines(width)
        if not lines:
            return 0
        return len(lines) * self.styles.small.line_height + 2 * (BANNER_PAD[1] + BANNER_MARGIN)

    def draw_banner(self, surface: pygame.Surface) -> None:
        area = self.scene.banner_area
        lines = self.banner_lines(area.width)
        if not lines or area.height < self.banner_height(area.width):
            return  # the scene has not made room for it yet (next frame)
        line_h = self.styles.small.line_height
        labels = [self.styles.small.render(line, Colors.BANNER_TEXT) for line in lines]
        width = max(label.get_width() for label in labels) + 2 * BANNER_PAD[0]
        box = pygame.Rect(0, 0, width, len(lines) * line_h + 2 * BANNER_PAD[1])
        box.center = area.center
        pygame.draw.rect(surface, Colors.BANNER, box, border_radius=8)
        pygame.draw.rect(surface, Colors.WARN, box, width=1, border_radius=8)
        y = box.y + BANNER_PAD[1]
        for label in labels:
            surface.blit(label, label.get_rect(midtop=(box.centerx, y)))
            y += line_h

    def draw_notices(self, surface: pygame.Surface) -> None:
        now = time.monotonic()
        notices = [text for at, text in self.model.notices if now - at < NOTICE_SECONDS]
        area = self.scene.banner_area
        y = area.top - 8 if area.height else surface.get_height() - BANNER_BOTTOM - 44
        for text in reversed(notices):
            label = self.styles.small.render(text, Colors.SURFACE)
            box = label.get_rect().inflate(28, 16)
            box.midbottom = (surface.get_width() // 2, y)
            pygame.draw.rect(surface, Colors.TEXT, box, border_radius=10)
            surface.blit(label, label.get_rect(center=box.center))
            y = box.top - 8

    # --- appearance, keys, clipboard ------------------------------------------------------

    def load_preferences(self) -> None:
        """The profile's theme and text size, with ``--theme`` applied and remembered (an
        offline app without a profile root, the self-test, starts light and remembers
        nothing)."""
        config = self.config
        self.preferences_path = (None if config.offline and config.profile_root is None
                                 else preferences_file(self.profile.folder))
        self.preferences = (Preferences.load(self.preferences_path) if self.preferences_path
                            else Preferences(theme="light"))  # screenshots: the same anywhere
        if config.theme is not None and config.theme != self.preferences.theme:
            self.preferences = attrs.evolve(self.preferences, theme=config.theme)
            self.save_preferences()
        self.dark = is_dark(self.preferences.theme)
        Colors.use(DARK if self.dark else LIGHT)

    def save_preferences(self) -> None:
        try:
            self.preferences.save(self.preferences_path)
        except OSError as exc:
            log.warning("preferences not saved: %s", exc)

    def set_preferences(self, preferences: Preferences) -> None:
        """Apply a new theme or text size now, and remember it in the profile."""
        if preferences == self.preferences:
            return
        self.preferences = preferences
        self.save_preferences()
        self.restyle()

    def restyle(self) -> None:
        """Redraw everything in the preferred theme and text size: the hand-drawn colours
        and styles change in place, pygame_gui's widgets rebuild from a new theme, and the
        scene lays itself out again."""
        self.dark = is_dark(self.preferences.theme)
        Colors.use(DARK if self.dark else LIGHT)
        scale = self.preferences.font_scale
        self.styles.rescale(scale)
        data = widget_theme(self.dark, scale)
        theme = self.manager.create_new_theme(data)
        preload_widget_fonts(theme.get_font_dictionary(), data, self.widget_theme)
        self.widget_theme = data
        self.manager.set_ui_theme(theme, update_all_sprites=True)
        for element in self.manager.get_sprite_group().sprites():
            # pygame_gui 0.6's text boxes miss a change of font alone: parse them again
            reparse = getattr(element, "_reparse_and_rebuild", None)
            if reparse is not None:
                reparse()
        self.scene.layout(self.screen_size)

    def toggle_theme(self) -> None:
        self.set_preferences(attrs.evolve(self.preferences,
                                          theme="light" if self.dark else "dark"))

    def zoom(self, steps: int) -> None:
        """Text ``steps`` sizes larger (negative: smaller); 0: the normal size."""
        self.set_preferences(self.preferences.zoomed(steps))

    def handle_shortcut(self, event: pygame.event.Event) -> bool:
        """The keys that work on every screen: theme, text size, the F1 help. True when
        the event is used up."""
        if event.type == pygame.WINDOWFOCUSGAINED and self.preferences.theme == "system":
            if is_dark("system") != self.dark:  # the desktop switched meanwhile
                self.restyle()
            return False
        if event.type == pygame.TEXTINPUT and self.swallow_text:
            self.swallow_text = False
            if event.text in SHORTCUT_TEXT:
                return True
        if self.help_shown:
            if event.type == pygame.KEYDOWN and event.key in (pygame.K_ESCAPE, pygame.K_F1):
                self.help_shown = False
            return event.type in (pygame.KEYDOWN, pygame.KEYUP, pygame.TEXTINPUT,
                                  pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP,
                                  pygame.MOUSEWHEEL)
        if event.type != pygame.KEYDOWN:
            return False
        self.swallow_text = False
        if event.key == pygame.K_F1:
            self.help_shown = True
            return True
        if not event.mod & (pygame.KMOD_CTRL | pygame.KMOD_META):
            return False
        if event.key == pygame.K_l and event.mod & pygame.KMOD_SHIFT:
            self.toggle_theme()
            self.swallow_text = True
            return True
        steps = ZOOM_KEYS.get(event.key)
        if steps is None:
            return False
        self.zoom(steps)
        self.swallow_text = True
        return True

    def copy_text(self, text: str) -> None:
        """Put ``text`` on the clipboard and say so."""
        if self.clipboard(text):
            self.model.apply(m.Notice(text="Copied to the clipboard."))
        else:
            self.model.apply(m.Notice(text="There is no clipboard to copy to."))

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


def _display_window() -> pygame.Window:
    """The window ``set_mode`` made, as a :class:`pygame.Window` (for its minimum size)."""
    with warnings.catch_warnings():  # it warns about surface rendering, which is not used
        warnings.simplefilter("ignore", DeprecationWarning)
        return pygame.Window.from_display_module()
