"""Error events: one JSON line each (exception type and message, the stack as a field,
the request context and the user), and ``--sentry-dsn`` sending them to an error
tracker, here a local HTTP endpoint that records what a Sentry server would receive.

The internal error is a real one, no test hook: the test renames a table of the
server's SQLite database under it, so the next history listing fails in the store.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import apsw
import orjson
import pytest

from chatd.cli import EXIT_MISSING_EXTRA
from chatd.config import load_config
from chatd.observe.context import CURRENT, RequestContext, truncate_address
from chatd.observe.errors import SentryMissing, scrub
from chatd.observe.logs import EventLogger, JsonFormatter
from tests.chatd.clients import PASSWORD, anew_user, http, login, unique_name, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.support.poll import apoll, poll


class EnvelopeSink:
    """A stand-in for the tracker: records the bodies POSTed to ``/api/<id>/envelope/``."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                sink.bodies.append(raw)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        """The ``event`` items of every envelope received so far."""
        found = []
        for body in list(self.bodies):
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if orjson.loads(header).get("type") == "event":
                    found.append(orjson.loads(payload))
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[EnvelopeSink]:
    recorder = EnvelopeSink()
    yield recorder
    recorder.close()


def _log_lines(log_dir: Path) -> list[dict[str, Any]]:
    text = (log_dir / "chatd.log").read_text()
    return [orjson.loads(line) for line in text.splitlines() if line]


def test_an_internal_error_is_one_json_line_and_one_tracker_event(
    tmp_path: Path, sink: EnvelopeSink
) -> None:
    server = ChatdProcess(tmp_path / "data", tmp_path / "logs", "--sentry-dsn", sink.dsn)
    with server:
        name = unique_name("err")
        registered = http(server, "POST", "/v1/register", {"username": name, "password": PASSWORD})
        user_id = registered.json["user_id"]
        token = login(server, name)
        assert http(server, "GET", "/v1/conversations", token=token).status == 200
        db = apsw.Connection(str(tmp_path / "data" / "chatd.db"))
        db.setbusytimeout(5000)
        db.execute("ALTER TABLE conversations RENAME TO conversations_gone")
        try:
            answer = http(server, "GET", "/v1/conversations", token=token)
            assert answer.status == 500 and answer.error_code == "internal_error"
            events = poll(sink.events, "an event at the tracker")
        finally:
            db.execute("ALTER TABLE conversations_gone RENAME TO conversations")
            db.close()
        lines = poll(lambda: [line for line in _log_lines(server.log_dir)
                              if line["event"] == "store.error"], "a store.error line")
    assert server.proc is not None and server.proc.returncode == 0

    # The line: one JSON object with the exception, the stack and the request.
    (line,) = lines
    assert line["level"] == "error"
    assert line["exc_type"] == "chatd.store.base.StoreError"
    assert "conversations" in line["exc_message"]
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert "StoreError" in line["traceback"].splitlines()[-1]
    assert line["route"] == "GET /v1/conversations"
    assert line["user_id"] == user_id
    assert line["peer"] == truncate_address("127.0.0.1") == "127.0.0.0/24"
    assert isinstance(line["conn_id"], int)

    # The event: the same, in the tracker's terms.
    (event,) = events
    *causes, exception = event["exception"]["values"]  # the cause first: apsw's error
    assert [cause["type"] for cause in causes] == ["SQLError"]
    assert exception["type"] == "StoreError"
    assert "conversations" in exception["value"]
    assert exception["stacktrace"]["frames"], "no stack trace"
    assert event["user"] == {"id": str(user_id)}
    assert event["tags"]["event"] == "store.error"
    assert event["tags"]["route"] == "GET /v1/conversations"
    assert event["contexts"]["request"]["peer"] == "127.0.0.0/24"
    assert event["release"].startswith("chatd@")
    assert event.get("breadcrumbs", {}).get("values", []) == []
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    raw = b"".join(sink.bodies)
    for secret in (PASSWORD, token, token.split(".")[2], "127.0.0.1"):
        assert secret.encode() not in raw, secret


def test_scrub_removes_secret_names_and_credential_text() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    event = {
        "extra": {"body": "hello", "refresh_token": "x", "user": "ann", "n": 3},
        "request": {"headers": {"Authorization": "Bearer abc", "Cookie": "s=1"}},
        "exception": {"values": [{"value": f"bad token {jwt} or Bearer abc.def"}]},
        "frames": [{"vars": {"password": "hunter2"}}],
    }
    assert scrub(event) == {
        "extra": {"body": "[redacted]", "refresh_token": "[redacted]", "user": "ann", "n": 3},
        "request": {"headers": {"Authorization": "[redacted]", "Cookie": "[redacted]"}},
        "exception": {"values": [{"value": "bad token [redacted] or [redacted]"}]},
        "frames": [{"vars": {"password": "[redacted]"}}],
    }


def test_sentry_dsn_without_sentry_sdk_is_one_line_and_status_3(tmp_path: Path) -> None:
    """sentry-sdk is optional: without it, --sentry-dsn stops chatd before it binds,
    with the status of a missing extra (systemd does not restart it)."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sentry_sdk.py").write_text("raise ImportError('No module named sentry_sdk')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hide), os.getcwd()]))
    done = subprocess.run(
        [sys.executable, "-m", "chatd", "serve", "--port", "0",
         "--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"),
         "--sentry-dsn", "https://key@sentry.example/1"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 3 == EXIT_MISSING_EXTRA == SentryMissing.status
    assert done.stdout == ""
    assert done.stderr == "chatd: --sentry-dsn needs its extra: pip install 'libchat[sentry]'\n"
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("dsn", ["sentry.example/1", "https://sentry.example/1",
                                 "https://key@sentry.example", "ftp://key@host/1"])
def test_a_malformed_dsn_is_a_usage_error(tmp_path: Path, dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chatd", "serve", "--port", "0",
         "--data-dir", str(tmp_path / "data"), "--sentry-dsn", dsn],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("chatd: --sentry-dsn is not a DSN")
    assert "key" not in done.stderr.split("like")[0]


# --- the error event's line, without a server ------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Iterator[_Lines]:
    logger = logging.getLogger("chatd.test_errors")
    handler = _Lines()
    logger.addHandler(handler)
    logger.propagate = False
    yield handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_an_error_event_names_the_exception_and_the_request(lines: _Lines) -> None:
    log = EventLogger(logging.getLogger("chatd.test_errors"))
    context = RequestContext(17, "2001:db8:1:2::9", "GET /v1/ws", 42)
    token = CURRENT.set(context)
    try:
        raise KeyError("the key")
    except KeyError:
        log.exception("hub.handler_failed", kind="send", user_id=7)  # a field wins
    finally:
        CURRENT.reset(token)
    log.exception("task.failed", exc_info=ValueError("given, not raised"))
    (line, outside) = [orjson.loads(text) for text in lines.lines]
    assert len(lines.lines[0].splitlines()) == 1  # the stack is a field of one line
    assert line["exc_type"] == "KeyError" and line["exc_message"] == "'the key'"
    assert line["traceback"].startswith("Traceback") and "raise KeyError" in line["traceback"]
    assert (line["route"], line["conn_id"], line["peer"], line["user_id"], line["kind"]) == (
        "GET /v1/ws", 17, "2001:db8:1::/48", 7, "send")
    assert outside["exc_type"] == "ValueError" and outside["exc_message"] == "given, not raised"
    assert "route" not in outside and "conn_id" not in outside


@pytest.mark.parametrize(("ip", "network"), [
    ("203.0.113.7", "203.0.113.0/24"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"),
    ("2001:db8:1:2::9", "2001:db8:1::/48"),
    ("", ""),
    ("not an address", ""),
])
def test_the_peer_is_cut_to_its_network(ip: str, network: str) -> None:
    assert truncate_address(ip) == network


def test_the_dsn_can_live_in_the_config_file(tmp_path: Path) -> None:
    """Out of the process list: ``sentry_dsn`` in the TOML file, a flag still wins."""
    path = tmp_path / "chatd.toml"
    path.write_text('sentry_dsn = "https://key@sentry.example/7"\n')
    assert load_config(argparse.Namespace(config=path)).sentry_dsn == (
        "https://key@sentry.example/7")
    flag = argparse.Namespace(config=path, sentry_dsn="http://other@127.0.0.1:9/1")
    assert load_config(flag).sentry_dsn == "http://other@127.0.0.1:9/1"
    path.write_text('sentry_dsn = "sentry.example"\n')
    with pytest.raises(ValueError, match=r"^--sentry-dsn \(sentry_dsn in .*\) is not a DSN"):
        load_config(argparse.Namespace(config=path))


@run_async
async def test_an_error_on_a_websocket_names_its_user_and_route(tmp_path: Path) -> None:
    """A hub job started by a WebSocket frame fails in the store: its error line names
    the connection's user (known since its hello) and the WebSocket's route."""
    server = ChatdProcess(tmp_path / "data", tmp_path / "logs")
    with server:
        name, token = await anew_user(server, "wserr")
        db = apsw.Connection(str(tmp_path / "data" / "chatd.db"))
        db.setbusytimeout(5000)
        db.execute("ALTER TABLE conversations RENAME TO conversations_gone")
        peer = None
        try:
            # after the hello, the hub loads the user's conversation peers: that fails
            peer = await ws_connect(server, token)
            await peer.send({"type": "typing", "to": "nobody"})
            lines = await apoll(lambda: [line for line in _log_lines(server.log_dir)
                                         if line["event"] == "store.error"],
                                "a store.error line")
        finally:
            db.execute("ALTER TABLE conversations_gone RENAME TO conversations")
            db.close()
            if peer is not None:
                await peer.close()
    for line in lines:  # the hello's load of the peers, and perhaps the typing's
        assert line["op"] == "peers" and line["user"] == name
        assert line["route"] == "GET /v1/ws" and isinstance(line["user_id"], int)
        assert line["exc_type"] == "chatd.store.base.StoreError"
        assert line["peer"] == "127.0.0.0/24"
