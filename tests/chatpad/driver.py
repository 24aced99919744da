"""Drive a real chatpad App from a test: post pygame events, step frames until a condition
holds (with a deadline), and a plain peer client (urllib + websockets) on the other side."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygame
from websockets.sync.client import ClientConnection, connect

from chatpad.app import App, AppConfig
from chatpad.net import NetConfig

DEADLINE = 15.0  # seconds: generous, the machine is shared and busy

FAST_NET = NetConfig(backoff_base=0.2, backoff_cap=0.5)


class Driver:
    def __init__(self, server: str, profile_root: Path | None = None,
                 profile: str = "default", size: tuple[int, int] = (960, 680)) -> None:
        self.app = App(AppConfig(server=server, profile=profile, profile_root=profile_root,
                                 size=size, net=FAST_NET))

    def step(self, frames: int = 1) -> None:
        for _ in range(frames):
            self.app.step(1 / 60)

    def until(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.app.step(1 / 60)
            value = condition()
            if value:
                return value
            time.sleep(0.005)  # yield the core to the network thread and chatd
        raise AssertionError(f"timed out waiting for {what}")

    def until_connected(self, what: str = "connected") -> None:
        """Step frames until chatpad's WebSocket is up (signed in and welcomed)."""
        self.until(lambda: self.app.model.status.state == "connected", what)

    # --- input ------------------------------------------------------------------------------

    def click(self, target: Any) -> None:
        rect = target if isinstance(target, pygame.Rect) else target.rect
        pos = rect.center
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=pos, rel=(0, 0),
                                             buttons=(0, 0, 0)))
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=1))
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=pos, button=1))
        self.step(2)

    def type(self, text: str) -> None:
        pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=text))
        self.step()

    def key(self, key: int, mod: int = 0) -> None:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=mod, unicode="",
                                             scancode=0))
        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=mod, unicode="",
                                             scancode=0))
        self.step()

    def wheel(self, dy: int) -> None:
        """Turn the wheel with the pointer in the middle of the window."""
        w, h = self.app.screen_size
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(w // 2, h // 2),
                                             rel=(0, 0), buttons=(0, 0, 0)))
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=dy, flipped=False,
                                             precise_x=0.0, precise_y=float(dy)))
        self.step()

    def close(self) -> None:
        self.app.close()


class Peer:
    """The other side of a conversation, without chatpad: HTTP via urllib, the WebSocket via
    the independent ``websockets`` library."""

    def __init__(self, base_url: str, username: str, password: str = "secret-pass-1") -> None:
        self.base = base_url
        self.username = username
        self.password = password
        self.token = ""
        self.ws: ClientConnection | None = None

    def http(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def register(self) -> Peer:
        status, _ = self.http("POST", "/v1/register",
                              {"username": self.username, "password": self.password})
        assert status in (201, 409), status
        return self.login()

    def login(self) -> Peer:
        status, body = self.http("POST", "/v1/login",
                                 {"username": self.username, "password": self.password})
        assert status == 200, (status, body)
        self.token = body["token"]
        return self

    def connect(self) -> Peer:
        ws_url = self.base.replace("http://", "ws://") + "/v1/ws"
        self.ws = connect(ws_url, open_timeout=10)
        self.ws.send(json.dumps({"type": "hello", "protocol": "1.0", "token": self.token}))
        welcome = self.recv()
        assert welcome["type"] == "welcome", welcome
        return self

    def send_frame(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send(json.dumps(frame))

    def recv(self, timeout: float = DEADLINE) -> dict[str, Any]:
        assert self.ws is not None
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        return frame

    def recv_until(self, match: Callable[[dict[str, Any]], bool],
                   timeout: float = DEADLINE) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if match(frame):
                return frame

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
