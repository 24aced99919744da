"""``chatd limits``: show and clear the login limits' failed logins (kept in the store)."""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from chatd.admin.audit import audit
from chatd.admin.common import EXIT_OK, EXIT_USAGE, AdminError, opened
from chatd.admin.output import print_json, shown
from chatd.admission import address_key
from chatd.auth.loginlimits import LOGIN_MAX_FAILURES, LOGIN_WINDOW

__all__ = ["limits_clear", "limits_show"]


def limits_show(args: argparse.Namespace) -> int:
    """The login limits' state: failures per address and per account in the window."""
    now = time.time()

    async def main() -> list[tuple[str, str, float]]:
        async with opened(args) as store:
            return await store.recent_login_failures(now - LOGIN_WINDOW)

    rows = asyncio.run(main())
    audit("admin.limits_show", failures=len(rows))
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
        print_json({"window_s": LOGIN_WINDOW, "addresses": addresses, "accounts": accounts})
        return EXIT_OK
    print(f"failed logins in the last {LOGIN_WINDOW / 60:.0f} minutes"
          f" (an address is refused at {LOGIN_MAX_FAILURES})")
    for entry in addresses:
        state = "REFUSED" if entry["refused"] else "ok"
        print(f"address  {shown(str(entry['ip'])):<40} {entry['failures']:>5}  {state}"
              f"  (the oldest leaves in {entry['clears_in_s']} s)")
    for entry in accounts:
        print(f"account  {shown(str(entry['user'])):<40} {entry['failures']:>5}")
    if not rows:
        print("none")
    return EXIT_OK


def limits_clear(args: argparse.Namespace) -> int:
    """Forget the failed logins of an address and/or an account: at once, on every node
    (the limits are counted in the store)."""
    if args.ip is None and args.user is None:
        raise AdminError("give --ip ADDRESS, --user NAME or both", EXIT_USAGE)
    ip = None if args.ip is None else address_key(args.ip)

    async def main() -> int:
        async with opened(args) as store:
            return await store.clear_login_failures(ip=ip, username=args.user)

    cleared = asyncio.run(main())
    audit("admin.limits_clear", ip=ip, user=args.user, cleared=cleared)
    print(f"cleared {cleared} failed login{'s' if cleared != 1 else ''}")
    return EXIT_OK
