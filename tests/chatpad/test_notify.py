"""Notice of new messages (window title, taskbar flash, toast) and the conversation's date
separators, "New messages" line and jump-to-latest button, on the real scenes (offline
app: results applied as the network thread would send them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import date

import pygame
import pytest

from chatpad import messages as m
from chatpad.app import App, AppConfig
from chatpad.items import ChatItem, Summary
from chatpad.scenes import ConversationScene, ConversationsScene
from chatpad.ui.message_view import day_label
from chatpad.ui.toast import TOAST_SECONDS
from tests.chatd.server import ChatdProcess
from tests.chatpad.driver import Driver, Peer
from tests.chatpad.test_screens import sign_up

pytestmark = pytest.mark.gui

DAY_MS = 86_400_000


@pytest.fixture
def app() -> Iterator[App]:
    app = App(AppConfig(offline=True))
    app.apply(m.SignedIn(server="http://127.0.0.1:8765", username="alice"))
    app.apply(m.Status(state="connected", retry_at=None, outbox=0))
    try:
        yield app
    finally:
        app.close()


def msg(peer: str, seq: int, ts: int, *, mine: bool = False, body: str = "") -> ChatItem:
    return ChatItem(peer=peer, sender="alice" if mine else peer, id=f"{peer}-{seq}", seq=seq,
                    body=body or f"{peer} says {seq}", ts=ts, status="read" if mine else "",
                    mine=mine)


def summary(peer: str, last: ChatItem, unread: int) -> Summary:
    assert last.seq is not None
    return Summary(peer=peer, preview=last.body, ts=last.ts, seq=last.seq, unread=unread,
                   mine=last.mine)


def noon_ms(days_ago: int) -> int:
    """Noon, local time, ``days_ago`` days before today (never on the wrong day)."""
    day = time.localtime(time.time() - days_ago * 86400)
    return int(time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 12, 0, 0, 0, 0, -1)) * 1000)


def steps(app: App, frames: int = 2, dt: float = 1 / 60) -> None:
    for _ in range(frames):
        app.step(dt)


def click(app: App, pos: tuple[int, int]) -> None:
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0),
                                         buttons=(0, 0, 0)))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=1))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=pos, button=1))
    steps(app)


def key(app: App, code: int, mod: int = 0) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=code, mod=mod, unicode="",
                                         scancode=0))
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=code, mod=mod, unicode="",
                                         scancode=0))
    steps(app)


def open_scene(app: App, peer: str) -> ConversationScene:
    app.open_conversation(peer)
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    steps(app)
    return scene


# --- date separators -----------------------------------------------------------------------


def test_day_labels() -> None:
    today = date(2026, 12, 2)
    assert day_label(today, today) == "Today"
    assert day_label(date(2026, 12, 1), today) == "Yesterday"
    assert day_label(date(2026, 11, 24), today) == "Tue 24 Nov"
    assert day_label(date(2025, 11, 24), today) == "24 Nov 2025"
    assert day_label(date(2026, 1, 1), date(2026, 1, 1)) == "Today"
    assert day_label(date(2025, 12, 31), date(2026, 1, 1)) == "Yesterday"


def test_date_separators_between_days(app: App) -> None:
    items = [msg("bob", 1, noon_ms(400)), msg("bob", 2, noon_ms(3), mine=True),
             msg("bob", 3, noon_ms(1)), msg("bob", 4, noon_ms(1) + 60_000),
             msg("bob", 5, noon_ms(0), mine=True)]
    app.apply(m.Page(peer="bob", items=tuple(items), has_more=False, older=False))
    scene = open_scene(app, "bob")
    view = scene.view
    today = date.today()
    expected = [day_label(date.fromtimestamp(noon_ms(400) / 1000), today),
                day_label(date.fromtimestamp(noon_ms(3) / 1000), today), "Yesterday", "Today"]
    assert view.mark_labels() == expected
    assert expected[0].endswith(str(date.fromtimestamp(noon_ms(400) / 1000).year))
    # each separator sits between the last bubble of one day and the first of the next
    for label, before, after in (("Yesterday", items[1], items[2]),
                                 ("Today", items[3], items[4])):
        line = view.mark_rect(label)
        above, below = view.item_rect(before), view.item_rect(after)
        assert line is not None and above is not None and below is not None
        assert above.bottom <= line.top and line.bottom <= below.top


def test_the_first_day_separator_waits_for_older_pages(app: App) -> None:
    older = [msg("bob", 1, noon_ms(1)), msg("bob", 2, noon_ms(0) - 3_600_000)]
    newer = [msg("bob", 3, noon_ms(0))]
    app.apply(m.Page(peer="bob", items=tuple(newer), has_more=True, older=False))
    scene = open_scene(app, "bob")
    assert scene.view.mark_labels() == []  # its day may start on an older page
    app.apply(m.Page(peer="bob", items=tuple(older), has_more=False, older=True))
    steps(app)
    assert scene.view.mark_labels() == ["Yesterday", "Today"]


# --- "New messages" line, unread count in the title, jump to the latest ------------------------


def history(peer: str, count: int, unread: int) -> list[ChatItem]:
    """``count`` messages today, every third mine; the last ``unread`` are the peer's."""
    start = int(time.time() * 1000) - count * 1000
    items = [msg(peer, n + 1, start + n * 1000, mine=n % 3 == 0 and n < count - unread)
             for n in range(count)]
    return items


def test_new_messages_line_above_the_first_unread_stays_until_left(app: App) -> None:
    items = history("bob", 40, unread=3)
    app.apply(m.Conversations(items=(summary("bob", items[-1], unread=3),)))
    app.apply(m.Page(peer="bob", items=tuple(items), has_more=False, older=False))
    app.focus_override = False  # not in front: nothing is read yet
    steps(app)
    assert app.notifier.title == "(3) chatpad — alice"
    assert pygame.display.get_caption()[0] == "(3) chatpad — alice"
    scene = open_scene(app, "bob")
    view = scene.view
    assert view.new_line_key == items[-3].key
    assert view.mark_labels() == ["Today", "New messages"]
    line, first = view.mark_rect("New messages"), view.item_rect(items[-3])
    before = view.item_rect(items[-4])
    assert line is not None and first is not None and before is not None
    assert before.bottom <= line.top and line.bottom <= first.top
    assert app.notifier.title == "(3) chatpad — alice"  # on screen, but the window is not in front
    assert not app.sent or not any(isinstance(c, m.MarkRead) for c in app.sent)

    app.focus_override = True  # the reader comes back: read, and the title is plain again
    steps(app)
    assert any(isinstance(c, m.MarkRead) and c.up_to == items[-1].seq for c in app.sent)
    assert app.notifier.title == "chatpad — alice"
    assert view.mark_labels() == ["Today", "New messages"]  # stays while it is open
    reply = ChatItem(peer="bob", sender="alice", id="r1", seq=41, body="ok",
                     ts=int(time.time() * 1000), status="sent", mine=True)
    app.apply(m.Changed(items=(reply,)))
    steps(app)
    assert view.mark_labels() == ["Today", "New messages"]

    app.close_conversation()
    app.apply(m.Conversations(items=(summary("bob", reply, unread=0),)))
    scene = open_scene(app, "bob")
    assert scene.view.mark_labels() == ["Today"]  # gone once the conversation was left


def test_new_messages_line_waits_for_the_page_with_the_newest(app: App) -> None:
    items = history("bob", 20, unread=2)
    app.apply(m.Conversations(items=(summary("bob", items[-1], unread=2),)))
    app.apply(m.Page(peer="bob", items=tuple(items[:-5]), has_more=False, older=False))
    app.focus_override = False
    scene = open_scene(app, "bob")  # the cached page is older than the newest message
    assert scene.view.new_line_key is None
    assert scene.unread_count() == 2
    app.apply(m.Page(peer="bob", items=tuple(items), has_more=False, older=False))
    steps(app)
    assert scene.view.new_line_key == items[-2].key
    assert scene.unread_count() == 2 and app.notifier.title == "(2) chatpad — alice"


def test_messages_that_arrive_while_away_get_the_line(app: App) -> None:
    items = history("bob", 10, unread=0)
    app.apply(m.Conversations(items=(summary("bob", items[-1], unread=0),)))
    app.apply(m.Page(peer="bob", items=tuple(items), has_more=False, older=False))
    scene = open_scene(app, "bob")
    now = int(time.time() * 1000)
    app.apply(m.Changed(items=(msg("bob", 11, now),)))
    steps(app)
    assert scene.view.new_line_key is None  # read as it came: no line
    app.focus_override = False
    fresh = [msg("bob", 12, now + 1), msg("bob", 13, now + 2)]
    app.apply(m.Changed(items=tuple(fresh)))
    steps(app)
    assert scene.view.new_line_key == fresh[0].key
    assert app.notifier.title == "(2) chatpad — alice"
    app.focus_override = True
    steps(app)
    assert app.notifier.title == "chatpad — alice"
    assert scene.view.new_line_key == fresh[0].key  # it stays
    app.focus_override = False
    app.apply(m.Changed(items=(msg("bob", 14, now + 3),)))
    steps(app)
    assert scene.view.new_line_key == fresh[0].key  # one line per visit


def test_jump_to_latest_button_click_and_end_key(app: App) -> None:
    items = history("bob", 60, unread=0)
    app.apply(m.Conversations(items=(summary("bob", items[-1], unread=0),)))
    app.apply(m.Page(peer="bob", items=tuple(items), has_more=False, older=False))
    scene = open_scene(app, "bob")
    view = scene.view
    assert view.at_bottom and not view.shows_jump
    w, h = app.screen_size
    for _ in range(3):
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(w // 2, h // 2),
                                             rel=(0, 0), buttons=(0, 0, 0)))
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=5, flipped=False,
                                             precise_x=0.0, precise_y=5.0))
        steps(app, 1)
    assert view.shows_jump and view.unseen == 0
    surface = app.screen
    button = view.jump_rect()
    assert surface.get_at(button.center) != surface.get_at(button.move(-60, 0).center)

    # two new messages arrive below the view: the count shows on the button, not read yet
    now = int(time.time() * 1000)
    fresh = [msg("bob", 61, now), msg("bob", 62, now + 1)]
    app.apply(m.Changed(items=tuple(fresh)))
    steps(app)
    assert view.unseen == 2 and app.notifier.title == "(2) chatpad — alice"
    assert not any(isinstance(c, m.MarkRead) and c.up_to >= 61 for c in app.sent)

    click(app, view.jump_rect().center)
    assert view.at_bottom and not view.shows_jump
    steps(app)
    assert any(isinstance(c, m.MarkRead) and c.up_to == 62 for c in app.sent)
    assert view.unseen == 0 and app.notifier.title == "chatpad — alice"

    # End jumps when the message box is empty; with text in it only Ctrl+End does
    view.scroll_by(400)
    assert not view.at_bottom
    key(app, pygame.K_END)
    assert view.at_bottom
    scene.input.set_text("draft")
    view.scroll_by(400)
    key(app, pygame.K_END)
    assert not view.at_bottom  # End moved the cursor instead
    key(app, pygame.K_END, pygame.KMOD_CTRL)
    assert view.at_bottom


# --- toast and taskbar flash --------------------------------------------------------------------


def test_toast_for_another_conversation_opens_it_and_goes_away(app: App) -> None:
    bob = history("bob", 5, unread=0)
    carol_old = msg("carol", 7, int(time.time() * 1000) - 60_000)
    app.apply(m.Conversations(items=(summary("bob", bob[-1], 0),
                                     summary("carol", carol_old, 0))))
    app.apply(m.Page(peer="bob", items=tuple(bob), has_more=False, older=False))
    open_scene(app, "bob")

    app.apply(m.Changed(items=(msg("bob", 6, int(time.time() * 1000)),)))
    steps(app)
    assert not app.notifier.toast.is_shown  # bob's conversation is on screen
    assert app.notifier.flashes == 0  # the window is in front

    body = "Lunch tomorrow? I booked a table at the new ramen place near the station."
    app.apply(m.Changed(items=(msg("carol", 8, int(time.time() * 1000), body=body),)))
    steps(app)
    assert app.notifier.toast.peer == "carol"
    assert app.notifier.toast.text() == f"carol: {body}"
    toast = app.notifier.toast
    assert toast.rect.width > 0 and app.screen.get_rect().contains(toast.rect)

    # a receipt or the same message again is no news
    app.apply(m.Conversations(items=(summary("bob", bob[-1], 0),
                                     summary("carol", msg("carol", 8, 0), 1))))
    app.notifier.toast.dismiss()
    app.apply(m.Changed(items=(msg("carol", 8, int(time.time() * 1000), body=body),)))
    steps(app)
    assert not app.notifier.toast.is_shown

    app.apply(m.Changed(items=(msg("carol", 9, int(time.time() * 1000)),)))
    steps(app)
    assert app.notifier.toast.is_shown
    click(app, app.notifier.toast.rect.center)
    scene = app.scene
    assert isinstance(scene, ConversationScene) and scene.peer == "carol"
    assert m.Open(peer="carol") in app.sent
    assert not app.notifier.toast.is_shown

    # shown while the list is up too; it goes away by itself after a few seconds
    app.close_conversation()
    app.apply(m.Changed(items=(msg("bob", 7, int(time.time() * 1000)),)))
    steps(app)
    assert isinstance(app.scene, ConversationsScene) and app.notifier.toast.peer == "bob"
    app.focus_override = False  # while the window is in the back it waits
    steps(app, 1, dt=TOAST_SECONDS * 2)
    assert app.notifier.toast.is_shown
    app.focus_override = True
    steps(app, 1, dt=TOAST_SECONDS / 2)
    assert app.notifier.toast.is_shown
    steps(app, 1, dt=TOAST_SECONDS / 2 + 0.1)
    assert not app.notifier.toast.is_shown


def test_ctrl_enter_opens_the_toast_and_plain_enter_still_sends(app: App) -> None:
    app.apply(m.Page(peer="bob", items=tuple(history("bob", 3, 0)), has_more=False,
                     older=False))
    scene = open_scene(app, "bob")
    app.apply(m.Changed(items=(msg("carol", 1, int(time.time() * 1000)),)))
    steps(app)
    assert app.notifier.toast.peer == "carol"
    scene.input.set_text("hello")
    key(app, pygame.K_RETURN)
    assert m.Post(peer="bob", body="hello") in app.sent
    assert app.scene is scene and app.notifier.toast.is_shown
    key(app, pygame.K_RETURN, pygame.KMOD_CTRL)
    assert isinstance(app.scene, ConversationScene) and app.scene.peer == "carol"


def test_flash_only_while_the_window_is_not_in_front(app: App) -> None:
    app.apply(m.Changed(items=(msg("bob", 1, int(time.time() * 1000)),)))
    steps(app)
    assert app.notifier.flashes == 0
    app.focus_override = False
    app.apply(m.Changed(items=(msg("bob", 2, int(time.time() * 1000)),)))
    steps(app)  # the dummy driver cannot flash: asked for, and nothing breaks
    assert app.notifier.flashes == 1
    mine = ChatItem(peer="bob", sender="alice", id="x", seq=3, body="hi", ts=0,
                    status="sent", mine=True)
    app.apply(m.Changed(items=(mine,)))
    assert app.notifier.flashes == 1  # my own message (another device, an ack) is no news


# --- against a real chatd ---------------------------------------------------------------------


def test_a_message_while_away_shows_in_the_title_until_read(
        chatd: ChatdProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bob = Peer(chatd.url, "bob").register().connect()
    driver = Driver(chatd.url)
    app = driver.app
    try:
        sign_up(driver, "alice")
        driver.until(lambda: isinstance(app.scene, ConversationsScene), "signed in")
        driver.until_connected()
        assert app.notifier.title == "chatpad — alice"
        app.focus_override = False  # the window goes to the back
        first = "secret plans for the weekend, part one"
        bob.send_frame({"type": "send", "id": "n1", "to": "alice", "body": first})
        driver.until(lambda: app.notifier.title == "(1) chatpad — alice", "the count in the title")
        assert pygame.display.get_caption()[0] == "(1) chatpad — alice"
        assert app.notifier.flashes == 1
        assert app.notifier.toast.peer == "bob" and app.notifier.toast.text() == f"bob: {first}"

        driver.click(app.notifier.toast.rect)  # opened while still away: not read yet
        convo = driver.until(lambda: isinstance(app.scene, ConversationScene)
                             and app.scene, "the toast opens the conversation")
        assert isinstance(convo, ConversationScene) and convo.peer == "bob"
        item = driver.until(lambda: convo.thread.find(first), "the message shown")
        driver.until(lambda: "New messages" in convo.view.mark_labels(), "the line")
        assert convo.view.new_line_key == item.key
        assert app.notifier.title == "(1) chatpad — alice"

        second = "secret plans for the weekend, part two"
        bob.send_frame({"type": "send", "id": "n2", "to": "alice", "body": second})
        driver.until(lambda: app.notifier.title == "(2) chatpad — alice", "the second counted")
        assert app.notifier.flashes == 2 and not app.notifier.toast.is_shown  # on screen: no toast
        newest = convo.thread.find(second)
        assert newest is not None and newest.seq is not None

        app.focus_override = True  # back in front: read, and the title is plain
        driver.until(lambda: app.notifier.title == "chatpad — alice", "a plain title")
        bob.recv_until(lambda f: f["type"] == "receipt" and f["status"] == "read"
                       and f["up_to"] >= newest.seq)
        assert first not in caplog.text and second not in caplog.text  # never bodies
    finally:
        driver.close()
        bob.close()
