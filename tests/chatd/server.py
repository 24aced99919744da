"""Start and stop real chatd processes for tests.

``ChatdProcess`` runs ``python -m chatd serve --port 0`` on loopback with its own data and
log directories, waits for its "listening on" line, and knows its URL. Nothing here
sleeps to wait: it reads the process's output with a deadline.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

_LISTENING = re.compile(r"listening on (https?)://([\d.]+):(\d+)")
START_TIMEOUT = 20.0  # seconds: a busy 2-core machine can be slow to import everything


class ChatdProcess:
    def __init__(self, data_dir: Path, log_dir: Path | None = None, *args: str,
                 db: str | None = None) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir or data_dir.parent / (data_dir.name + "-logs")
        self.args = list(args)
        self.db = db
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.scheme = "http"
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/v1/ws"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> ChatdProcess:
        command = [
            sys.executable, "-m", "chatd", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--data-dir", str(self.data_dir),
            "--log-dir", str(self.log_dir), *self.args,
        ]
        if self.db is not None:
            command += ["--db", self.db]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.scheme, self.port = match.group(1), int(match.group(3))
                return self
        self.kill()
        raise RuntimeError("chatd did not start:\n" + "".join(self.output))

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._drain()
        return code

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._drain()

    def _drain(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            rest = self.proc.stdout.read()
            if rest:
                self.output.append(rest)
            self.proc.stdout.close()

    def __enter__(self) -> ChatdProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
