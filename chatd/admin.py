"""The operators' subcommands of ``chatd`` (everything but ``serve``).

Each one opens the database named by ``--data-dir``/``--db`` with the same store the
server uses, does one thing and exits; they are safe to run while a server runs on the
same database (SQLite's WAL and busy timeout, or PostgreSQL). A running server sees
their user changes at once (a key file within 2 s): on SQLite its writer connection
notices another connection's commit, on PostgreSQL the store NOTIFYs the nodes.

Exit statuses: 0 done, 1 refused or not found (unknown user, name taken...), 2 usage or
configuration errors (bad flags, no database, wrong schema). Errors are one line on
stderr. Passwords are read from stdin or prompted for, never taken as flags, and no
password, token or message body is ever logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import orjson

from chatd.admission import address_key
from chatd.auth import LOGIN_MAX_FAILURES, LOGIN_WINDOW
from chatd.files import make_private_dir
from chatd.observe.logs import (
    LOG_FILE_NAME,
    EventLogger,
    JsonFormatter,
    PrivateFileHandler,
    escape_unprintable,
)
from chatd.store import SchemaMismatch, Store, StoreError, User
from chatd.store.factory import open_store
from chatd.store.sqlite import SqliteStore
from libchat import limits
from libchat.protocol import (
    Message,
    MessagePage,
    encode_body,
    is_valid_username,
    normalize_username,
)

__all__ = ["EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "AdminError", "run"]

log = EventLogger(logging.getLogger(__name__))

EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1  # unknown user, name taken, disabled user: the operation is refused
EXIT_USAGE: Final = 2  # bad input, missing database, schema mismatch, unusable config
DEFAULT_DATA_DIR: Final = Path("data")
DEFAULT_LOG_DIR: Final = Path("logs")
DEFAULT_TOKEN_TTL: Final = 86400  # seconds, the same default as ``serve --token-ttl``


class AdminError(Exception):
    """A refused operation: the message goes to stderr, ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.status = status


def run(args: argparse.Namespace) -> int:
    """Run the subcommand chosen by ``args.action``; returns the exit status."""
    handler = _HANDLERS[args.action]
    close_log = None
    try:
        if args.action != "health":
            close_log = _configure_audit_log(args)
        return handler(args)
    except AdminError as exc:
        return _failed(args, str(exc), exc.status)
    except SchemaMismatch as exc:
        return _failed(args, str(exc), EXIT_USAGE)
    except StoreError as exc:
        return _failed(args, f"database error: {exc}", EXIT_USAGE)
    except KeyboardInterrupt:
        return _failed(args, "interrupted", EXIT_USAGE)
    finally:
        if close_log is not None:
            close_log()


def _failed(args: argparse.Namespace, message: str, status: int) -> int:
    """A refused or failed run: audited like the others (``admin.failed``), then told."""
    if args.action != "health":
        _audit("admin.failed", action=args.action, error=message, status=status)
    return _fail(message, status)


def _fail(message: str, status: int) -> int:
    print(f"chatd: {message}", file=sys.stderr)
    return status


# --- shared plumbing ---------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    data_dir: Path | None = getattr(args, "data_dir", None)
    return data_dir if data_dir is not None else DEFAULT_DATA_DIR


def _db_url(args: argparse.Namespace) -> str:
    db: str | None = getattr(args, "db", None)
    return db or str(_data_dir(args) / "chatd.db")


def _new_store(args: argparse.Namespace, *, create: bool) -> Store:
    """The store for ``--db``/``--data-dir``, not opened. Only ``create`` commands may
    bring a new SQLite file into being, so a mistyped ``--data-dir`` is an error."""
    try:
        store = open_store(_db_url(args))
    except ValueError as exc:
        raise AdminError(str(exc), EXIT_USAGE) from None
    if isinstance(store, SqliteStore):
        if create:
            make_private_dir(store.path.parent)
        elif not store.path.is_file():
            raise AdminError(
                f"no database at {store.path}: check --data-dir or --db"
                " (`chatd migrate` creates one)",
                EXIT_USAGE,
            )
    return store


@contextlib.asynccontextmanager
async def _opened(args: argparse.Namespace, *, create: bool = False) -> AsyncIterator[Store]:
    store = _new_store(args, create=create)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _user(store: Store, name: str) -> User:
    user = await store.user_by_name(normalize_username(name))
    if user is None:
        raise AdminError(f"no such user {name!r}")
    return user


def _iso(ms: int | None) -> str:
    """Unix ms as RFC 3339 UTC (``2026-11-26T10:53:00.123Z``); ``-`` for None."""
    if ms is None:
        return "-"
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _shown(text: str) -> str:
    """Stored user text (a body, a name) as it may reach the operator's terminal: every
    control character but newline and tab escaped (``\\x1b``), so no body can move the
    cursor, retitle the window or hide a line. ``--json`` prints the exact text, which
    JSON escapes."""
    return escape_unprintable(text, keep="\n\t")


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _configure_audit_log(args: argparse.Namespace) -> Callable[[], None]:
    """Append this process's log records, as JSON lines, to ``<log-dir>/chatd.log``
    beside the server's: every subcommand that touches the database leaves an
    ``admin.*`` audit line there. Returns the function that closes it.

    A plain appending handler, not the server's daily rotating one: only the
    long-lived server may rotate the file. A rotating handler here would, on its first
    line after midnight, rename the file under the running server, whose own rotation
    would then delete that renamed file (yesterday's log) as a name clash.
    """
    log_dir: Path = getattr(args, "log_dir", None) or DEFAULT_LOG_DIR
    try:
        make_private_dir(log_dir)
        handler = PrivateFileHandler(log_dir / LOG_FILE_NAME, encoding="utf-8")
    except OSError as exc:
        raise AdminError(f"cannot write the audit log in {log_dir}: {exc}", EXIT_USAGE) from None
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    store_log = logging.getLogger("chatd.store")
    previous_store_level = store_log.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    store_log.setLevel(logging.WARNING)  # no open/close chatter

    def close() -> None:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        store_log.setLevel(previous_store_level)
        handler.close()

    return close


def _audit(event: str, **fields: object) -> None:
    log.info(event, os_user=_os_user(), **fields)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"uid:{os.getuid()}"


# --- passwords ---------------------------------------------------------------------------


def read_password(stdin: Any = None) -> str:
    """One line of stdin when it is not a terminal; otherwise prompt twice."""
    stdin = stdin if stdin is not None else sys.stdin
    if stdin is None:
        raise AdminError("no password: stdin is closed", EXIT_USAGE)
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise AdminError("the passwords differ", EXIT_USAGE)
        password = first
    else:
        line = stdin.readline()
        if not line:
            raise AdminError("no password on stdin (give it as one line)", EXIT_USAGE)
        password = line.removesuffix("\n").removesuffix("\r")
    if not limits.MIN_PASSWORD_CHARS <= len(password) <= limits.MAX_PASSWORD_CHARS:
        raise AdminError(
            f"passwords are {limits.MIN_PASSWORD_CHARS} to {limits.MAX_PASSWORD_CHARS}"
            " characters",
            EXIT_USAGE,
        )
    return password


async def _hash(password: str) -> str:
    from chatd.auth import Passwords  # argon2: only for the commands that hash

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2") as executor:
        return await Passwords(executor).hash(password)


# --- user --------------------------------------------------------------------------------


def _user_add(args: argparse.Namespace) -> int:
    username = normalize_username(args.name)
    if not is_valid_username(username):
        raise AdminError(
            f"invalid username {args.name!r}: 3 to 32 characters of a-z 0-9 _ . -", EXIT_USAGE
        )

    async def main() -> User:
        async with _opened(args, create=True) as store:
            if await store.user_by_name(username) is not None:
                raise AdminError(f"user {username!r} already exists")
            password_hash = await _hash(read_password())  # asked once the name is free
            user = await store.create_user(username, password_hash, int(time.time() * 1000))
            if user is None:
                raise AdminError(f"user {username!r} already exists")
            return user

    user = asyncio.run(main())
    _audit("admin.user_add", user=user.username, user_id=user.id)
    print(f"created user {user.username} (id {user.id})")
    return EXIT_OK


def _user_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "disabled": user.disabled,
        "created_at": user.created_at,
    }


def _user_list(args: argparse.Namespace) -> int:
    async def main() -> list[User]:
        async with _opened(args) as store:
            return await store.list_users()

    users = asyncio.run(main())
    _audit("admin.user_list", users=len(users))
    if args.json:
        _print_json({"users": [_user_row(user) for user in users]})
        return EXIT_OK
    rows = [("ID", "USERNAME", "STATUS", "CREATED")]
    rows += [
        (str(u.id), _shown(u.username), "disabled" if u.disabled else "enabled",
         _iso(u.created_at))
        for u in users
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return EXIT_OK


def _user_show(args: argparse.Namespace) -> int:
    async def main() -> tuple[User, int]:
        async with _opened(args) as store:
            user = await _user(store, args.name)
            return user, await store.queue_depth(user.id)

    user, undelivered = asyncio.run(main())
    _audit("admin.user_show", user=user.username, user_id=user.id)
    row = _user_row(user) | {"token_generation": user.token_generation, "undelivered": undelivered}
    if args.json:
        _print_json(row)
        return EXIT_OK
    print(f"username          {_shown(user.username)}")
    print(f"id                {user.id}")
    print(f"status            {'disabled' if user.disabled else 'enabled'}")
    print(f"created           {_iso(user.created_at)}")
    print(f"token generation  {user.token_generation}")
    print(f"undelivered       {undelivered}")
    return EXIT_OK


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    async def main() -> User:
        async with _opened(args) as store:
            user = await _user(store, args.name)
            return await store.set_disabled(user.id, disabled)

    user = asyncio.run(main())
    _audit("admin.user_disable" if disabled else "admin.user_enable",
           user=user.username, user_id=user.id)
    if disabled:
        print(f"disabled {user.username}: its tokens are revoked; a running server closes"
              " its connections at once")
    else:
        print(f"enabled {user.username}")
    return EXIT_OK


def _user_passwd(args: argparse.Namespace) -> int:
    async def main() -> User:
        async with _opened(args) as store:
            user = await _user(store, args.name)
            return await store.set_password(user.id, await _hash(read_password()))

    user = asyncio.run(main())
    _audit("admin.user_passwd", user=user.username, user_id=user.id)
    print(f"changed the password of {user.username}: its older tokens are revoked")
    return EXIT_OK


# --- token -------------------------------------------------------------------------------


def _token_issue(args: argparse.Namespace) -> int:
    from chatd.auth import KeyFileError, Keyring, Tokens  # PyJWT: only here
    from chatd.auth.keys import key_source

    if args.ttl <= 0:
        raise AdminError("--ttl must be a positive number of seconds", EXIT_USAGE)

    async def main() -> tuple[User, Keyring]:
        async with _opened(args) as store:
            user = await _user(store, args.name)
            if user.disabled:
                raise AdminError(f"user {user.username!r} is disabled")
            try:  # the server's keyring: --token-key-file, the data dir's, or the database's
                source = key_source(store, _data_dir(args), args.token_key_file)
                return user, await source.load()
            except KeyFileError as exc:
                raise AdminError(str(exc), EXIT_USAGE) from None

    user, keyring = asyncio.run(main())
    issued = Tokens(keyring, args.ttl).issue(user.id, user.token_generation, time.time())
    _audit("admin.token_issue", user=user.username, user_id=user.id, jti=issued.jti,
           expires_at=issued.expires_at, kid=keyring.signing.kid)
    print(issued.token)
    return EXIT_OK


# --- key ---------------------------------------------------------------------------------


def _key_rotate(args: argparse.Namespace) -> int:
    """Add a new signing key to the keyring and prune keys retired longer ago than
    ``--token-ttl``. With ``--token-key-file`` naming a file that does not exist yet, the
    new file starts with the keys used so far (data dir or database), so switching to a
    key file logs nobody out."""
    import secrets

    from chatd.auth import KEY_BYTES, KEY_FILE, KeyFileError, Keyring, SigningKey
    from chatd.auth.keys import FileKeys, KeySource, key_source

    if args.token_ttl <= 0:
        raise AdminError("--token-ttl must be a positive number of seconds", EXIT_USAGE)
    store = _new_store(args, create=False)  # checks --data-dir/--db even when unused
    key_file: Path | None = args.token_key_file
    data_dir = _data_dir(args)

    async def main() -> tuple[Keyring, list[SigningKey], str]:
        uses_db = hasattr(store, "shared_token_key") and (key_file is None or not key_file.exists())
        if uses_db:
            await store.open()
        try:
            default: KeySource = (
                key_source(store, data_dir, None) if uses_db
                else FileKeys(data_dir / KEY_FILE, create=False)
            )
            source = default if key_file is None else FileKeys(key_file, create=False)
            previous: Keyring | None = None
            if key_file is None or key_file.exists():
                previous = await source.load()
                current: Keyring | None = previous
            elif uses_db or (data_dir / KEY_FILE).exists():
                current = await default.load()  # a new key file starts from the keys in use
            else:
                current = None
            now = time.time()
            secret = secrets.token_bytes(KEY_BYTES)
            pruned: list[SigningKey] = []
            if current is None:
                keyring = Keyring((SigningKey(secret=secret, created_at=int(now)),))
            else:
                keyring, pruned = current.rotated(secret, now, keep=args.token_ttl)
            await source.save(keyring, previous)
            return keyring, pruned, source.description
        except (KeyFileError, ValueError) as exc:
            raise AdminError(str(exc), EXIT_USAGE) from None
        finally:
            if uses_db:
                await store.close()

    keyring, pruned, where = asyncio.run(main())
    kid = keyring.signing.kid
    _audit("admin.key_rotate", kid=kid, keys=len(keyring.keys), pruned=[k.kid for k in pruned],
           source=where)
    print(f"new token signing key {kid} in {where}: {len(keyring.keys)} keys,"
          f" {len(pruned)} pruned")
    return EXIT_OK


# --- messages ----------------------------------------------------------------------------


def _messages(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise AdminError("--limit must be at least 1", EXIT_USAGE)

    async def main() -> tuple[User, User, list[Message], bool]:
        async with _opened(args) as store:
            a, b = await _user(store, args.a), await _user(store, args.b)
            page, has_more = await store.history(a.id, b.id, args.before, args.limit)
            return a, b, page, has_more

    a, b, page, has_more = asyncio.run(main())
    # The audit line says who looked at which pair and how much: never the bodies.
    _audit("admin.inspect", a=a.username, b=b.username, messages=len(page),
           has_more=has_more, before=args.before, limit=args.limit)
    if args.json:
        page_json = encode_body(MessagePage(messages=tuple(page), has_more=has_more))
        sys.stdout.write(page_json.decode() + "\n")
        return EXIT_OK
    for message in page:
        status = "read" if message.read_at else "delivered" if message.delivered_at else "queued"
        who = f"{_shown(message.sender)} -> {_shown(message.recipient)}"
        head = f"{message.seq} {_iso(message.ts)} {who} [{status}]"
        body = _shown(message.body).replace("\n", "\n    ")
        print(f"{head} {body}")
    if has_more:
        oldest = page[0].seq if page else args.before
        print(f"(older messages exist: --before {oldest})")
    return EXIT_OK


# --- stats, migrate, backup ---------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    async def main() -> Any:
        async with _opened(args) as store:
            return await store.stats()

    stats = asyncio.run(main())
    _audit("admin.stats", users=stats.users, messages=stats.messages,
           undelivered=stats.undelivered, db_bytes=stats.db_bytes)
    if args.json:
        _print_json({"users": stats.users, "messages": stats.messages,
                     "undelivered": stats.undelivered, "db_bytes": stats.db_bytes})
        return EXIT_OK
    print(f"users        {stats.users}")
    print(f"messages     {stats.messages}")
    print(f"undelivered  {stats.undelivered}")
    print(f"database     {_size(stats.db_bytes)} ({stats.db_bytes} bytes)")
    return EXIT_OK


def _limits_show(args: argparse.Namespace) -> int:
    """The login limits' state: failures per address and per account in the window."""
    now = time.time()

    async def main() -> list[tuple[str, str, float]]:
        async with _opened(args) as store:
            return await store.recent_login_failures(now - LOGIN_WINDOW)

    rows = asyncio.run(main())
    _audit("admin.limits_show", failures=len(rows))
    by_ip: dict[str, list[float]] = {}
    by_user: dict[str, int] = {}
    for ip, username, at in rows:
        by_ip.setdefault(ip, []).append(at)
        by_user[username] = by_user.get(username, 0) + 1
    addresses = [
        {"ip": ip, "failures": len(times), "refused": len(times) >= LOGIN_MAX_FAILURES,
         "clears_in_s": max(0, math.ceil(min(times) + LOGIN_WINDOW - now))}
        for ip, times in sorted(by_ip.items(), key=lambda item: -len(item[1]))
    ]
    accounts = [{"user": name, "failures": count}
                for name, count in sorted(by_user.items(), key=lambda item: -item[1])]
    if args.json:
        _print_json({"window_s": LOGIN_WINDOW, "addresses": addresses, "accounts": accounts})
        return EXIT_OK
    print(f"failed logins in the last {LOGIN_WINDOW / 60:.0f} minutes"
          f" (an address is refused at {LOGIN_MAX_FAILURES})")
    for entry in addresses:
        state = "REFUSED" if entry["refused"] else "ok"
        print(f"address  {_shown(str(entry['ip'])):<40} {entry['failures']:>5}  {state}"
              f"  (the oldest leaves in {entry['clears_in_s']} s)")
    for entry in accounts:
        print(f"account  {_shown(str(entry['user'])):<40} {entry['failures']:>5}")
    if not rows:
        print("none")
    return EXIT_OK


def _limits_clear(args: argparse.Namespace) -> int:
    """Forget the failed logins of an address and/or an account: at once, on every node
    (the limits are counted in the store)."""
    if args.ip is None and args.user is None:
        raise AdminError("give --ip ADDRESS, --user NAME or both", EXIT_USAGE)
    ip = None if args.ip is None else address_key(args.ip)

    async def main() -> int:
        async with _opened(args) as store:
            return await store.clear_login_failures(ip=ip, username=args.user)

    cleared = asyncio.run(main())
    _audit("admin.limits_clear", ip=ip, user=args.user, cleared=cleared)
    print(f"cleared {cleared} failed login{'s' if cleared != 1 else ''}")
    return EXIT_OK


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _migrate(args: argparse.Namespace) -> int:
    store = _new_store(args, create=True)
    version = asyncio.run(store.migrate())
    _audit("admin.migrate", schema_version=version)
    print(f"database schema is at version {version}")
    return EXIT_OK


def _backup(args: argparse.Namespace) -> int:
    store = _new_store(args, create=False)
    if not isinstance(store, SqliteStore):
        raise AdminError(
            "backup copies SQLite databases only: for PostgreSQL use pg_dump", EXIT_USAGE
        )
    dest: Path = args.file
    if dest.exists() and dest.resolve() == store.path.resolve():
        raise AdminError("the backup file is the database itself", EXIT_USAGE)
    if not dest.parent.is_dir():
        raise AdminError(f"no directory {dest.parent} for the backup", EXIT_USAGE)

    async def main() -> None:
        await store.open()  # checks the schema first: never back up a foreign file
        try:
            await store.backup(dest)
        finally:
            await store.close()

    asyncio.run(main())
    _audit("admin.backup", source=store.path, dest=dest, bytes=dest.stat().st_size)
    print(f"backed up {store.path} to {dest} ({dest.stat().st_size} bytes)")
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    from chatd.probe import check_health

    return check_health(args)


_HANDLERS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "user.add": _user_add,
    "user.list": _user_list,
    "user.show": _user_show,
    "user.disable": lambda args: _set_disabled(args, True),
    "user.enable": lambda args: _set_disabled(args, False),
    "user.passwd": _user_passwd,
    "token.issue": _token_issue,
    "key.rotate": _key_rotate,
    "messages": _messages,
    "stats": _stats,
    "limits.show": _limits_show,
    "limits.clear": _limits_clear,
    "health": _health,
    "migrate": _migrate,
    "backup": _backup,
}
