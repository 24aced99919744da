"""The operators' subcommands, run as the real ``chatd`` executable against real SQLite
databases, on their own and beside a running ``chatd serve``."""

from __future__ import annotations

import asyncio
import getpass
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chatd.admin import AdminError, read_password
from chatd.auth import Tokens, load_or_create_key
from chatd.cli import build_parser, main
from chatd.store.base import NewMessage
from chatd.store.sqlite import SCHEMA_VERSION, SqliteStore
from libchat import __version__
from tests.chatd.server import ChatdProcess

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("chatd")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "chatd"]
CLOSE_DEADLINE = 5.0  # the issue: a running server closes a disabled user's sockets in 5 s
RUN_TIMEOUT = 60.0  # seconds one chatd command may take on a very busy machine


def chatd(*args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``chatd ARGS`` in a new process (never raises on a non-zero exit)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [*COMMAND, *map(str, args)], input=stdin if stdin is not None else "",
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env, cwd=REPO,
    )


def ok(*args: object, stdin: str | None = None) -> str:
    """Run a chatd process that must succeed; returns its stdout."""
    done = chatd(*args, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


class InProcess:
    """``chatd.cli.main`` in this process: the same code without a process start (each
    costs ~0.3 s, much more on a loaded machine), for the many refusal paths."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                 ) -> None:
        self._capsys = capsys
        self._monkeypatch = monkeypatch

    def __call__(self, *args: object, stdin: str = "") -> tuple[int, str, str]:
        self._monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit_:  # argparse
            status = int(exit_.code or 0)
        out, err = self._capsys.readouterr()
        return status, out, err

    def ok(self, *args: object, stdin: str = "") -> str:
        status, out, err = self(*args, stdin=stdin)
        assert status == 0, (args, out, err)
        return out

    def fails(self, status: int, *args: object, stdin: str = "") -> str:
        """Must exit with ``status``; returns stderr (one line, or argparse's usage)."""
        got, out, err = self(*args, stdin=stdin)
        assert got == status, (args, got, out, err)
        one_line = err.startswith("chatd: ") and err.count("\n") == 1
        assert one_line or err.startswith("usage: "), err  # ours, or argparse's usage error
        return err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcess:
    return InProcess(capsys, monkeypatch)


def log_lines(log_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (log_dir / "chatd.log").read_text().splitlines()]


class Dirs:
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.logs = root / "logs"

    @property
    def logged(self) -> list[object]:
        return ["--data-dir", self.data, "--log-dir", self.logs]


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return Dirs(tmp_path)


def seed(data_dir: Path, users: list[str], messages: list[tuple[str, str, str]]) -> None:
    """Create users (unusable password hashes) and messages ``(sender, to, body)``
    straight through the store, as the server would."""

    async def main() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(data_dir / "chatd.db")
        await store.open()
        try:
            ids = {}
            for name in users:
                user = await store.create_user(name, "not-a-hash", 1_700_000_000_000)
                assert user is not None
                ids[name] = user.id
            batch = [
                NewMessage(sender_id=ids[s], sender=s, recipient_id=ids[r], recipient=r,
                           client_id=f"c{i}", body=body, ts=1_700_000_000_000 + i)
                for i, (s, r, body) in enumerate(messages)
            ]
            if batch:
                await store.submit(batch)
        finally:
            await store.close()

    asyncio.run(main())


# --- parser-level --------------------------------------------------------------------------


def _parsers(parser: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for action in getattr(parser, "_actions", []):
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for name, sub in choices.items():
                yield from _parsers(sub, (*path, name))


def test_version_on_every_command(cli: InProcess) -> None:
    paths = list(_parsers(build_parser()))
    assert ("user", "add") in paths and ("health",) in paths and ("serve",) in paths
    for path in paths:
        assert cli.ok(*path, "--version").strip() == f"chatd {__version__}", path
    assert ok("user", "passwd", "--version").strip() == f"chatd {__version__}"


# --- users -----------------------------------------------------------------------------------


def test_user_lifecycle(dirs: Dirs, cli: InProcess) -> None:
    assert "created user alice" in ok("user", "add", "Alice", *dirs.logged, stdin="s3cret-alice\n")
    cli.ok("user", "add", "bob", *dirs.logged, stdin="s3cret-bob-pass")  # no newline: fine
    assert "already exists" in cli.fails(1, "user", "add", "alice", *dirs.logged,
                                         stdin="whatever-1\n")
    assert "invalid username" in cli.fails(2, "user", "add", "B@d", *dirs.logged,
                                           stdin="long-enough\n")
    assert "8 to 1024" in cli.fails(2, "user", "add", "carol", *dirs.logged, stdin="short\n")
    assert "no password" in cli.fails(2, "user", "add", "carol", *dirs.logged, stdin="")
    cli.fails(2, "user", "add", *dirs.logged)  # no NAME: usage

    table = ok("user", "list", *dirs.logged).splitlines()
    assert table[0].split() == ["ID", "USERNAME", "STATUS", "CREATED"]
    assert [row.split()[1:3] for row in table[1:]] == [["alice", "enabled"], ["bob", "enabled"]]
    listed = json.loads(cli.ok("user", "list", "--json", *dirs.logged))["users"]
    assert [(u["username"], u["disabled"]) for u in listed] == [("alice", False), ("bob", False)]

    def show(name: str) -> dict[str, object]:
        shown: dict[str, object] = json.loads(cli.ok("user", "show", name, "--json",
                                                     *dirs.logged))
        return shown

    assert json.loads(ok("user", "show", "ALICE", "--json", *dirs.logged)) | {
        "created_at": 0, "id": 0} == {
        "id": 0, "username": "alice", "disabled": False, "created_at": 0,
        "token_generation": 0, "undelivered": 0,
    }
    assert "token generation  0" in cli.ok("user", "show", "alice", *dirs.logged)

    assert "disabled alice" in ok("user", "disable", "alice", *dirs.logged)
    assert show("alice")["disabled"] is True
    assert show("alice")["token_generation"] == 1
    assert "disabled" in cli.ok("user", "list", *dirs.logged).splitlines()[1]
    ok("user", "enable", "alice", *dirs.logged)
    assert show("alice")["disabled"] is False
    ok("user", "passwd", "alice", *dirs.logged, stdin="n3w-password\n")
    assert show("alice")["token_generation"] == 2
    assert "8 to 1024" in cli.fails(2, "user", "passwd", "alice", *dirs.logged, stdin="short\n")

    for action in ("show", "disable", "enable", "passwd"):
        assert "no such user 'nobody'" in cli.fails(1, "user", action, "nobody", *dirs.logged,
                                                     stdin="long-enough\n")

    changes = ("admin.user_add", "admin.user_disable", "admin.user_enable", "admin.user_passwd")
    events = [(line["event"], line.get("user")) for line in log_lines(dirs.logs)
              if line["event"] in changes]
    assert events == [
        ("admin.user_add", "alice"), ("admin.user_add", "bob"), ("admin.user_disable", "alice"),
        ("admin.user_enable", "alice"), ("admin.user_passwd", "alice"),
    ]
    assert all(line["os_user"] == getpass.getuser() for line in log_lines(dirs.logs)
               if str(line["event"]).startswith("admin."))
    # refused runs are audited too (issue 12: the man page said every run was; they were not)
    failed = [(line["action"], line["status"]) for line in log_lines(dirs.logs)
              if line["event"] == "admin.failed"]
    assert failed == [
        ("user.add", 1), ("user.add", 2), ("user.add", 2), ("user.add", 2), ("user.passwd", 2),
        ("user.show", 1), ("user.disable", 1), ("user.enable", 1), ("user.passwd", 1),
    ]
    text = (dirs.logs / "chatd.log").read_text()
    for password in ("s3cret-alice", "s3cret-bob-pass", "n3w-password"):
        assert password not in text


def test_commands_need_an_existing_database(dirs: Dirs, cli: InProcess, tmp_path: Path) -> None:
    for args in (("user", "list"), ("user", "show", "x"), ("stats",), ("messages", "a", "b"),
                 ("token", "issue", "x"), ("user", "disable", "x"), ("backup", tmp_path / "b.db")):
        assert "no database at" in cli.fails(2, *args, *dirs.logged)
    assert "no database at" in chatd("stats", *dirs.logged).stderr
    assert not dirs.data.exists()
    assert "is not a database URL" in cli.fails(2, "stats", "--db", "mysql://x/y",
                                                   "--log-dir", dirs.logs)
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot write the audit log" in cli.fails(2, "stats", "--log-dir", blocked / "x")


def test_audit_lines_never_rotate_the_servers_log(dirs: Dirs, cli: InProcess) -> None:
    """Only the server rotates chatd.log; an admin command run after midnight appends."""
    dirs.logs.mkdir()
    log_file = dirs.logs / "chatd.log"
    log_file.write_text('{"event": "server.start"}\n')
    two_days_ago = time.time() - 2 * 86400
    os.utime(log_file, (two_days_ago, two_days_ago))
    cli.ok("migrate", *dirs.logged)
    assert [path.name for path in dirs.logs.iterdir()] == ["chatd.log"]
    assert [line["event"] for line in log_lines(dirs.logs)] == ["server.start", "admin.migrate"]


# --- tokens --------------------------------------------------------------------------------


def test_token_issue(dirs: Dirs, cli: InProcess) -> None:
    seed(dirs.data, ["alice", "bob"], [])
    before = time.time()
    out = ok("token", "issue", "alice", "--ttl", "600", *dirs.logged)
    token = out.strip()
    assert out == token + "\n"  # only the token: scripts capture it
    claims = Tokens(load_or_create_key(dirs.data), 600).decode(token, time.time())
    assert claims.generation == 0
    assert before - 1 <= claims.issued_at <= time.time()
    assert claims.expires_at - claims.issued_at == 600
    default = cli.ok("token", "issue", "bob", *dirs.logged).strip()
    bob = Tokens(load_or_create_key(dirs.data), 1).decode(default, time.time())
    assert bob.user_id != claims.user_id
    assert bob.expires_at - bob.issued_at == 86400

    assert "no such user" in cli.fails(1, "token", "issue", "nobody", *dirs.logged)
    cli.fails(2, "token", "issue", "alice", "--ttl", "0", *dirs.logged)
    cli.ok("user", "disable", "bob", *dirs.logged)
    assert "disabled" in cli.fails(1, "token", "issue", "bob", *dirs.logged)

    issued = [line for line in log_lines(dirs.logs) if line["event"] == "admin.token_issue"]
    assert [line["user"] for line in issued] == ["alice", "bob"]
    assert token not in (dirs.logs / "chatd.log").read_text()


# --- messages and stats ---------------------------------------------------------------------


def test_messages_and_stats(dirs: Dirs, cli: InProcess) -> None:
    bodies = [f"private body number {i}" for i in range(5)]
    seed(dirs.data, ["alice", "bob", "carol"],
         [("alice", "bob", bodies[0]), ("bob", "alice", bodies[1]), ("alice", "carol", "other"),
          ("alice", "bob", bodies[2] + "\nsecond line"), ("bob", "alice", bodies[3])])

    page = json.loads(ok("messages", "alice", "bob", "--json", *dirs.logged))
    assert [m["body"].split("\n")[0] for m in page["messages"]] == bodies[:4]
    assert page["has_more"] is False
    assert set(page["messages"][0]) == {"id", "seq", "from", "to", "body", "ts",
                                       "delivered_at", "read_at"}
    seqs = [m["seq"] for m in page["messages"]]

    last_two = json.loads(cli.ok("messages", "bob", "alice", "--limit", "2", "--json",
                                 *dirs.logged))
    assert [m["seq"] for m in last_two["messages"]] == seqs[2:]
    assert last_two["has_more"] is True
    older = json.loads(cli.ok("messages", "alice", "bob", "--before", seqs[2], "--json",
                              *dirs.logged))
    assert [m["seq"] for m in older["messages"]] == seqs[:2]

    text = cli.ok("messages", "alice", "bob", "--limit", "3", *dirs.logged)
    assert f"alice -> bob [queued] {bodies[2]}\n    second line" in text
    assert f"(older messages exist: --before {seqs[1]})" in text
    assert "no such user 'zed'" in cli.fails(1, "messages", "alice", "zed", *dirs.logged)
    cli.fails(2, "messages", "alice", "bob", "--limit", "0", *dirs.logged)

    audits = [line for line in log_lines(dirs.logs) if line["event"] == "admin.inspect"]
    assert [(a["a"], a["b"], a["messages"]) for a in audits] == [
        ("alice", "bob", 4), ("bob", "alice", 2), ("alice", "bob", 2), ("alice", "bob", 3),
    ]
    assert all(a["os_user"] == getpass.getuser() for a in audits)
    assert audits[2]["before"] == seqs[2] and audits[1]["limit"] == 2
    log_text = (dirs.logs / "chatd.log").read_text()
    assert not any(body in log_text for body in bodies)

    stats = json.loads(ok("stats", "--json", *dirs.logged))
    assert stats["users"] == 3 and stats["messages"] == 5 and stats["undelivered"] == 5
    assert stats["db_bytes"] > 0
    text = cli.ok("stats", *dirs.logged)
    assert re.search(r"^users +3$", text, re.M) and re.search(r"^undelivered +5$", text, re.M)
    assert re.search(r"^database +[\d.]+ [KM]?i?B \(\d+ bytes\)$", text, re.M)


@pytest.mark.pg
def test_commands_on_postgresql(tmp_path: Path, cli: InProcess) -> None:
    """The same commands on PostgreSQL; tokens are signed with the key the nodes share
    through the database, whatever the local data dir holds."""
    from tests.chatd.pg import pg_schema

    logs = ["--log-dir", tmp_path / "logs"]
    node_a, node_b = ["--data-dir", tmp_path / "a"], ["--data-dir", tmp_path / "b"]
    with pg_schema() as url:
        db = ["--db", url, *logs]
        assert f"version {SCHEMA_VERSION}" in ok("migrate", *node_a, *db)
        ok("user", "add", "alice", *node_a, *db, stdin="long-enough\n")
        cli.ok("user", "add", "bob", *node_a, *db, stdin="long-enough\n")
        from_a = ok("token", "issue", "alice", *node_a, *db).strip()  # fixes the shared key
        from_b = cli.ok("token", "issue", "bob", *node_b, *db).strip()
        shared = load_or_create_key(tmp_path / "a")
        assert load_or_create_key(tmp_path / "b") != shared
        for token in (from_a, from_b):
            Tokens(shared, 1).decode(token, time.time())  # raises unless signed with it
        assert [u["username"] for u in json.loads(
            cli.ok("user", "list", "--json", *node_b, *db))["users"]] == ["alice", "bob"]
        cli.ok("user", "disable", "bob", *node_b, *db)
        assert json.loads(cli.ok("user", "show", "bob", "--json", *node_b, *db))["disabled"]
        assert json.loads(cli.ok("messages", "alice", "bob", "--json", *node_b, *db)) == {
            "messages": [], "has_more": False}
        assert json.loads(cli.ok("stats", "--json", *node_b, *db))["users"] == 2
        assert "pg_dump" in cli.fails(2, "backup", tmp_path / "x.db", *node_b, *db)


# --- schema ---------------------------------------------------------------------------------


def _db_with(path: Path, sql: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = apsw.Connection(str(path))
    conn.execute(sql)
    conn.close()


def test_migrate_creates_and_upgrades(dirs: Dirs, cli: InProcess) -> None:
    done = ok("migrate", *dirs.logged)
    assert done.strip() == f"database schema is at version {SCHEMA_VERSION}"
    assert json.loads(cli.ok("stats", "--json", *dirs.logged))["users"] == 0
    assert f"version {SCHEMA_VERSION}" in cli.ok("migrate", *dirs.logged)  # idempotent

    older = dirs.data.parent / "older"
    _db_with(older / "chatd.db", "CREATE TABLE leftover (x); PRAGMA user_version = 0")
    refused = chatd("serve", "--port", "0", "--data-dir", older, "--log-dir", dirs.logs)
    assert refused.returncode == 2
    assert "run `chatd migrate`" in refused.stderr
    assert "run `chatd migrate`" in cli.fails(2, "stats", "--data-dir", older,
                                              "--log-dir", dirs.logs)
    cli.ok("migrate", "--data-dir", older, "--log-dir", dirs.logs)
    cli.ok("user", "add", "alice", "--data-dir", older, "--log-dir", dirs.logs,
           stdin="long-enough\n")
    migrations = [line for line in log_lines(dirs.logs) if line["event"] == "admin.migrate"]
    assert [line["schema_version"] for line in migrations] == [SCHEMA_VERSION] * 3


def test_newer_schema_is_refused(dirs: Dirs, cli: InProcess) -> None:
    _db_with(dirs.data / "chatd.db", f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert "upgrade chatd" in cli.fails(2, "migrate", *dirs.logged)
    assert "upgrade chatd" in cli.fails(2, "stats", *dirs.logged)
    refused = chatd("serve", "--port", "0", *dirs.logged)
    assert refused.returncode == 2 and "upgrade chatd" in refused.stderr


# --- backup ---------------------------------------------------------------------------------


def test_backup_offline_and_refusals(dirs: Dirs, cli: InProcess, tmp_path: Path) -> None:
    seed(dirs.data, ["alice", "bob"], [("alice", "bob", "hello")])
    copy = tmp_path / "copy.db"
    assert "backed up" in ok("backup", copy, *dirs.logged)
    conn = apsw.Connection(str(copy), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM messages").fetchall() == [(1,)]
    assert conn.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()
    cli.ok("backup", copy, *dirs.logged)  # replaces an older copy
    assert "pg_dump" in cli.fails(2, "backup", copy, "--db", "postgresql://chatd@db.invalid/c",
                                  "--log-dir", dirs.logs)
    assert "no directory" in cli.fails(2, "backup", tmp_path / "nope" / "c.db", *dirs.logged)
    assert "database itself" in cli.fails(2, "backup", dirs.data / "chatd.db", *dirs.logged)
    backups = [line for line in log_lines(dirs.logs) if line["event"] == "admin.backup"]
    assert [line["dest"] for line in backups] == [str(copy)] * 2


# --- beside a running server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatdProcess]:
    root = tmp_path_factory.mktemp("live")
    flags = ("--send-rate", "100000", "--send-burst", "100000")  # the backup test streams
    with ChatdProcess(root / "data", root / "logs", *flags) as server:
        yield server


def live_args(server: ChatdProcess) -> list[object]:
    return ["--data-dir", server.data_dir, "--log-dir", server.log_dir]


def hello(server: ChatdProcess, token: str) -> ClientConnection:
    ws = connect(server.ws_url, open_timeout=10)
    ws.send(json.dumps({"type": "hello", "protocol": "1.0", "token": token}))
    welcome = json.loads(ws.recv(timeout=10))
    assert welcome["type"] == "welcome", welcome
    return ws


def hello_eventually(server: ChatdProcess, token: str, deadline: float) -> ClientConnection:
    """hello until welcomed: a running server learns of ``user enable`` at its next poll
    of the store (every 2 s)."""
    while True:
        ws = connect(server.ws_url, open_timeout=10)
        ws.send(json.dumps({"type": "hello", "protocol": "1.0", "token": token}))
        frame = json.loads(ws.recv(timeout=10))
        if frame["type"] == "welcome":
            return ws
        ws.close()
        assert frame["code"] == "unauthorized", frame
        assert time.monotonic() < deadline, "the server did not see the user enabled again"
        time.sleep(0.1)  # the poll interval of this deadline loop


def wait_closed(ws: ClientConnection, deadline: float) -> int | None:
    """Read until the server closes; the close code (None if the deadline passed)."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            ws.recv(timeout=left)
        except TimeoutError:
            return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else -1
    return None


def http_login(server: ChatdProcess, name: str, password: str) -> int:
    request = urllib.request.Request(
        server.url + "/v1/login", method="POST",
        data=json.dumps({"username": name, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_user_changes_reach_a_running_server(live: ChatdProcess, cli: InProcess) -> None:
    args = live_args(live)
    ok("user", "add", "dora", *args, stdin="dora-password\n")
    cli.ok("user", "add", "eric", *args, stdin="eric-password\n")
    assert http_login(live, "dora", "dora-password") == 200  # the server sees the new user
    dora = hello(live, ok("token", "issue", "dora", *args).strip())
    eric = hello(live, cli.ok("token", "issue", "eric", *args).strip())

    ok("user", "disable", "dora", *args)
    ok("user", "passwd", "eric", *args, stdin="eric-new-password\n")
    deadline = time.monotonic() + CLOSE_DEADLINE
    assert wait_closed(dora, deadline) == 4001
    assert wait_closed(eric, deadline) == 4001

    assert http_login(live, "dora", "dora-password") == 401
    assert http_login(live, "eric", "eric-password") == 401
    assert http_login(live, "eric", "eric-new-password") == 200
    cli.ok("user", "enable", "dora", *args)
    token = cli.ok("token", "issue", "dora", *args).strip()
    hello_eventually(live, token, time.monotonic() + CLOSE_DEADLINE).close()


def test_a_login_right_after_a_password_change_sees_it(live: ChatdProcess) -> None:
    """Issue 12: the server's user cache is refreshed by a poll every couple of seconds,
    so right after `chatd user passwd` the old password still logged in and the new one
    failed (and counted toward the address's limit). A login reads the user afresh."""
    args = live_args(live)
    ok("user", "add", "hal", *args, stdin="hal-password\n")
    assert http_login(live, "hal", "hal-password") == 200  # cached now
    ok("user", "passwd", "hal", *args, stdin="hal-new-password\n")
    assert http_login(live, "hal", "hal-new-password") == 200
    assert http_login(live, "hal", "hal-password") == 401
    ok("user", "disable", "hal", *args)
    assert http_login(live, "hal", "hal-new-password") == 401


def test_backup_while_messages_stream(live: ChatdProcess, cli: InProcess, tmp_path: Path
                                      ) -> None:
    args = live_args(live)
    for name in ("fay", "gus"):
        cli.ok("user", "add", name, *args, stdin=f"{name}-password\n")
    fay = hello(live, cli.ok("token", "issue", "fay", *args).strip())
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    enough = threading.Event()  # 20 messages acked: time for the backup
    failure: list[BaseException] = []

    def stream() -> None:
        try:
            for i in range(100_000):
                if stop.is_set():
                    return
                fay.send(json.dumps({"type": "send", "id": f"m{i}", "to": "gus",
                                     "body": f"streamed {i}"}))
                while True:
                    frame = json.loads(fay.recv(timeout=10))
                    if frame["type"] == "ack":
                        break
                    assert frame["type"] != "error", frame
                with lock:
                    acked.append(frame["seq"])
                if len(acked) >= 20:
                    enough.set()
        except BaseException as exc:
            failure.append(exc)
            enough.set()

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    try:
        assert enough.wait(30)
        with lock:
            before = list(acked)
        assert len(before) >= 20, failure
        copy = tmp_path / "live.db"
        ok("backup", copy, *args)
    finally:
        stop.set()
        sender.join(15)
        fay.close()
    assert not failure, failure

    conn = apsw.Connection(str(copy), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {seq for (seq,) in conn.execute(
            "SELECT seq FROM messages m JOIN users u ON u.id = m.sender_id"
            " WHERE u.username = 'fay'")}
    finally:
        conn.close()
    assert set(before) <= stored

    page = json.loads(ok("messages", "fay", "gus", "--limit", "5", "--json", *args))
    assert len(page["messages"]) == 5 and page["has_more"] is True
    stats = json.loads(ok("stats", "--json", *args))
    assert stats["messages"] >= len(before)


def test_health_of_a_running_server(live: ChatdProcess, tmp_path: Path) -> None:
    done = chatd("health", "--url", live.url)
    assert done.returncode == 0, done
    assert re.fullmatch(
        r"CHATD OK - status=ok connections=\d+ uptime=\d+s db=ok disk=\d+%\n", done.stdout
    )
    canary_file = tmp_path / "canary.json"
    for _ in range(2):  # the first run registers the canaries, the second logs in
        done = chatd("health", "--url", live.url, "--canary", "--canary-file", canary_file)
        assert done.returncode == 0, done
        assert re.fullmatch(r"CHATD OK - status=ok .* canary_rtt=\d+\.\dms\n", done.stdout)
    assert canary_file.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(canary_file.read_text())) == {"canary-a", "canary-b"}

    stale = tmp_path / "stale.json"  # e.g. a lost file replaced by a fresh one
    stale.write_text(json.dumps({"canary-a": "not-the-password", "canary-b": "nor-this-one"}))
    done = chatd("health", "--url", live.url, "--canary", "--canary-file", stale)
    assert done.returncode == 2, done
    assert done.stdout.startswith(
        "CHATD DOWN - canary failed: canary-a's login was refused: the account is disabled"
        f" or its password is not the one in {stale} (`chatd user show canary-a` tells which)")


def _canary_failures(server: ChatdProcess) -> int:
    shown = json.loads(ok("limits", "show", "--json", *live_args(server)))
    return sum(entry["failures"] for entry in shown["accounts"] if entry["user"] == "canary-a")


def test_a_refused_canary_says_why_and_never_trips_the_login_limit(tmp_path: Path) -> None:
    canary_file = tmp_path / "canary.json"
    with ChatdProcess(tmp_path / "data", tmp_path / "logs") as server:
        def canary(*flags: object) -> subprocess.CompletedProcess[str]:
            return chatd("health", "--url", server.url, "--canary", "--canary-file",
                         canary_file, *flags)

        assert canary().returncode == 0
        ok("user", "disable", "canary-a", *live_args(server))

        # Where it can read the database, the canary knows and does not even try.
        done = canary("--data-dir", server.data_dir)
        assert done.returncode == 2, done
        assert done.stdout.startswith(
            "CHATD DOWN - canary failed: canary-a is disabled: `chatd user enable canary-a`")
        assert _canary_failures(server) == 0

        # From elsewhere, one refused login, then a pause instead of more of them.
        done = canary()
        assert done.returncode == 2, done
        assert "canary-a's login was refused: the account is disabled or its password" in (
            done.stdout)
        for _ in range(6):  # a monitor's every-minute runs
            done = canary()
            assert done.returncode == 2, done
            assert done.stdout.startswith("CHATD DOWN - canary failed: paused: canary-a's"
                                          " login was refused at ")
        assert _canary_failures(server) == 1

        # Fixed, and the pause ended by hand: the canary passes and forgets the refusal.
        ok("user", "enable", "canary-a", *live_args(server))
        stored = json.loads(canary_file.read_text())
        assert stored.pop("refused")["user"] == "canary-a"
        canary_file.write_text(json.dumps(stored))
        done = canary()
        assert done.returncode == 0, done
        assert "refused" not in json.loads(canary_file.read_text())


def test_health_degraded_then_down(tmp_path: Path) -> None:
    server = ChatdProcess(tmp_path / "data", tmp_path / "logs", "--disk-alert-pct", "0")
    canary_file = tmp_path / "canary.json"
    with server:
        done = chatd("health", "--url", server.url, "--canary", "--canary-file", canary_file)
        assert done.returncode == 1, done
        assert done.stdout.startswith("CHATD DEGRADED - status=degraded ")
        assert "canary_rtt=" in done.stdout
        server.stop()
        done = chatd("health", "--url", server.url)
        assert (done.returncode, done.stdout) == (2, "CHATD DOWN - connection refused\n")
        done = chatd("health", "--url", server.url, "--canary", "--canary-file", canary_file)
        assert (done.returncode, done.stdout) == (2, "CHATD DOWN - connection refused\n")


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    """/healthz as a server whose store is unusable answers it."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "degraded", "version": __version__, "protocol": "1.0.0",
                           "uptime_s": 42.0, "connections": 7, "db": "error",
                           "disk_used_pct": 12.5}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_health_503_is_down(cli: InProcess) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        status, out, _ = cli("health", "--url", url)
    finally:
        server.shutdown()
        server.server_close()
    assert (status, out) == (
        2, "CHATD DOWN - HTTP 503 status=degraded connections=7 uptime=42s db=error disk=12%\n"
    )


def test_password_prompt_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["typed-twice", "typed-twice", "first-answer", "second-answer"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    assert read_password(Terminal()) == "typed-twice"
    with pytest.raises(AdminError, match="differ"):
        read_password(Terminal())


def test_health_argument_errors(tmp_path: Path) -> None:
    done = chatd("health", "--url", "ftp://example.invalid")
    assert (done.returncode, done.stdout.startswith("CHATD DOWN - bad --url")) == (2, True)
    assert chatd("health", "--timeout", "0").returncode == 2
