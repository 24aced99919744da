"""``chatpad`` and ``python -m chatpad``: the desktop client's command line."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from chatpad import __version__
from chatpad.files import private_umask

__all__ = ["EXIT_MISSING_EXTRA", "EXIT_PROFILE_IN_USE", "build_parser", "main"]

EXIT_PROFILE_IN_USE = 3
# `pip install libchat` is the engine alone; chatpad needs the `gui` extra
# (pyproject.toml). Without it chatpad says so in one line and exits with this status.
EXIT_MISSING_EXTRA = 4
GUI_MODULES = ("pygame", "pygame_gui", "platformdirs", "apsw")
MISSING_EXTRA = "chatpad: the client needs its extra: pip install 'libchat[gui]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--version", action="version", version=f"chatpad {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="open the window, render every screen once with sample data, "
                             "exit 0 (works headless with SDL_VIDEODRIVER=dummy)")
    parser.add_argument("--screenshots", metavar="DIR", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if any(importlib.util.find_spec(name) is None for name in GUI_MODULES):
        print(MISSING_EXTRA, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    args = build_parser().parse_args(argv)
    with private_umask():  # the profile's files are its user's alone
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=os.environ.get("CHATPAD_LOG", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    if args.self_test or args.screenshots:
        from pathlib import Path

        from chatpad.demo import tour

        names = tour(Path(args.screenshots) if args.screenshots else None)
        print(f"chatpad {__version__} self-test ok: {', '.join(names)}")
        return 0

    from chatpad.app import App, AppConfig
    from chatpad.lock import ProfileInUse
    from chatpad.profile import parse_server

    try:
        parse_server(args.server)
        app = App(AppConfig(server=args.server, profile=args.profile, theme=args.theme))
    except ValueError as exc:
        print(f"chatpad: {exc}", file=sys.stderr)
        return 2
    except ProfileInUse as exc:
        print(f"chatpad: the profile {args.profile!r} is already open in another chatpad "
              f"({exc}); close that one first, or start this one with --profile NAME",
              file=sys.stderr)
        return EXIT_PROFILE_IN_USE
    return app.run()


if __name__ == "__main__":
    sys.exit(main())
