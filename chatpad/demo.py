"""Sample data and a tour of every screen: used by ``--self-test`` and ``make screenshots``.

Nothing here touches the network: the app runs offline and the results a network thread
would send are applied to its model directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pygame

from chatpad import messages as m
from chatpad.app import App, AppConfig
from chatpad.items import ChatItem, Hit, Summary
from chatpad.scenes import (
    ConversationScene,
    ConversationsScene,
    LoginScene,
    SearchScene,
    SettingsScene,
)

__all__ = ["SCREENS", "tour"]

SCREENS = ("sign-in", "sign-in-error", "conversations", "conversation", "reconnecting",
           "new-messages", "notification", "search", "settings",
           "conversation-dark", "conversations-dark", "keys", "large-text")

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
_YESTERDAY = 4  # the first messages of the chat with bob were written yesterday evening
_CAROL = [  # (sender, body, days ago); the last three are unread
    ("carol", "Thanks for presenting today, it went really well!", 9),
    ("alice", "Thank you! The questions at the end were great.", 9),
    ("carol", "Could we do a short retro on Friday?", 3),
    ("alice", "Sure, 10:00 works for me.", 3),
    ("carol", "Morning! Quick one before the meeting.", 0),
    ("carol", "The client asked for the deck again.", 0),
    ("carol", "Can you send me the slides from Monday? 📎", 0),
]


def _evening_before(now_ms: int, days: int, minute: int) -> int:
    """Unix ms of 19:00 local time ``days`` days before ``now_ms``'s day, plus minutes."""
    day = time.localtime(now_ms / 1000 - days * 86400)
    evening = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 19, minute, 0, 0, 0, -1))
    return int(evening * 1000)


def sample(app: App, now_ms: int | None = None) -> None:
    """Fill the model as if alice were signed in with a few conversations."""
    now_ms = now_ms or int(time.time() * 1000)
    model = app.model
    app.apply(m.SignedIn(server="http://127.0.0.1:8765", username="alice"))
    summaries = [
        Summary(peer="bob", preview="Just arrived — where are you?", ts=now_ms - 60_000,
                seq=-1, unread=0, mine=True),  # still queued, as in the conversation
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
            body=body, ts=(_evening_before(now_ms, 1, 4 * index) if index < _YESTERDAY
                           else now_ms - (n - index) * 90_000), status=status, mine=mine))
    model.apply(m.Page(peer="bob", items=tuple(items), has_more=False, older=False))
    carol = [ChatItem(peer="carol", sender=sender, id=f"demo-c{index}", seq=91 + index,
                      body=body, ts=(_evening_before(now_ms, days, 5 * index) if days
                                     else now_ms - (len(_CAROL) - index) * 100_000),
                      status="read" if sender == "alice" else "", mine=sender == "alice")
             for index, (sender, body, days) in enumerate(_CAROL)]
    model.apply(m.Page(peer="carol", items=tuple(carol), has_more=False, older=False))
    model.apply(m.Status(state="connected", retry_at=None, outbox=1))
    model.apply(m.PeerActivity(peer="bob", online=True))


def sample_hits(now_ms: int) -> tuple[Hit, ...]:
    """What searching "caf" finds in the sample conversations."""
    day = 86400_000
    found = [
        ("bob", "bob", 102, now_ms - 6 * 90_000,
         (("Please do. Also — ", False), ("café", True),
          (" afterwards? ☕ I found a place with great crêpes.", False))),
        ("carol", "carol", 41, now_ms - 3 * day,
         (("The ", False), ("café", True),
          (" near the office has good wifi, we could work from there on Monday.", False))),
        ("emma.w", "alice", 12, now_ms - 40 * day,
         (("Meet you at the ", False), ("cafeteria", True), (" at noon?", False))),
        ("support", "support", 2, now_ms - 400 * day,
         (("…search finds words without accents too: ", False), ("cafe", True),
          (" finds ", False), ("café", True), (".", False))),
    ]
    return tuple(
        Hit(item=ChatItem(peer=peer, sender=sender, id=f"found-{seq}", seq=seq,
                          body="".join(text for text, _ in runs), ts=ts,
                          status="read" if sender == "alice" else "",
                          mine=sender == "alice"),
            snippet=runs)
        for peer, sender, seq, ts, runs in found)


def new_messages(app: App, shot: Callable[[str], None]) -> None:
    """carol's conversation with three unread messages, scrolled up a little: the date
    separators, the "New messages" line and the jump-to-latest button with its count."""
    app.focus_override = False  # the window is not in front: the three stay unread
    app.show(ConversationScene(app, "carol"))
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    app.step(1 / 60)
    scene.view.scroll_by(150)
    shot("new-messages")
    assert scene.view.shows_jump and scene.view.unseen == 3


def notification(app: App, shot: Callable[[str], None]) -> None:
    """Back in the list, dmitri writes while the window is not in front: a toast, a
    taskbar flash and the count in the window title."""
    app.close_conversation()
    now_ms = int(time.time() * 1000)
    body = "Are you coming to the board games night on Friday? We need a fourth player."
    app.apply(m.Changed(items=(ChatItem(
        peer="dmitri", sender="dmitri", id="demo-d1", seq=91, body=body, ts=now_ms,
        status="", mine=False),)))
    rows = [attrs.evolve(s, preview=body, ts=now_ms, seq=91, unread=2)
            if s.peer == "dmitri" else s for s in app.model.conversations]
    app.apply(m.Conversations(items=tuple(rows)))
    shot("notification")
    assert app.notifier.toast.peer == "dmitri" and app.notifier.title.startswith("(17) chatpad")


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
        new_messages(app, shot)
        notification(app, shot)
        app.focus_override = None  # in front again
        app.notifier.toast.dismiss()
        search = SearchScene(app)
        app.show(search)
        search.entry.set_text("caf")
        search.update(0)  # the search is sent; its answer comes back as the network's would
        app.apply(m.MessagesFound(text="caf", peer=None,
                                  hits=sample_hits(int(time.time() * 1000))))
        shot("search")
        settings = SettingsScene(app)
        app.show(settings)
        settings.remove.set_state(True)
        shot("settings")
        app.show(ConversationScene(app, "bob"))
        scene = app.scene
        assert isinstance(scene, ConversationScene)
        app.set_preferences(attrs.evolve(app.preferences, theme="dark"))
        scene.view.select(scene.thread.find("They do, and the menu is in English, Deutsch "
                                            "and 日本語 too."))
        shot("conversation-dark")
        app.close_conversation()  # back with the keyboard: the row left is chosen
        shot("conversations-dark")
        app.help_shown = True
        shot("keys")
        app.help_shown = False  # the light theme again, with the text at 150 %
        app.set_preferences(attrs.evolve(app.preferences, theme="light", font_scale=1.5))
        app.open_conversation("bob")
        shot("large-text")
    finally:
        app.close()
    return done
