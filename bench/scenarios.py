"""The load generator's scenario drivers: what one worker does with its users.

Each driver runs one command from the main process (``bench.load``) over the worker's
:class:`~bench.population.Population` and answers with one dict. Sender and recipient of
every pair live in the same worker, so send -> ack and send -> push latencies come from
one monotonic clock. Every loop here is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.ledger import Ledger, Record, Run
from bench.population import CONNECT_TIMEOUT, Population, User
from libchat.protocol import Send

BODY = "load test body " * 11  # 165 characters: a send frame of about 250 bytes
TICK = 0.005  # seconds between pacing steps of a stream
POLL = 0.02  # seconds between looks at a condition (drain, storm progress)


class Scenarios:
    """Steady streams, storm marking and storms, backlogs and login bursts."""

    def __init__(self, index: int, population: Population, ledger: Ledger) -> None:
        self.index = index
        self.population = population
        self.ledger = ledger
        self.loop = population.loop
        self.rng = population.rng

    # --- streams ---------------------------------------------------------------------

    async def stream(
        self, group: str, name: str, rate: float, duration: float, drain: float
    ) -> dict[str, Any]:
        """Send ``rate`` messages/s for ``duration`` s among fixed random pairs of the
        group, then wait up to ``drain`` s for every ack, push and receipt."""
        pairs = self.population.pairs_of(group)
        if not pairs:
            return {"error": f"group {group!r} has fewer than 2 users"}
        prefix = f"{name}{self.index}"
        run = Run(prefix)
        self.ledger.runs[prefix] = run
        body = BODY
        loop = self.loop
        rng = self.rng
        started = loop.time()
        end = started + duration
        sent = 0
        while True:
            now = loop.time()
            if now >= end:
                break
            due = int(rate * (now - started)) - sent
            for _ in range(due):
                a, b = pairs[rng.randrange(len(pairs))]
                sender, recipient = (a, b) if rng.random() < 0.5 else (b, a)
                sent += 1
                client = sender.client
                if client is None or not client.is_welcomed or not recipient.is_live:
                    run.skipped += 1  # a pair with a side still (re)connecting
                    continue
                message_id = f"{prefix}-{sent}"
                run.records[message_id] = Record(time.monotonic())  # see data_received
                client.send(Send(id=message_id, to=recipient.name, body=body))
            await asyncio.sleep(TICK)
        sending_s = loop.time() - started
        drain_end = loop.time() + drain
        while run.pending() and loop.time() < drain_end:
            await asyncio.sleep(POLL * 5)
        del self.ledger.runs[prefix]
        summary = run.summary()
        summary["sending_s"] = sending_s
        summary["pairs"] = len(pairs)
        summary["cross_node_pairs"] = sum(1 for a, b in pairs if a.port != b.port)
        return summary

    # --- storm -----------------------------------------------------------------------

    async def mark(self, group: str, timeout: float) -> dict[str, Any]:
        """Give every user of the group one pushed but unconfirmed message (sent by its
        pair partner), so that its next connection must catch up on it."""
        users = self.population.groups.get(group, [])
        prefix = f"mark{self.index}"
        run = Run(prefix)
        self.ledger.runs[prefix] = run
        awaited: dict[str, User] = {}
        for user in users:
            user.withhold = True
        for index, user in enumerate(users):
            partner = users[index - 1] if index % 2 else users[(index + 1) % len(users)]
            if partner.client is None or not partner.client.is_welcomed:
                continue
            message_id = f"{prefix}-{index}"
            run.records[message_id] = Record(time.monotonic())
            awaited[message_id] = user
            partner.client.send(Send(id=message_id, to=user.name, body="mark"))
            if index % 200 == 199:
                await asyncio.sleep(0)  # let acks and pushes flow
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline:
            if all(run.records[i].pushed_at for i in awaited):
                break
            await asyncio.sleep(POLL)
        marked = 0
        for message_id, user in awaited.items():
            record = run.records[message_id]
            if record.pushed_at:
                user.awaited_seq = record.push_seq
                user.caught_up_at = 0.0
                marked += 1
        del self.ledger.runs[prefix]
        return {"marked": marked, "users": len(users)}

    async def storm(self, group: str, timeout: float) -> dict[str, Any]:
        """Drop every connection of the group at once; each user reconnects with
        libchat's backoff. Reports when each was welcomed and caught up again."""
        users = self.population.groups.get(group, [])
        loop = self.loop
        connect_once = self.population.connect_once
        dropped_at = loop.time()
        for user in users:
            user.withhold = False
            if user.client is not None:
                user.client.abort()
                user.client = None
                user.welcomed.clear()
            user.backoff.disconnected(dropped_at)
        deadline = dropped_at + timeout
        welcome_s: list[float] = []
        attempts = 0

        async def back(user: User) -> None:
            nonlocal attempts
            while loop.time() < deadline:
                await asyncio.sleep(min(user.backoff.next_delay(), deadline - loop.time()))
                attempts += 1
                if await connect_once(user, min(CONNECT_TIMEOUT, deadline - loop.time())):
                    welcome_s.append(user.welcomed_at - dropped_at)
                    return
                user.backoff.disconnected(loop.time())

        await asyncio.gather(*(back(user) for user in users))
        while loop.time() < deadline:
            if all(user.caught_up_at or user.awaited_seq < 0 for user in users):
                break
            await asyncio.sleep(POLL)
        caught = [user.caught_up_at - dropped_at for user in users if user.caught_up_at]
        return {
            "users": len(users),
            "welcomed": len(welcome_s),
            "caught_up": len(caught),
            "awaited": sum(1 for user in users if user.awaited_seq >= 0),
            "attempts": attempts,
            "welcome_s": welcome_s,
            "caught_up_s": caught,
        }

    # --- backlog ---------------------------------------------------------------------

    async def backlog(self, name: str, token: str, expected: int, timeout: float) -> dict[str, Any]:
        """Connect one user with ``expected`` queued messages; time until all arrive."""
        loop = self.loop
        user = User(name, token, random.Random(1))
        arrived: list[float] = []
        user.on_push = lambda _user, _message, now: arrived.append(now)
        started = loop.time()
        if not await self.population.connect_once(user, timeout):
            return {"error": "the backlog user could not connect"}
        welcomed = loop.time()
        deadline = started + timeout
        while len(arrived) < expected and loop.time() < deadline:
            await asyncio.sleep(POLL / 4)
        done = arrived[-1] if arrived else loop.time()
        if user.client is not None:
            user.client.abort()
        return {
            "received": len(arrived),
            "expected": expected,
            "welcome_s": welcomed - started,
            "all_s": done - started,
            "first_s": (arrived[0] - started) if arrived else None,
        }

    # --- logins ----------------------------------------------------------------------

    async def logins(
        self, usernames: list[str], password: str, rate: float, duration: float
    ) -> dict[str, Any]:
        """``rate`` logins/s for ``duration`` s, each on its own connection."""
        loop = self.loop
        login = self.population.login
        started = loop.time()
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        tasks: list[asyncio.Task[None]] = []

        async def one(username: str) -> None:
            begun = loop.time()
            status = await login(username, password, 30.0)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append((loop.time() - begun) * 1000)

        count = 0
        while loop.time() - started < duration:
            due = int(rate * (loop.time() - started)) - count
            for _ in range(due):
                tasks.append(loop.create_task(one(usernames[count % len(usernames)])))
                count += 1
            await asyncio.sleep(TICK * 4)
        await asyncio.gather(*tasks)
        return {
            "attempted": count,
            "statuses": {str(code): n for code, n in statuses.items()},
            "login_ms": latencies,
            "seconds": loop.time() - started,
        }
