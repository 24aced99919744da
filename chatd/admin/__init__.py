"""The operators' subcommands of ``chatd`` (everything but ``serve``).

Each one opens the database named by ``--data-dir``/``--db`` (by default the server's,
from the TOML file ``--config`` names or ``/etc/chatd/chatd.toml``: see
:func:`chatd.config.apply_server_config`) with the same store the server uses, does one
thing and exits; they are safe to run while a server runs on the same database
(SQLite's WAL and busy timeout, or PostgreSQL). A running server sees
their user changes at once (a key file within 2 s): on SQLite its writer connection
notices another connection's commit, on PostgreSQL the store NOTIFYs the nodes.

Exit statuses: 0 done, 1 refused or not found (unknown user, name taken...), 2 usage or
configuration errors (bad flags, no database, wrong schema). Errors are one line on
stderr. Passwords are read from stdin or prompted for, never taken as flags, and no
password, token or message body is ever logged.

The subcommands by topic: :mod:`~chatd.admin.users`, :mod:`~chatd.admin.keys` (tokens
and the keyring), :mod:`~chatd.admin.limits` (login limits), :mod:`~chatd.admin.data`
(messages, stats, migrate, backup); what they share: :mod:`~chatd.admin.common` (exit
statuses, opening the store), :mod:`~chatd.admin.audit` (the audit log) and
:mod:`~chatd.admin.output`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Final

from chatd.admin import data, keys, limits, users
from chatd.admin.audit import audit, configure_audit_log
from chatd.admin.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, AdminError
from chatd.admin.users import read_password
from chatd.config import apply_server_config
from chatd.store import SchemaMismatch, StoreError

__all__ = ["EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "AdminError", "read_password", "run"]


def run(args: argparse.Namespace) -> int:
    """Run the subcommand chosen by ``args.action``; returns the exit status."""
    handler = _HANDLERS[args.action]
    close_log = None
    if args.action != "health":
        try:
            apply_server_config(args)
        except ValueError as exc:  # no audit line: where it would go is unknown
            print(f"chatd: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        if args.action != "health":
            close_log = configure_audit_log(args)
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
        audit("admin.failed", action=args.action, error=message, status=status)
    print(f"chatd: {message}", file=sys.stderr)
    return status


def _health(args: argparse.Namespace) -> int:
    from chatd.probe import check_health

    return check_health(args)


_HANDLERS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "user.add": users.user_add,
    "user.list": users.user_list,
    "user.show": users.user_show,
    "user.disable": lambda args: users.set_disabled(args, True),
    "user.enable": lambda args: users.set_disabled(args, False),
    "user.passwd": users.user_passwd,
    "token.issue": keys.token_issue,
    "key.rotate": keys.key_rotate,
    "messages": data.messages,
    "stats": data.stats,
    "limits.show": limits.limits_show,
    "limits.clear": limits.limits_clear,
    "health": _health,
    "migrate": data.migrate,
    "backup": data.backup,
}
