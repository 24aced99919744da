"""The examples in examples/ run against a real chatd: each echo bot answers a user's
message, over TLS too, and comes back by itself after the server restarts."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chatd.clients import PASSWORD, login, register, unique_name, ws_connect
from tests.chatd.server import ChatdProcess
from tests.support.tls import make_certificate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 15.0  # seconds for a line of output: generous on a busy 2-core machine


class Example:
    """One example bot running as a child process."""

    def __init__(self, script: str, *args: str) -> None:
        env = dict(os.environ, CHAT_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.output: list[str] = []

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        """The next line of output containing ``text``; fails after ``timeout``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} from the example; it said: {''.join(self.output)}")

    def finish(self, timeout: float = TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        assert self.proc.stdout is not None
        self.output.append(self.proc.stdout.read())
        return code

    def __enter__(self) -> Example:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def echoed(server: ChatdProcess, user: str, bot: str, text: str,
                 context: ssl.SSLContext | None = None) -> None:
    """``user`` sends ``text`` to the bot and gets it back (checked with the
    independent ``websockets`` client)."""
    token = await asyncio.to_thread(login, server, user, ssl_context=context)
    peer = await ws_connect(server, token, ssl_context=context)
    try:
        client_id = unique_name("m")
        await peer.send({"type": "send", "id": client_id, "to": bot, "body": text})
        await peer.recv("ack", where=lambda f: f["id"] == client_id)
        answer = await peer.recv(
            "message", where=lambda f: f["from"] == bot and f["body"] == text
        )
        assert (answer["to"], answer["body"]) == (user, text)
        await peer.send({"type": "delivered", "seqs": [answer["seq"]]})
    finally:
        await peer.close()


@pytest.fixture
def chatd(tmp_path: Path) -> Iterator[ChatdProcess]:
    server = ChatdProcess(tmp_path / "data", tmp_path / "logs").start()
    yield server
    if server.proc is not None and server.proc.poll() is None:  # the test may stop it
        server.kill()


@pytest.mark.parametrize("script", ["echo_asyncio.py", "echo_selectors.py"])
def test_the_bot_echoes_and_comes_back_after_a_restart(
    script: str, chatd: ChatdProcess, tmp_path: Path
) -> None:
    bot, user = unique_name("echo"), register(chatd, unique_name("u"))
    with Example(script, "--url", chatd.url, "--username", bot, "--register",
                 "--count", "2") as example:  # fmt: skip
        example.wait_for(f"connected as {bot}")
        asyncio.run(echoed(chatd, user, bot, "hello, echo"))
        chatd.stop()
        example.wait_for("disconnected")
        restarted = ChatdProcess(chatd.data_dir, chatd.log_dir).start(chatd.port)
        try:
            example.wait_for(f"connected as {bot}")
            asyncio.run(echoed(restarted, user, bot, "still there? 🦜"))
            assert example.finish() == 0
        finally:
            restarted.kill()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_asyncio_bot_speaks_tls(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server = ChatdProcess(tmp_path / "data", tmp_path / "logs", "--tls-cert", str(cert),
                          "--tls-key", str(key)).start()  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(cert))
        bot, user = unique_name("echo"), register(server, unique_name("u"), ssl_context=context)
        assert server.url.startswith("https://")
        with Example("echo_asyncio.py", "--url", server.url, "--username", bot, "--register",
                     "--cafile", str(cert), "--count", "1") as example:  # fmt: skip
            example.wait_for(f"connected as {bot}")
            asyncio.run(echoed(server, user, bot, "over TLS", context))
            assert example.finish() == 0
    finally:
        server.kill()
