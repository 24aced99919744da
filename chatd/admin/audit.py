"""The audit log: every subcommand that touches the database leaves an ``admin.*`` line
in ``<log-dir>/chatd.log``, beside the server's: ``--log-dir``, else the server's
``log_dir`` from its TOML file (``--config``, see :func:`chatd.config.apply_server_config`),
else ``./logs``."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from chatd.admin.common import EXIT_USAGE, AdminError
from chatd.files import make_private_dir
from chatd.observe.logs import LOG_FILE_NAME, EventLogger, JsonFormatter, PrivateFileHandler

__all__ = ["audit", "configure_audit_log"]

# One logger for every subcommand: its name is the "logger" of each audit line.
log = EventLogger(logging.getLogger("chatd.admin"))

DEFAULT_LOG_DIR: Final = Path("logs")


def configure_audit_log(args: argparse.Namespace) -> Callable[[], None]:
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


def audit(event: str, **fields: object) -> None:
    log.info(event, os_user=_os_user(), **fields)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"uid:{os.getuid()}"
