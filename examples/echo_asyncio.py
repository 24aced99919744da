"""An echo bot on libchat's asyncio host: it answers every message with the same text.

    CHAT_PASSWORD=... python examples/echo_asyncio.py --url http://127.0.0.1:8765 \\
        --username echo [--register] [--cafile ca.pem] [--count N]

The password comes from the environment, not the command line (which other users of
the machine can see). With ``https://`` the bot speaks TLS, trusting the system's CAs or
the one in ``--cafile``. It reconnects by itself when the server restarts, and messages
sent to it meanwhile arrive once it is back (each once). ``--count`` stops it after that
many echoes were stored by the server; by default it runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys

from libchat import (
    Acked,
    AsyncClient,
    Connected,
    Credentials,
    Disconnected,
    Message,
    SendFailed,
    SignedOut,
    SignInFailed,
)


async def echo(url: str, credentials: Credentials, *, register: bool, cafile: str | None,
               count: int) -> int:
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    echoed = 0
    async with AsyncClient.from_url(url, ssl_context=context) as client:
        client.sign_in(credentials, register=register)
        async for event in client:
            if isinstance(event, Message):
                if event.sender != client.session.username:  # not my own, from elsewhere
                    client.send_message(event.sender, event.body)
            elif isinstance(event, Acked):
                echoed += 1
                if echoed == count:
                    break
            elif isinstance(event, Connected):
                print(f"connected as {event.username}", flush=True)
            elif isinstance(event, Disconnected):
                print(f"disconnected ({event.reason}); reconnecting", flush=True)
            elif isinstance(event, SendFailed):
                print(f"could not echo to {event.entry.to}: {event.code}", flush=True)
            elif isinstance(event, SignInFailed | SignedOut):
                print(f"signed out: {event}", file=sys.stderr, flush=True)
                return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--username", required=True)
    parser.add_argument("--register", action="store_true", help="create the account first")
    parser.add_argument("--cafile", help="trust this CA (PEM) for https://")
    parser.add_argument("--count", type=int, default=0, help="stop after this many echoes")
    args = parser.parse_args()
    password = os.environ.get("CHAT_PASSWORD")
    if not password:
        parser.error("set CHAT_PASSWORD")
    credentials = Credentials(username=args.username, password=password)
    try:
        return asyncio.run(echo(args.url, credentials, register=args.register,
                                cafile=args.cafile, count=args.count))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
