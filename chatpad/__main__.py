"""``chatpad`` and ``python -m chatpad``: the desktop client's command line.

The Windows executable is built without a console (``chatpad.spec``), so there
``sys.stdout`` and ``sys.stderr`` are None: printing is skipped rather than failing, and
what a person needs to find is written to files instead. ``--report FILE`` writes what
``--version`` or ``--self-test`` prints to FILE, and every run logs to the private,
bounded ``chatpad.log`` in the data root (:func:`diagnostics`), uncaught errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import logging
import os
import platform
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Final

from chatpad import __version__
from chatpad.files import create_private_file, make_private_dir, private_umask

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["EXIT_FAILED", "EXIT_MISSING_EXTRA", "EXIT_PROFILE_IN_USE", "EXIT_USAGE", "LOG_NAME",
           "build_parser", "diagnostics", "main"]

log = logging.getLogger("chatpad")  # not __name__: that is "__main__" under python -m

EXIT_FAILED: Final = 1  # the self-test failed, or chatpad stopped on an unexpected error
EXIT_USAGE: Final = 2  # bad options (argparse's status too)
EXIT_PROFILE_IN_USE: Final = 3
# `pip install libchat` is the engine alone; chatpad needs the `gui` extra
# (pyproject.toml). Without it chatpad says so in one line and exits with this status.
EXIT_MISSING_EXTRA: Final = 4
GUI_MODULES = ("pygame", "pygame_gui", "platformdirs", "apsw")
MISSING_EXTRA = "chatpad: the client needs its extra: pip install 'libchat[gui]'"

LOG_NAME: Final = "chatpad.log"
LOG_BYTES: Final = 1024 * 1024  # diagnostics, not a history: ~1 MB a file
LOG_BACKUPS: Final = 1  # chatpad.log and chatpad.log.1: at most ~2 MB on disk
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FILE_LEVEL: Final = logging.INFO  # unless CHATPAD_LOG says otherwise
STDERR_LEVEL: Final = logging.WARNING  # ditto


class _Parser(argparse.ArgumentParser):
    """argparse, quiet instead of failing where there is no console to print to."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        file = file or sys.stderr
        if message and file is not None:
            file.write(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chatpad", description="chatpad: the desktop client of the chat system.")
    parser.add_argument("--server", default="http://127.0.0.1:8765", metavar="URL",
                        help="the chatd server (default: %(default)s)")
    parser.add_argument("--profile", default="default", metavar="NAME",
                        help="profile: one account's saved session, outbox and history "
                             "(several can run side by side, each in one chatpad at a time; "
                             "default: %(default)s)")
    parser.add_argument("--theme", choices=("light", "dark", "system"),
                        help="the colours: light, dark, or the system's (remembered in the "
                             "profile; Ctrl+Shift+L switches; default: the profile's, "
                             "else system)")
    parser.add_argument("--version", action="store_true",
                        help=f"print 'chatpad {__version__}' and exit")
    parser.add_argument("--self-test", action="store_true",
                        help="open the window, render every screen once with sample data, "
                             "print a report, exit 0 (1 if it failed; works headless with "
                             "SDL_VIDEODRIVER=dummy)")
    parser.add_argument("--report", metavar="FILE",
                        help="with --version or --self-test: also write what they print to "
                             "FILE (the Windows executable has no console to print to)")
    parser.add_argument("--screenshots", metavar="DIR", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if any(importlib.util.find_spec(name) is None for name in GUI_MODULES):
        print(MISSING_EXTRA, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report and not (args.version or args.self_test or args.screenshots):
        parser.error("--report goes with --version or --self-test")
    if args.version:
        return _emit([f"chatpad {__version__}"], args.report)
    with private_umask(), diagnostics():  # the profile's files are its user's alone
        try:
            return _run(args)
        except Exception:
            log.critical("chatpad stopped on an unexpected error", exc_info=True)
            return EXIT_FAILED


class _PrivateRotatingFileHandler(RotatingFileHandler):
    """A rotating log whose files (the first, and each after a rollover) are 0600."""

    def _open(self) -> io.TextIOWrapper:
        create_private_file(Path(self.baseFilename))
        return super()._open()


@contextlib.contextmanager
def diagnostics() -> Iterator[Path | None]:
    """Log to ``chatpad.log`` in the data root (INFO and up, or ``$CHATPAD_LOG``) and to
    standard error when there is one (WARNING and up, or ``$CHATPAD_LOG``) for the block;
    warnings and uncaught errors of threads are logged too. Yields the log's path, or None
    when it cannot be written (then only standard error is left)."""
    from chatpad.profile import data_root  # platformdirs: after the check for the extra

    wanted = os.environ.get("CHATPAD_LOG", "").strip().upper()
    level = logging.getLevelName(wanted) if wanted else None
    if not isinstance(level, int):
        level = None
    handlers: list[logging.Handler] = []
    path: Path | None = data_root() / LOG_NAME
    problem: OSError | None = None
    try:
        make_private_dir(data_root())
        to_file = _PrivateRotatingFileHandler(data_root() / LOG_NAME, maxBytes=LOG_BYTES,
                                              backupCount=LOG_BACKUPS, encoding="utf-8")
        to_file.setLevel(level or FILE_LEVEL)
        handlers.append(to_file)
    except OSError as exc:
        path, problem = None, exc
    if sys.stderr is not None:
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setLevel(level or STDERR_LEVEL)
        handlers.append(to_stderr)
    root = logging.getLogger()
    saved_level, saved_hook = root.level, threading.excepthook
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(min((h.level for h in handlers), default=STDERR_LEVEL))
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_error
    try:
        if problem is not None:
            log.warning("cannot write the log %s: %s", data_root() / LOG_NAME, problem)
        if wanted and level is None:
            log.warning("CHATPAD_LOG=%s is not a level (DEBUG, INFO, WARNING, ERROR)", wanted)
        log.info("chatpad %s on %s", __version__, _platform())
        yield path
    finally:
        threading.excepthook = saved_hook
        logging.captureWarnings(False)
        root.setLevel(saved_level)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def _log_thread_error(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "?"
    log.critical("thread %s stopped on an unexpected error", name,
                 exc_info=args.exc_value)


def _platform() -> str:
    frozen = ", one-file executable" if getattr(sys, "frozen", False) else ""
    return f"Python {platform.python_version()}, {platform.platform()}{frozen}"


def _emit(lines: list[str], report: str | None) -> int:
    """Print ``lines`` (when there is a standard output) and write them to ``report``."""
    text = "".join(f"{line}\n" for line in lines)
    if sys.stdout is not None:
        sys.stdout.write(text)
        sys.stdout.flush()
    if report is not None:
        try:
            Path(report).write_text(text, "utf-8")
        except OSError as exc:
            _tell(f"chatpad: cannot write the report: {exc}")
            return EXIT_FAILED
    return 0


def _tell(message: str) -> None:
    """An error for the person at the console (if any); the log keeps it in any case."""
    if sys.stderr is not None:
        print(message, file=sys.stderr)
    log.info("%s", message)


def _self_test(args: argparse.Namespace) -> int:
    import pygame

    from chatpad.demo import tour
    from chatpad.profile import data_root

    try:
        names = tour(Path(args.screenshots) if args.screenshots else None)
        lines, status = [f"chatpad {__version__} self-test ok: {', '.join(names)}"], 0
    except Exception as exc:
        log.exception("self-test failed")
        lines = [f"chatpad {__version__} self-test FAILED: {exc!r}",
                 *traceback.format_exc().rstrip().splitlines()]
        status = EXIT_FAILED
    log.info("%s", lines[0])
    sdl = ".".join(map(str, pygame.get_sdl_version()))
    lines += [f"{_platform()}; pygame-ce {pygame.version.ver}, SDL {sdl}",
              f"log: {data_root() / LOG_NAME}"]
    return _emit(lines, args.report) or status


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    if args.self_test or args.screenshots:
        return _self_test(args)

    from chatpad.app import App, AppConfig
    from chatpad.lock import ProfileInUse
    from chatpad.profile import parse_server

    try:
        parse_server(args.server)
        app = App(AppConfig(server=args.server, profile=args.profile, theme=args.theme))
    except ValueError as exc:
        _tell(f"chatpad: {exc}")
        return EXIT_USAGE
    except ProfileInUse as exc:
        _tell(f"chatpad: the profile {args.profile!r} is already open in another chatpad "
              f"({exc}); close that one first, or start this one with --profile NAME")
        return EXIT_PROFILE_IN_USE
    log.info("profile %s, server %s", args.profile, args.server)
    status = app.run()
    log.info("closed (exit %d)", status)
    return status


if __name__ == "__main__":
    sys.exit(main())
