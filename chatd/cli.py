"""The ``chatd`` command: ``serve`` and the operators' subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from libchat import __version__


def build_parser() -> argparse.ArgumentParser:
    from chatd.config import add_server_flags, add_store_flags

    parser = argparse.ArgumentParser(
        prog="chatd", description="The chat server daemon and its admin commands."
    )
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--version", action="version", version=f"chatd {__version__}")
    add_store_flags(serve)
    add_server_flags(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from chatd.app import run
        from chatd.config import load_config

        try:
            config = load_config(args)
        except (OSError, ValueError) as exc:
            print(f"chatd: {exc}", file=sys.stderr)
            return 2
        return run(config)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
