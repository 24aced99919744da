"""Notice of new messages: the unread count in the window title, a taskbar flash (the
urgency hint) while the window is in the back, and a toast for a message whose
conversation is not on screen. Main thread only; it reads the app's model and scene."""

from __future__ import annotations

import logging
import warnings
from typing import Protocol

import pygame

from chatpad import messages as m
from chatpad.items import ChatItem
from chatpad.model import Model
from chatpad.scenes import ConversationScene, LoginScene, Scene
from chatpad.ui import Styles, Toast

__all__ = ["Notifier", "NotifierHost"]

log = logging.getLogger(__name__)

PLAIN_TITLE = "chatpad"


class NotifierHost(Protocol):
    """What the notifier uses of the app: the model and scene to read, the window's focus,
    and opening a conversation."""

    styles: Styles
    model: Model
    scene: Scene

    def has_focus(self) -> bool: ...

    def open_conversation(self, peer: str) -> None: ...


class Notifier:
    """What tells the user of new messages. The app calls :meth:`arrivals` and
    :meth:`notify` around applying each result, and :meth:`handle`, :meth:`update` and
    :meth:`draw` every frame."""

    def __init__(self, app: NotifierHost) -> None:
        self.app = app
        self.toast = Toast(app.styles)
        self.title = PLAIN_TITLE  # the window's caption, as last set
        self.flashes = 0  # taskbar flashes asked for (tests read it: the dummy driver has none)

    # --- new messages ---------------------------------------------------------------------

    def arrivals(self, result: m.Result) -> list[ChatItem]:
        """The messages from others in ``result`` that are news (not a receipt, not one
        delivered again): later than the last one the model knows of their conversation.
        Call it before the model applies ``result``."""
        if not isinstance(result, m.Changed):
            return []
        model = self.app.model
        fresh = []
        for item in result.items:
            if item.mine or item.seq is None:
                continue
            summary = model.summary(item.peer)
            if summary is not None and item.seq <= summary.seq:
                continue
            thread = model.threads.get(item.peer)
            if thread is not None and thread.has(item.key):
                continue
            fresh.append(item)
        return fresh

    def notify(self, items: list[ChatItem]) -> None:
        """New messages arrived: flash the taskbar when the window is in the back, and show
        a toast for the newest one whose conversation is not on screen."""
        scene = self.app.scene
        if not items or self.app.model.me is None or isinstance(scene, LoginScene):
            return
        for item in items:
            log.debug("new message from %s (seq %s)", item.sender, item.seq)  # never bodies
        if not self.app.has_focus():
            self.flash()
        on_screen = scene.peer if isinstance(scene, ConversationScene) else None
        elsewhere = [item for item in items if item.peer != on_screen]
        if elsewhere:
            last = elsewhere[-1]
            self.toast.show(last.peer, last.sender, last.body)

    def flash(self) -> None:
        """Ask the window manager for attention (taskbar flash, urgency hint) until the
        window is in front again. Not every video driver can (the dummy one cannot)."""
        self.flashes += 1
        try:
            with warnings.catch_warnings():  # pygame-ce warns of its Surface use, not ours
                warnings.simplefilter("ignore", DeprecationWarning)
                window = pygame.Window.from_display_module()
            window.flash(pygame.FLASH_UNTIL_FOCUSED)
        except (pygame.error, AttributeError) as exc:  # no such driver call, older pygame
            log.debug("no taskbar flash: %s", exc)

    # --- the window title ------------------------------------------------------------------

    def unread_total(self) -> int:
        """Messages from others not read yet, in every conversation (the open one counts
        what its reader has not seen)."""
        scene, model = self.app.scene, self.app.model
        if model.me is None or isinstance(scene, LoginScene):
            return 0
        open_peer = scene.peer if isinstance(scene, ConversationScene) else None
        total = sum(s.unread for s in model.conversations if s.peer != open_peer)
        if isinstance(scene, ConversationScene):
            total += scene.unread_count()
        return total

    def window_title(self) -> str:
        """ "(3) chatpad — alice" while 3 messages are unread, "chatpad — alice" when
        none, "chatpad" when no one is signed in."""
        me = self.app.model.me
        if me is None or isinstance(self.app.scene, LoginScene):
            return PLAIN_TITLE
        unread = self.unread_total()
        count = f"({unread if unread < 1000 else '999+'}) " if unread else ""
        return f"{count}{PLAIN_TITLE} — {me}"

    # --- every frame -----------------------------------------------------------------------

    def update(self, dt: float) -> None:
        scene = self.app.scene
        if isinstance(scene, LoginScene) or (isinstance(scene, ConversationScene)
                                             and scene.peer == self.toast.peer):
            self.toast.dismiss()
        if self.app.has_focus():  # one that came while away waits to be seen
            self.toast.update(dt)
        title = self.window_title()
        if title != self.title:
            self.title = title
            pygame.display.set_caption(title)

    def handle(self, event: pygame.event.Event) -> bool:
        """A click on the toast, or Ctrl+Enter while it shows, opens its conversation.
        True when the event is used up."""
        if not self.toast.is_shown:
            return False
        if event.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP) and event.button == 1:
            if not self.toast.hit(event.pos):
                return False
            if event.type == pygame.MOUSEBUTTONUP:
                self.open_toast()
            return True
        if (event.type == pygame.KEYDOWN and event.key in (pygame.K_RETURN, pygame.K_KP_ENTER)
                and event.mod & pygame.KMOD_CTRL):
            self.open_toast()
            return True
        return False

    def open_toast(self) -> None:
        peer = self.toast.peer
        self.toast.dismiss()
        if peer is not None:
            self.app.open_conversation(peer)

    def draw(self, surface: pygame.Surface) -> None:
        self.toast.draw(surface)
