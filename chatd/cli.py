"""The ``chatd`` command: ``serve`` and the operators' subcommands.

``serve`` runs the server (:mod:`chatd.app`), ``migrate-data`` copies a SQLite database
into PostgreSQL (:mod:`chatd.migrate_cli`); every other subcommand is implemented in
:mod:`chatd.admin` (and the health probe in :mod:`chatd.probe`). ``man/chatd.8``
documents every flag defined here; ``tests/chatd/test_man.py`` keeps the two in step.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from chatd.files import private_umask
from libchat import __version__

DEFAULT_HEALTH_URL = "http://127.0.0.1:8765"

# `pip install libchat` is the engine alone; chatd needs the `server` extra
# (pyproject.toml). Without it chatd says so in one line and exits with this status.
EXIT_MISSING_EXTRA = 3
SERVER_MODULES = ("apsw", "psycopg", "psycopg_pool", "jwt", "argon2", "prometheus_client")
MISSING_EXTRA = "chatd: the server needs its extra: pip install 'libchat[server]'"


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")


def _add_log_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-dir", type=Path, metavar="DIR",
                        help="where the audit line goes: DIR/chatd.log (default: the"
                        " server's, from --config; else ./logs)")


def _add_admin_config(parser: argparse.ArgumentParser) -> None:
    from chatd.config import DEFAULT_CONFIG_FILE

    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="the server's TOML file: its data_dir, db, log_dir and"
                        " token_key_file are the defaults of these flags (default"
                        f" {DEFAULT_CONFIG_FILE} when it exists and neither --data-dir"
                        " nor --db is given)")


def _add_token_key_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-key-file", type=Path, metavar="FILE",
                        help="the token keyring file the servers use (chatd serve"
                        " --token-key-file), instead of the data dir or database")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from chatd.config import add_server_flags, add_store_flags

    parser = argparse.ArgumentParser(
        prog="chatd", description="The chat server daemon and its admin commands."
    )
    _add_version(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--version", action="version", version=f"chatd {__version__}")
    add_store_flags(serve)
    add_server_flags(serve)

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, action: str,
        help: str, *, store: bool = True,
    ) -> argparse.ArgumentParser:
        """A subcommand; those that touch the database take --data-dir, --db,
        --log-dir (each run leaves an audit line in the log) and --config (the
        server's file, for their defaults)."""
        sub = group.add_parser(name, help=help, description=help)
        sub.set_defaults(action=action)
        _add_version(sub)
        if store:
            add_store_flags(sub)
            _add_log_dir(sub)
            _add_admin_config(sub)
        return sub

    user = commands.add_parser("user", help="manage accounts", description="Manage accounts.")
    _add_version(user)
    users = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = command(users, "add", "user.add",
                  "create an account (password: one line on stdin, or prompted)")
    add.add_argument("name", metavar="NAME")
    listing = command(users, "list", "user.list", "list every account")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = command(users, "show", "user.show", "show one account")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="print JSON")
    for name, help_text in (
        ("disable", "disable an account: revokes its tokens, closes its connections"),
        ("enable", "enable a disabled account"),
        ("passwd", "set a new password (stdin or prompted); revokes older tokens"),
    ):
        sub = command(users, name, f"user.{name}", help_text)
        sub.add_argument("name", metavar="NAME")

    token = commands.add_parser("token", help="mint tokens", description="Mint tokens.")
    _add_version(token)
    tokens = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    issue = command(tokens, "issue", "token.issue",
                    "print a new token for a user (for bots and load tests)")
    issue.add_argument("name", metavar="NAME")
    issue.add_argument("--ttl", type=_positive_int, default=86400, metavar="SECONDS",
                       help="token lifetime (default 86400)")
    _add_token_key_file(issue)

    key = commands.add_parser("key", help="manage the token signing keys",
                              description="Manage the token signing keys.")
    _add_version(key)
    keys = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    rotate = command(keys, "rotate", "key.rotate",
                     "add a new token signing key; prune keys retired longer than --token-ttl")
    _add_token_key_file(rotate)
    rotate.add_argument("--token-ttl", type=_positive_int, default=86400, metavar="SECONDS",
                        help="the longest token lifetime in use (default 86400): keys retired"
                        " longer ago are dropped")

    messages = command(commands, "messages", "messages",
                       "show the conversation between two users (audited)")
    messages.add_argument("a", metavar="A")
    messages.add_argument("b", metavar="B")
    messages.add_argument("--before", type=int, metavar="SEQ",
                          help="only messages with a seq below SEQ (default: the newest)")
    messages.add_argument("--limit", type=_positive_int, default=50, metavar="N",
                          help="how many messages (default 50)")
    messages.add_argument("--json", action="store_true", help="print JSON")

    limits_parser = commands.add_parser(
        "limits", help="see or clear the login limits",
        description="See or clear the failed-login limits (per address and per account).")
    _add_version(limits_parser)
    limit_actions = limits_parser.add_subparsers(dest="limits_command", metavar="ACTION",
                                                 required=True)
    show_limits = command(limit_actions, "show", "limits.show",
                          "failed logins per address and per account in the window")
    show_limits.add_argument("--json", action="store_true", help="print JSON")
    clear_limits = command(limit_actions, "clear", "limits.clear",
                           "forget the failed logins of an address and/or an account")
    clear_limits.add_argument("--ip", metavar="ADDRESS",
                              help="the client address (an IPv6 one: its /64)")
    clear_limits.add_argument("--user", metavar="NAME", help="the account")

    stats = command(commands, "stats", "stats",
                    "users, messages, undelivered messages, database size")
    stats.add_argument("--json", action="store_true", help="print JSON")

    health = command(commands, "health", "health",
                     "ask a running server's /healthz (exit 0 ok, 1 degraded, 2 down)",
                     store=False)
    health.add_argument("--url", default=DEFAULT_HEALTH_URL,
                        help=f"the server's base URL (default {DEFAULT_HEALTH_URL});"
                        " https://, or the clients' wss://HOST:PORT/v1/ws, for TLS")
    health.add_argument("--cacert", type=Path, metavar="FILE",
                        help="trust only this PEM certificate (the server's self-signed"
                        " one, or its CA) for https://, instead of the system's")
    health.add_argument("--canary", action="store_true",
                        help="also send a message between two canary accounts and time it")
    health.add_argument("--canary-file", type=Path, metavar="FILE",
                        help="the canary accounts' passwords (default ./data/canary.json)")
    health.add_argument("--timeout", type=_positive_float, default=5.0, metavar="SECONDS",
                        help="give up after this long (default 5)")
    add_store_flags(health)  # where the canary may look up why its login was refused

    command(commands, "migrate", "migrate", "create or upgrade the database schema")
    backup = command(commands, "backup", "backup",
                     "copy the SQLite database consistently, even while it serves")
    backup.add_argument("file", type=Path, metavar="FILE")

    from chatd import migrate_cli  # SQLite -> PostgreSQL: its own module and flags

    migrate_cli.add_parser(commands)
    _add_version(commands.choices["migrate-data"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if any(importlib.util.find_spec(name) is None for name in SERVER_MODULES):
        print(MISSING_EXTRA, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    args = build_parser().parse_args(argv)
    with private_umask():  # every file chatd creates is 0600, every directory 0700
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.command == "migrate-data":
        from chatd import migrate_cli

        return migrate_cli.run(args)
    if args.command == "serve":
        from chatd.app import run
        from chatd.config import load_config

        try:
            config = load_config(args)
        except (OSError, ValueError) as exc:
            print(f"chatd: {exc}", file=sys.stderr)
            return 2
        return run(config)
    from chatd import admin

    return admin.run(args)


if __name__ == "__main__":
    sys.exit(main())
