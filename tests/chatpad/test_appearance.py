"""The dark theme, text scaling, keyboard-only use and copying a message: the real app
offline (no network thread) under headless SDL, driven by posted events."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pygame
import pytest

from chatpad import messages as m
from chatpad.app import App, AppConfig
from chatpad.demo import sample
from chatpad.scenes import ConversationScene, ConversationsScene
from chatpad.ui.style import DARK, LIGHT, Colors

pytestmark = pytest.mark.gui

CTRL = pygame.KMOD_LCTRL
SHIFT = pygame.KMOD_LSHIFT


def open_app(root: Path, theme: str | None = None) -> App:
    app = App(AppConfig(offline=True, profile_root=root, theme=theme))
    sample(app)
    step(app, 2)
    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = open_app(tmp_path)
    try:
        yield app
    finally:
        app.close()


def step(app: App, frames: int = 1) -> None:
    for _ in range(frames):
        app.step(1 / 60)


def key(app: App, key: int, mod: int = 0, text: str | None = None) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=mod, unicode="",
                                         scancode=0))
    if text is not None:  # what some platforms type along with the key
        pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=text))
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=mod, unicode="",
                                         scancode=0))
    step(app)


def click(app: App, pos: tuple[int, int], button: int = 1) -> None:
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0),
                                         buttons=(0, 0, 0)))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=button))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=pos, button=button))
    step(app, 2)


def preferences(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / "default" / "preferences.json").read_text())
    return data


def open_bob(app: App) -> ConversationScene:
    app.open_conversation("bob")
    step(app, 2)
    scene = app.scene
    assert isinstance(scene, ConversationScene)
    return scene


# --- theme -----------------------------------------------------------------------------


def test_theme_switch_redraws_in_dark_and_is_remembered(app: App, tmp_path: Path) -> None:
    assert isinstance(app.scene, ConversationsScene)
    search = app.scene.search.rect
    beside_the_list = (20, 400)
    in_the_search_box = (search.right - 12, search.centery)
    assert app.screen.get_at(beside_the_list) == pygame.Color(LIGHT["BACKGROUND"])
    light_box = app.screen.get_at(in_the_search_box)

    key(app, pygame.K_l, CTRL | SHIFT, text="L")
    step(app)
    assert Colors.name == "dark"
    assert app.screen.get_at(beside_the_list) == pygame.Color(DARK["BACKGROUND"])
    dark_box = app.screen.get_at(in_the_search_box)  # pygame_gui's widgets re-themed too
    assert sum(dark_box[:3]) < sum(light_box[:3]) - 300
    assert app.scene.search.get_text() == ""  # the shortcut typed nothing
    assert preferences(tmp_path)["theme"] == "dark"
    if os.name == "posix":
        mode = stat.S_IMODE((tmp_path / "default" / "preferences.json").stat().st_mode)
        assert mode == 0o600
    app.close()

    again = open_app(tmp_path)  # the next start is dark too
    try:
        assert Colors.name == "dark"
        assert again.screen.get_at(beside_the_list) == pygame.Color(DARK["BACKGROUND"])
        key(again, pygame.K_l, CTRL | SHIFT)
        assert again.screen.get_at(beside_the_list) == pygame.Color(LIGHT["BACKGROUND"])
        assert preferences(tmp_path)["theme"] == "light"
    finally:
        again.close()


def test_the_self_test_starts_light_and_remembers_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTK_THEME", "Adwaita:dark")
    app = App(AppConfig(offline=True))
    try:
        assert not app.dark and app.preferences_path is None
        key(app, pygame.K_EQUALS, CTRL)
        assert app.styles.body.size == round(16 * 1.1)
    finally:
        app.close()


def test_theme_option_is_applied_and_remembered(tmp_path: Path) -> None:
    app = open_app(tmp_path, theme="dark")
    try:
        assert app.dark and Colors.name == "dark"
        assert app.screen.get_at((20, 400)) == pygame.Color(DARK["BACKGROUND"])
    finally:
        app.close()
    assert preferences(tmp_path)["theme"] == "dark"
    app = open_app(tmp_path, theme="system")  # back to the system's: light here
    try:
        assert not app.dark
    finally:
        app.close()
    assert preferences(tmp_path)["theme"] == "system"


def test_conversation_bubbles_follow_the_theme(app: App) -> None:
    scene = open_bob(app)
    item = scene.thread.find("Perfect. Leaving work now.")
    assert item is not None and item.mine
    rect = scene.view.item_rect(item)
    assert rect is not None
    # a bubble of mine sits on the right; look into its fill under the text
    inside = (scene.view.rect.right - 16 - 6, rect.y + rect.height // 2)
    assert app.screen.get_at(inside) == pygame.Color(LIGHT["MINE"])
    key(app, pygame.K_l, CTRL | SHIFT)
    step(app)
    assert app.screen.get_at(inside) == pygame.Color(DARK["MINE"])


# --- text size ---------------------------------------------------------------------------


def test_font_scale_grows_the_text_and_is_remembered(app: App, tmp_path: Path) -> None:
    scene = open_bob(app)
    item = scene.thread.find("Perfect. Leaving work now.")
    assert item is not None
    before = scene.view.item_rect(item)
    assert before is not None and app.styles.body.size == 16

    key(app, pygame.K_EQUALS, CTRL, text="=")
    key(app, pygame.K_KP_PLUS, CTRL)
    assert app.preferences.font_scale == 1.25
    assert app.styles.body.size == 20
    assert scene.text() == ""  # the "=" the shortcut typed on some platforms is dropped
    after = scene.view.item_rect(item)
    assert after is not None
    assert after.height > before.height and after.width > before.width
    assert preferences(tmp_path)["font_scale"] == 1.25
    # the widgets' fonts grew too
    assert scene.input.parser is not None
    assert scene.input.parser.default_style["font_size"] == 20

    for _ in range(10):  # bounded: 200 % at most ...
        key(app, pygame.K_EQUALS, CTRL)
    assert app.preferences.font_scale == 2.0 and app.styles.body.size == 32
    step(app)
    for _ in range(20):  # ... and 80 % at least
        key(app, pygame.K_MINUS, CTRL)
    assert app.preferences.font_scale == 0.8
    key(app, pygame.K_EQUALS, CTRL)
    app.close()

    again = open_app(tmp_path)
    try:
        assert again.styles.body.size == round(16 * 0.9)
        key(again, pygame.K_0, CTRL)
        assert again.styles.body.size == 16
        assert preferences(tmp_path)["font_scale"] == 1.0
    finally:
        again.close()


def test_list_rows_grow_with_the_text(app: App) -> None:
    scene = app.scene
    assert isinstance(scene, ConversationsScene)
    normal = scene.list.row_rect(1).height
    key(app, pygame.K_EQUALS, CTRL)
    key(app, pygame.K_EQUALS, CTRL)
    key(app, pygame.K_EQUALS, CTRL)  # 150 %
    assert scene.list.row_rect(1).height == round(normal * 1.5)
    click(app, scene.list.row_rect(1).center)  # clicks still find the row
    assert isinstance(app.scene, ConversationScene) and app.scene.peer == "carol"


# --- keyboard only -------------------------------------------------------------------------


def test_keyboard_only_from_the_list_to_a_conversation_and_back(app: App) -> None:
    scene = app.scene
    assert isinstance(scene, ConversationsScene)
    assert not scene.list.focus_ring
    key(app, pygame.K_DOWN)
    key(app, pygame.K_DOWN)
    key(app, pygame.K_UP)
    key(app, pygame.K_DOWN)
    assert scene.list.selected == 2 and scene.list.focus_ring
    key(app, pygame.K_RETURN)
    convo = app.scene
    assert isinstance(convo, ConversationScene) and convo.peer == "dmitri"
    assert m.Open(peer="dmitri") in app.sent
    assert convo.input.is_focused  # ready to write at once
    key(app, pygame.K_ESCAPE)
    back = app.scene
    assert isinstance(back, ConversationsScene)
    step(app)
    assert back.list.selected == 2 and back.list.focus_ring  # where the keyboard left off
    key(app, pygame.K_END)
    assert back.list.selected == len(back.list.peers()) - 1
    key(app, pygame.K_HOME)
    assert back.list.selected == 0
    # typing with nothing focused goes to the search box
    pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text="c"))
    step(app)
    assert back.search.is_focused and back.search.get_text() == "c"
    assert m.Search(prefix="c") in app.sent
    key(app, pygame.K_ESCAPE)  # clears the search, stays in the list
    assert back.search.get_text() == "" and app.scene is back
    back.focus(None)
    # Tab reaches the search box, the Search and Settings buttons and Sign out; Enter
    # presses the focused one
    key(app, pygame.K_TAB)
    assert back.search.is_focused
    for button in (back.find_messages, back.settings, back.sign_out):
        key(app, pygame.K_TAB)
        assert button.is_focused
    key(app, pygame.K_RETURN)
    assert app.sent[-1] == m.SignOut()


def test_focus_ring_is_drawn_around_the_focused_button(app: App) -> None:
    scene = app.scene
    assert isinstance(scene, ConversationsScene)
    ring = scene.sign_out.rect.inflate(6, 6)
    left_edge = (ring.left, ring.centery)
    assert app.screen.get_at(left_edge) != pygame.Color(LIGHT["FOCUS"])
    scene.focus(scene.sign_out)
    step(app)
    assert app.screen.get_at(left_edge) == pygame.Color(LIGHT["FOCUS"])


def test_f1_shows_the_keys_and_escape_closes_them_only(app: App) -> None:
    scene = open_bob(app)
    before = app.screen.get_at((20, 300))
    key(app, pygame.K_F1)
    assert app.help_shown
    assert app.screen.get_at((20, 300)) != before  # dimmed under the panel
    key(app, pygame.K_ESCAPE)
    assert not app.help_shown and app.scene is scene  # still in the conversation
    key(app, pygame.K_F1)
    key(app, pygame.K_F1)
    assert not app.help_shown


# --- copying a message ---------------------------------------------------------------------


@pytest.fixture
def copied(app: App) -> list[str]:
    texts: list[str] = []

    def put(text: str) -> bool:
        texts.append(text)
        return True

    app.clipboard = put
    return texts


def test_keyboard_selects_a_message_and_ctrl_c_copies_it(app: App, copied: list[str]) -> None:
    scene = open_bob(app)
    items = scene.thread.items
    key(app, pygame.K_UP)  # the box is empty: Up selects the newest message
    assert scene.view.selected_item() == items[-1]
    key(app, pygame.K_UP)
    key(app, pygame.K_UP)
    key(app, pygame.K_DOWN)
    assert scene.view.selected_item() == items[-2]
    key(app, pygame.K_c, CTRL)
    assert copied == [items[-2].body]
    assert any("Copied" in text for _, text in app.model.notices)
    key(app, pygame.K_ESCAPE)  # Escape drops the selection first ...
    assert scene.view.selected is None and app.scene is scene
    scene.input.set_text("draft")
    key(app, pygame.K_UP)  # ... Up is the box's while it holds text, Alt+Up is not
    assert scene.view.selected is None
    key(app, pygame.K_UP, pygame.KMOD_LALT)
    assert scene.view.selected_item() == items[-1]
    key(app, pygame.K_DOWN, pygame.KMOD_LALT)  # past the newest: none
    assert scene.view.selected is None
    key(app, pygame.K_c, CTRL)  # nothing selected: Ctrl+C is the box's, not a copy
    assert copied == [items[-2].body]


def test_click_selects_a_bubble_and_right_click_copies(app: App, copied: list[str]) -> None:
    scene = open_bob(app)
    theirs = scene.thread.find("They do, and the menu is in English, Deutsch and 日本語 too.")
    assert theirs is not None and not theirs.mine
    rect = scene.view.item_rect(theirs)
    assert rect is not None
    on_it = (scene.view.rect.x + 16 + rect.width // 2, rect.centery)
    click(app, on_it)
    assert scene.view.selected_item() == theirs
    assert app.screen.get_at((scene.view.rect.x + 16 - 3, rect.centery)) == \
        pygame.Color(LIGHT["FOCUS"])  # the selected bubble is ringed
    assert scene.input.is_focused  # the click did not take the focus from the box
    key(app, pygame.K_c, CTRL)
    assert copied == [theirs.body]
    click(app, (scene.view.rect.centerx, scene.view.rect.bottom - 4))  # empty space
    assert scene.view.selected is None
    # right-click: a menu with "Copy text"
    click(app, on_it, button=3)
    menu = scene.copying.menu
    assert menu is not None and scene.view.selected_item() == theirs
    click(app, menu.center)
    assert copied == [theirs.body, theirs.body] and scene.copying.menu is None


def test_copy_reaches_the_real_clipboard(app: App) -> None:
    scene = open_bob(app)
    key(app, pygame.K_UP)
    key(app, pygame.K_c, CTRL)
    try:
        text = pygame.scrap.get_text()
    except pygame.error:
        pytest.skip("this SDL has no clipboard")
    assert text == scene.thread.items[-1].body


# --- the system's theme --------------------------------------------------------------------


def test_system_theme_is_followed_when_the_window_comes_back(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform == "win32":
        pytest.skip("Windows reads the registry")
    assert app.preferences.theme == "system" and not app.dark
    monkeypatch.setenv("GTK_THEME", "Adwaita:dark")
    pygame.event.post(pygame.event.Event(pygame.WINDOWFOCUSGAINED))
    step(app)
    assert app.dark and app.screen.get_at((20, 400)) == pygame.Color(DARK["BACKGROUND"])


def test_system_theme_from_gtk_theme(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatpad.appearance import is_dark, system_prefers_dark

    if sys.platform == "win32":
        pytest.skip("Windows reads the registry")
    monkeypatch.setenv("GTK_THEME", "Adwaita:dark")
    assert system_prefers_dark() and is_dark("system")
    monkeypatch.setenv("GTK_THEME", "Adwaita")
    assert not system_prefers_dark() and not is_dark("system")
    assert is_dark("dark") and not is_dark("light")


@pytest.mark.skipif(os.name != "posix", reason="a shell script stands in for gsettings")
@pytest.mark.parametrize(("answer", "dark"), [("'prefer-dark'", True), ("'default'", False),
                                              ("'prefer-light'", False)])
def test_system_theme_from_gsettings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     answer: str, dark: bool) -> None:
    from chatpad.appearance import system_prefers_dark

    script = tmp_path / "gsettings"
    script.write_text(f"#!/bin/sh\n[ \"$3\" = color-scheme ] && echo \"{answer}\"\n")
    script.chmod(0o755)
    monkeypatch.delenv("GTK_THEME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system_prefers_dark() is dark
    script.unlink()  # no gsettings at all: light
    assert system_prefers_dark() is False
