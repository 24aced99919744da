"""Sample data and a tour of every screen: used by ``--self-test`` and ``make screenshots``.

Nothing here touches the network: the app runs offline and the results a network thread
would send are applied to its model directly.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import pygame

from chatpad import messages as m
from chatpad.app import App, AppConfig
from chatpad.items import ChatItem, Summary
from chatpad.scenes import ConversationScene, ConversationsScene, LoginScene

__all__ = ["SCREENS", "tour"]

SCREENS = ("sign-in", "sign-in-error", "conversations", "conversation", "reconnecting",
           "conversation-dark", "conversations-dark", "keys")

_CHAT = [
    ("bob", "Hey Alice! Are we still on for the climbing gym tonight? 🧗"),
    ("alice", "Yes! 7 pm works. Should I bring the spare harness?"),
    ("bob", "Please do. Also — café afterwards? ☕ I found a place with great crêpes."),
    ("alice", "Deal 😄 Naïve question: do they have vegan options?"),
    ("bob", "They do, and the menu is in English, Deutsch and 日本語 too."),
    ("alice", "Perfect. Leaving work now."),
    ("alice", "On the train, 10 minutes away."),
    ("alice", "Just arrived — where are you?"),
]
_STATUSES = ["read", "read", "delivered", "sent", "queued"]


def sample(app: App, now_ms: int | None = None) -> None:
    """Fill the model as if alice were signed in with a few conversations."""
    now_ms = now_ms or int(time.time() * 1000)
    model = app.model
    app.apply(m.SignedIn(server="http://127.0.0.1:8765", username="alice"))
    summaries = [
        Summary(peer="bob", preview="Just arrived — where are you?", ts=now_ms - 60_000,
                seq=108, unread=0, mine=True),
        Summary(peer="carol", preview="Can you send me the slides from Monday? 📎",
                ts=now_ms - 5 * 60_000, seq=97, unread=3, mine=False),
        Summary(peer="dmitri", preview="Спасибо! See you on Friday.", ts=now_ms - 42 * 60_000,
                seq=90, unread=1, mine=False),
        Summary(peer="emma.w", preview="Sounds good 👍", ts=now_ms - 3 * 3600_000, seq=80,
                unread=0, mine=True),
        Summary(peer="support", preview="Welcome to chatpad! Messages you write offline are "
                "kept and sent as soon as you are back online.", ts=now_ms - 2 * 86400_000,
                seq=3, unread=12, mine=False),
    ]
    model.apply(m.Conversations(items=tuple(summaries)))
    items: list[ChatItem] = []
    mine_index = 0
    n = len(_CHAT)
    for index, (sender, body) in enumerate(_CHAT):
        mine = sender == "alice"
        status = ""
        if mine:
            status = _STATUSES[min(mine_index, len(_STATUSES) - 1)]
            mine_index += 1
        queued = status == "queued"
        items.append(ChatItem(
            peer="bob", sender=sender, id=f"demo-{index}", seq=None if queued else 100 + index,
            body=body, ts=now_ms - (n - index) * 90_000, status=status, mine=mine))
    model.apply(m.Page(peer="bob", items=tuple(items), has_more=False, older=False))
    model.apply(m.Status(state="connected", retry_at=None, outbox=1))
    model.apply(m.PeerActivity(peer="bob", online=True))


def tour(out_dir: Path | None = None, size: tuple[int, int] = (960, 680)) -> list[str]:
    """Render every screen once; save PNGs into ``out_dir`` when given. Returns the names."""
    app = App(AppConfig(offline=True, size=size))
    done: list[str] = []

    def shot(name: str) -> None:
        for _ in range(2):  # pygame_gui settles layouts over a frame
            app.step(1 / 60)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            pygame.image.save(app.screen, str(out_dir / f"{name}.png"))
        done.append(name)

    try:
        login = app.scene
        assert isinstance(login, LoginScene)
        login.username.set_text("alice")
        shot("sign-in")
        login.password.set_text("correct horse")
        app.apply(m.AuthFailed(code="invalid_credentials", message="wrong"))
        shot("sign-in-error")
        sample(app)
        assert isinstance(app.scene, ConversationsScene)
        shot("conversations")
        app.show(ConversationScene(app, "bob"))
        scene = app.scene
        assert isinstance(scene, ConversationScene)
        scene.input.set_text("See you in a sec!")
        shot("conversation")
        app.apply(m.Status(state="reconnecting", retry_at=time.monotonic() + 4.4, outbox=2))
        app.apply(m.Changed(items=(ChatItem(
            peer="bob", sender="alice", id="demo-q2", seq=None, body="I'm by the entrance.",
            ts=int(time.time() * 1000), status="queued", mine=True),)))
        scene.input.set_text("")
        shot("reconnecting")
        app.apply(m.Status(state="connected", retry_at=None, outbox=1))
        app.set_preferences(attrs.evolve(app.preferences, theme="dark"))
        scene.view.select(scene.thread.find("They do, and the menu is in English, Deutsch "
                                            "and 日本語 too."))
        shot("conversation-dark")
        app.close_conversation()  # back with the keyboard: the row left is chosen
        shot("conversations-dark")
        app.help_shown = True
        shot("keys")
    finally:
        app.close()
    return done
