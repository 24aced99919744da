"""The frame loop stays at 60 fps with a 1,000-message conversation open, and the
self-test renders every screen."""

from __future__ import annotations

import statistics
import time

import pygame
import pytest

from chatpad import messages as m
from chatpad.app import App, AppConfig
from chatpad.demo import SCREENS, tour
from chatpad.items import ChatItem
from chatpad.scenes import ConversationScene

pytestmark = pytest.mark.gui

FRAME_BUDGET = 0.016  # seconds: 60 frames per second


def thousand_messages(now_ms: int) -> tuple[ChatItem, ...]:
    statuses = ("sent", "delivered", "read")
    items = []
    for n in range(1000):
        mine = n % 3 == 0
        body = (f"message {n}: " + "lorem ipsum dolor sit amet " * (1 + n % 7)
                + ("😀" if n % 10 == 0 else ""))
        items.append(ChatItem(peer="bob", sender="alice" if mine else "bob", id=f"m{n}",
                              seq=n + 1, body=body, ts=now_ms - (1000 - n) * 1000,
                              status=statuses[n % 3] if mine else "", mine=mine))
    return tuple(items)


def test_frame_time_with_1000_messages() -> None:
    app = App(AppConfig(offline=True))
    try:
        app.apply(m.SignedIn(server="http://127.0.0.1:8765", username="alice"))
        app.apply(m.Status(state="connected", retry_at=None, outbox=0))
        app.apply(m.Page(peer="bob", items=thousand_messages(int(time.time() * 1000)),
                         has_more=False, older=False))
        app.show(ConversationScene(app, "bob"))
        scene = app.scene
        assert isinstance(scene, ConversationScene)
        app.step(1 / 60)  # the first frame lays out all 1,000 bubbles once
        w, h = app.screen_size
        times = []
        for frame in range(180):
            if frame % 3 == 0:  # keep scrolling, so new bubbles keep coming into view
                pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(w // 2, h // 2),
                                                     rel=(0, 0), buttons=(0, 0, 0)))
                pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=3,
                                                     flipped=False, precise_x=0.0,
                                                     precise_y=3.0))
            start = time.perf_counter()
            app.step(1 / 60)
            times.append(time.perf_counter() - start)
        assert scene.view.top < scene.view._height - h  # it did scroll
        median = statistics.median(times)
        print(f"median frame {median * 1000:.2f} ms, max {max(times) * 1000:.2f} ms")
        assert median < FRAME_BUDGET
    finally:
        app.close()


def test_self_test_tour_renders_every_screen(tmp_path: object) -> None:
    assert tour() == list(SCREENS)


def test_theme_is_shipped_and_valid() -> None:
    import json
    from pathlib import Path

    from chatpad.app import theme_path

    theme = json.loads(Path(theme_path()).read_text("utf-8"))
    assert theme["button"]["colours"]["normal_bg"]


def test_screenshots_are_committed_for_every_screen() -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    for name in SCREENS:
        assert (folder / f"{name}.png").is_file(), f"run `make screenshots` ({name})"
