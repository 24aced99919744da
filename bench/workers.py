"""The load generator's worker process: many simulated users on one uvloop.

Each worker owns a share of the simulated users (:mod:`bench.population`), the accounting
of what they send (:mod:`bench.ledger`) and the drivers that load them
(:mod:`bench.scenarios`). The main process (``bench.load``) sends it commands over a
pipe; each command runs as a task and answers with one dict, so a side stream and a
storm can run at the same time.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from bench.ledger import Ledger
from bench.population import Population
from bench.scenarios import Scenarios

Handler = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Worker:
    """One process's command loop: reads commands from the pipe, runs, answers."""

    def __init__(self, index: int, host: str, pipe: Connection, seed: int) -> None:
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.ledger = Ledger()
        self.population = Population(host, random.Random(seed), self.ledger, self.loop)
        scenarios = Scenarios(index, self.population, self.ledger)
        self.handlers: dict[str, Handler] = {
            "connect": self.population.connect,
            "disconnect": self.population.disconnect,
            "count": self.population.count,
            "stream": scenarios.stream,
            "mark": scenarios.mark,
            "storm": scenarios.storm,
            "backlog": scenarios.backlog,
            "logins": scenarios.logins,
        }
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        """Read commands until ``exit``; each runs as a task and answers by its tag."""
        self.loop.add_reader(self.pipe.fileno(), self._on_command)
        os.set_blocking(self.pipe.fileno(), True)  # the loop made it non-blocking: replies are big
        await self._done.wait()
        self.loop.remove_reader(self.pipe.fileno())
        self.population.abort_all()

    def _on_command(self) -> None:
        while self.pipe.poll():
            tag, name, params = self.pipe.recv()
            if name == "exit":
                self._done.set()
                return
            task = self.loop.create_task(self._run_command(tag, name, params))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_command(self, tag: int, name: str, params: dict[str, Any]) -> None:
        handler = self.handlers[name]
        try:
            reply = await handler(**params)
        except Exception as exc:  # reported to the main process, which fails the run
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        self.pipe.send((tag, reply))


def worker_main(index: int, host: str, pipe: Connection, seed: int) -> None:
    """A worker process's entry point (``multiprocessing`` target)."""
    import uvloop

    raise_nofile_limit()

    async def main() -> None:
        worker = Worker(index, host, pipe, seed)
        await worker.serve()

    uvloop.run(main())
    pipe.close()
