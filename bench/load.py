"""The load generator: ``python -m bench.load SCENARIO... [options]``.

It creates its users (one shared argon2 hash, written straight into the store) and mints
their tokens in-process, starts a chatd on loopback (or targets one with ``--url`` and
that server's ``--data-dir``), spreads the simulated users over worker processes
(:mod:`bench.workers`, uvloop, one ``asyncio.Protocol`` per connection around libchat's
client engine) and runs the scenarios of issue 5:

- ``capacity``: N idle authenticated connections; server RSS and CPU while idle.
- ``steady``: R msg/s among random pairs for T s (after a warm-up of W s at the same rate,
  reported apart); ack and push latency, lost, duplicates.
- ``saturation``: raise the rate step by step until p99 passes 1 s.
- ``backlog``: one user with K queued messages connects; time until all arrive.
- ``storm``: N clients dropped at once reconnect with libchat's backoff; a side stream
  runs meanwhile.
- ``logins``: logins/s (argon2 at the OWASP floor) while a steady stream runs.

Each scenario prints a table; ``--json PATH`` writes every result to one file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from bench.cluster import PgWatch, fresh_database, is_postgres, node_of
from bench.profile import Recording, print_summary, summarise
from bench.workers import raise_nofile_limit, worker_main
from libchat import __version__

if TYPE_CHECKING:
    from chatd.auth.keyring import Keyring

PASSWORD = "load-test-password"  # every bench user's password (logins need a real one)
START_TIMEOUT = 60.0  # seconds for chatd to print its listening line
REPLY_SLACK = 120.0  # seconds a worker may take beyond a command's own time bound
SATURATION_P99_MS = 1000.0  # the saturation knee: p99 of the whole exchange
SUSTAINED = 0.95  # a step counts as sustained when this share of its target was acked
SCENARIOS = ("capacity", "steady", "saturation", "backlog", "storm", "logins")
_LISTENING = re.compile(r"listening on (https?)://([\d.]+):(\d+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@attrs.frozen(kw_only=True)
class Params:
    """Every knob of a run; the presets are ``quick`` and ``full``."""

    users: int = 1000  # connected users of capacity, steady, saturation, logins, storm
    workers: int = 2  # load generator processes
    rate: float = 500.0  # msg/s of steady (and the stream beside logins)
    duration: float = 15.0  # seconds of steady
    warmup: float = 3.0  # seconds of steady's stream before its measured window (0: none)
    idle: float = 10.0  # seconds capacity watches the idle server
    sat_start: float = 1000.0  # msg/s of the first saturation step
    sat_factor: float = 1.5  # each step's rate over the previous one
    sat_step: float = 6.0  # seconds per saturation step
    sat_max: float = 40000.0  # no step above this rate
    backlog: int = 2000  # queued messages of the backlog user
    side_users: int = 100  # the side stream's users during the storm
    side_rate: float = 100.0  # msg/s of the side stream
    storm_window: float = 15.0  # seconds the storm may take (and the side stream runs)
    login_rate: float = 20.0  # logins/s
    login_duration: float = 10.0  # seconds of logins
    drain: float = 10.0  # seconds to wait for the last acks, pushes and receipts
    connect_concurrency: int = 200  # connection attempts in flight per worker
    sync: str = "full"  # chatd --sync when the load generator starts it


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": {
        "users": 10000,
        "rate": 2000.0,
        "duration": 60.0,
        "idle": 35.0,  # longer than one ping interval (30 s): every connection pinged once
        "sat_start": 2000.0,
        "sat_factor": 1.25,  # finer steps around the targets (6,000 and 10,000 msg/s)
        "sat_step": 10.0,
        "backlog": 10000,
        "side_rate": 200.0,
        "storm_window": 60.0,
        "login_duration": 20.0,
        "drain": 30.0,  # an overloaded step must finish before the next scenario starts
    },
}


# --- statistics ---------------------------------------------------------------------------


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max (nearest rank), in the unit of the values."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p95": None, "p99": None, "max": None}

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[index], 2)

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": round(ordered[-1], 2)}


# What steady reports of its warm-up stream (it counts in "0 lost, 0 duplicated" too).
_WARMUP_KEYS: Final = ("sent", "acked", "lost", "duplicates", "latency_ms")


def merge_streams(replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add up the workers' stream summaries; latencies become percentiles."""
    total: dict[str, Any] = {"errors": {}}
    for key in (
        "sent",
        "acked",
        "delivered",
        "receipts",
        "lost",
        "unacked",
        "duplicates",
        "skipped",
    ):
        total[key] = sum(reply[key] for reply in replies)
    for reply in replies:
        for code, count in reply["errors"].items():
            total["errors"][code] = total["errors"].get(code, 0) + count
    pairs = sum(reply.get("pairs", 0) for reply in replies)
    cross = sum(reply.get("cross_node_pairs", 0) for reply in replies)
    if cross:
        total["cross_node_pairs_pct"] = round(100 * cross / pairs, 1)
    sending = max(reply["sending_s"] for reply in replies)
    total["sending_s"] = round(sending, 2)
    total["throughput_msg_s"] = round(total["acked"] / sending, 1) if sending else 0.0
    total["latency_ms"] = {
        name: percentiles(v for reply in replies for v in reply[name + "_ms"])
        for name in ("ack", "push", "receipt")
    }
    return total


# --- the server process -----------------------------------------------------------------


class ProcessWatch:
    """CPU time and memory of one process, from /proc (Linux)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime

    def memory_mib(self) -> dict[str, float | None]:
        found: dict[str, float | None] = {"rss": None, "peak": None}
        if self.pid is None:
            return found
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return found
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found["rss" if name == "VmRSS" else "peak"] = round(int(value.split()[0]) / 1024, 1)
        return found


class Window:
    """Server (every node), PostgreSQL and load generator CPU over one measured
    stretch of time; ``server_cpu`` adds up the nodes, ``nodes_cpu`` has each one."""

    def __init__(
        self,
        servers: Sequence[ProcessWatch],
        workers: Sequence[ProcessWatch],
        pg: PgWatch | None = None,
    ) -> None:
        self.servers = servers
        self.workers = workers
        self.pg = pg
        self.pg_sample = pg.sample() if pg is not None else None
        self.started = time.monotonic()
        self.server_cpu = [s.cpu_seconds() for s in servers]
        self.worker_cpu = [w.cpu_seconds() or 0.0 for w in workers]

    def close(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        nodes: list[float | None] = []
        for server, before in zip(self.servers, self.server_cpu, strict=True):
            after = server.cpu_seconds()
            nodes.append(None if after is None or before is None else after - before)
        used = None if not nodes or None in nodes else sum(n or 0.0 for n in nodes)
        workers = sum(w.cpu_seconds() or 0.0 for w in self.workers) - sum(self.worker_cpu)
        memory = self.servers[0].memory_mib() if self.servers else {"rss": None, "peak": None}
        result: dict[str, Any] = {
            "server_rss_mib": memory["rss"],
            "server_peak_rss_mib": memory["peak"],
            "server_cpu": {
                "seconds": None if used is None else round(used, 2),
                "wall_s": round(wall, 2),
                "pct_of_one_core": None if used is None else round(100 * used / wall, 1),
            },
            "loadgen_cpu_s": round(workers, 2),
        }
        if len(self.servers) > 1:
            result["nodes_cpu_pct"] = [
                None if n is None else round(100 * n / wall, 1) for n in nodes
            ]
        if self.pg is not None and self.pg_sample is not None:
            result["postgres"] = PgWatch.between(self.pg_sample, self.pg.sample())
        return result


class Chatd:
    """A chatd started by the load generator (``python -m chatd serve --port 0``)."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        sync: str,
        *,
        db_url: str | None = None,
        port: int = 0,
        reuse_port: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.sync = sync
        self.db_url = db_url
        self.port = port
        self.reuse_port = reuse_port
        self.proc: subprocess.Popen[str] | None = None
        self.host = ""

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "chatd",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-dir",
            str(self.log_dir),
            "--sync",
            self.sync,
            # The generator paces every user itself: the anti-abuse limit stays out of it.
            "--send-rate",
            "1000",
            "--send-burst",
            "1000",
        ]
        if self.db_url is not None:
            command += ["--db", self.db_url]
        if self.reuse_port:
            command.append("--reuse-port")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        stderr = (self.log_dir / "chatd.stderr").open("w")
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        stderr.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if not ready:
                continue
            match = _LISTENING.search(self.proc.stdout.readline())
            if match:
                self.host = f"{match.group(2)}:{match.group(3)}"
                return
        self.stop()
        raise RuntimeError(f"chatd did not start; see {self.log_dir / 'chatd.stderr'}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- users and tokens -----------------------------------------------------------------


@attrs.frozen
class BenchUser:
    user_id: int
    name: str
    token: str


def password_hash() -> str:
    """One argon2id hash of :data:`PASSWORD` with chatd's own (OWASP floor) parameters,
    shared by every bench user: 10,000 users must not cost 10,000 hashes."""
    from chatd.auth import Passwords

    with ThreadPoolExecutor(1) as executor:
        passwords = Passwords(executor)
        return asyncio.run(passwords.hash(PASSWORD))


async def _create_users(
    data_dir: Path, db_url: str, names: Sequence[str], hashed: str, sync: str
) -> tuple[Keyring, list[tuple[int, str, int]]]:
    from chatd.auth.keys import key_source
    from chatd.store.factory import open_store

    store = open_store(db_url, sync=sync)
    await store.open()
    try:
        # The keyring chatd will load: the data dir's key file, or PostgreSQL's shared one.
        keyring = await key_source(store, data_dir, None).load()
        now_ms = int(time.time() * 1000)
        created: list[tuple[int, str, int]] = []
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            made = await asyncio.gather(*(store.create_user(n, hashed, now_ms) for n in chunk))
            for name, user in zip(chunk, made, strict=True):
                if user is None:  # from an earlier run on the same data dir
                    user = await store.user_by_name(name)
                    assert user is not None
                created.append((user.id, user.username, user.token_generation))
        return keyring, created
    finally:
        await store.close()


async def _queue_messages(
    db_url: str, sender: tuple[int, str], recipient: tuple[int, str], count: int, sync: str
) -> None:
    from chatd.store import NewMessage
    from chatd.store.factory import open_store

    store = open_store(db_url, sync=sync)
    await store.open()
    try:
        now_ms = int(time.time() * 1000)
        stamp = int(time.time())
        for start in range(0, count, 500):
            await store.submit(
                [
                    NewMessage(
                        sender_id=sender[0],
                        sender=sender[1],
                        recipient_id=recipient[0],
                        recipient=recipient[1],
                        client_id=f"bl{stamp}-{i}",
                        body="queued " * 20,
                        ts=now_ms,
                    )
                    for i in range(start, min(count, start + 500))
                ]
            )
    finally:
        await store.close()


def make_users(data_dir: Path, db_url: str, names: Sequence[str], sync: str) -> list[BenchUser]:
    """Create (or find) the users and mint a one-day token for each."""
    from chatd.auth import Tokens

    data_dir.mkdir(parents=True, exist_ok=True)
    keyring, created = asyncio.run(_create_users(data_dir, db_url, names, password_hash(), sync))
    tokens = Tokens(keyring, 86400)
    now = time.time()
    return [
        BenchUser(user_id, name, tokens.issue(user_id, generation, now).token)
        for user_id, name, generation in created
    ]


# --- the worker pool --------------------------------------------------------------------


class Pool:
    """The worker processes and their command pipes."""

    def __init__(self, count: int, host: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for index in range(count):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=worker_main, args=(index, host, theirs, 1000 + index), daemon=True
            )
            proc.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(proc)
        self._tags = 0
        self._inbox: dict[tuple[int, int], dict[str, Any]] = {}
        self.watches = [ProcessWatch(proc.pid) for proc in self.procs]

    def send(self, index: int, command: str, /, **params: Any) -> tuple[int, int]:
        self._tags += 1
        self.pipes[index].send((self._tags, command, params))
        return index, self._tags

    def collect(self, pending: Sequence[tuple[int, int]], timeout: float) -> list[dict[str, Any]]:
        """The replies to ``pending`` commands, in the same order (replies to other
        commands that arrive meanwhile wait in the inbox for their own ``collect``)."""
        deadline = time.monotonic() + timeout
        while any(key not in self._inbox for key in pending):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("a load generator worker did not answer in time")
            for pipe in wait(self.pipes, left):
                assert isinstance(pipe, Connection)
                tag, reply = pipe.recv()
                self._inbox[(self.pipes.index(pipe), tag)] = reply
        ordered = [self._inbox.pop(key) for key in pending]
        for reply in ordered:
            if "error" in reply:
                raise RuntimeError(f"worker: {reply['error']}")
        return ordered

    def all(
        self,
        command: str,
        wait_s: float,
        /,
        per_worker: Sequence[dict[str, Any]] | None = None,
        indices: Sequence[int] | None = None,
        **params: Any,
    ) -> list[dict[str, Any]]:
        """Run one command on every worker, or on those of ``indices`` (``per_worker``
        adds worker-specific params, in the same order) and wait up to ``wait_s`` for all
        the replies."""
        chosen = range(len(self.pipes)) if indices is None else indices
        pending = [
            self.send(i, command, **params, **(per_worker[n] if per_worker else {}))
            for n, i in enumerate(chosen)
        ]
        return self.collect(pending, wait_s)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send((0, "exit", {}))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` dealt into ``parts`` nearly equal lists."""
    return [list(items[i::parts]) for i in range(parts)]


# --- the run ----------------------------------------------------------------------------


class Bench:
    """One server, one worker pool, the users, and the scenarios run on them."""

    def __init__(
        self,
        params: Params,
        pool: Pool,
        server: ProcessWatch | Sequence[ProcessWatch],
        users: dict[str, list[BenchUser]],
        backlog: tuple[BenchUser, int] | None,
        *,
        pg: PgWatch | None = None,
        node_ports: Sequence[int] = (),
    ) -> None:
        self.p = params
        self.pool = pool
        self.servers = [server] if isinstance(server, ProcessWatch) else list(server)
        self.pg = pg
        # Nodes on ports of their own: each user is dealt to one (bench.cluster.node_of).
        self.node_ports = list(node_ports)
        self.users = users
        self.backlog_user = backlog
        self.connected: set[str] = set()
        # The storm's side stream has a worker of its own (the last one, when the pool
        # has more than ``params.workers``): the workers reconnecting 10,000 clients
        # would otherwise delay the stream's own reads and measure themselves.
        self.main_workers = list(range(params.workers))
        self.side_workers = list(range(params.workers, len(pool.pipes))) or self.main_workers

    def port_of(self, index: int, workers: int) -> int | None:
        """The port of the node a group's ``index``-th user (of ``workers``) connects to."""
        if len(self.node_ports) < 2:
            return None
        node = node_of(index, workers, len(self.node_ports))
        return self.node_ports[node]

    def workers_of(self, group: str) -> list[int]:
        return self.side_workers if group == "side" else self.main_workers

    def window(self) -> Window:
        return Window(self.servers, self.pool.watches, self.pg)

    def connect(self, group: str) -> dict[str, Any]:
        """Connect a group of users (once), spread over the workers."""
        if group in self.connected:
            return {}
        users = self.users[group]
        timeout = 60.0 + len(users) / 50
        started = time.monotonic()
        window = self.window()
        workers = self.workers_of(group)
        replies = self.pool.all(
            "connect",
            timeout + REPLY_SLACK,
            group=group,
            concurrency=self.p.connect_concurrency,
            timeout=timeout,
            indices=workers,
            per_worker=[
                {"users": [(u.name, u.token, self.port_of(i, len(workers))) for i, u in share]}
                for share in split(list(enumerate(users)), len(workers))
            ],
        )
        self.connected.add(group)
        failed = sum(r["failed"] for r in replies)
        if failed:
            raise RuntimeError(f"{failed} of {len(users)} users could not connect")
        return {
            "connected": sum(r["connected"] for r in replies),
            "connect_s": round(time.monotonic() - started, 2),
            "welcome_ms": percentiles(v for r in replies for v in r["welcome_ms"]),
            "connect_server_cpu_s": window.close()["server_cpu"]["seconds"],
        }

    def stream(self, group: str, name: str, rate: float, duration: float) -> dict[str, Any]:
        workers = self.workers_of(group)
        replies = self.pool.all(
            "stream",
            duration + self.p.drain + REPLY_SLACK,
            group=group,
            name=name,
            rate=rate / len(workers),
            duration=duration,
            drain=self.p.drain,
            indices=workers,
        )
        return merge_streams(replies)

    def start_stream(self, group: str, name: str, rate: float, duration: float) -> list[Any]:
        """Start a stream on every worker without waiting; collect the returned
        requests with ``self.pool.collect`` once the scenario's other work is done."""
        workers = self.workers_of(group)
        return [
            self.pool.send(
                i,
                "stream",
                group=group,
                name=name,
                rate=rate / len(workers),
                duration=duration,
                drain=self.p.drain,
            )
            for i in workers
        ]

    # --- scenarios ---------------------------------------------------------------------

    def capacity(self) -> dict[str, Any]:
        connect = self.connect("main")
        window = self.window()
        time.sleep(self.p.idle)  # the measurement itself: the server idles meanwhile
        return {
            "parameters": {"users": self.p.users, "idle_s": self.p.idle},
            **connect,
            **_empty_stream(),
            **window.close(),
        }

    def steady(self) -> dict[str, Any]:
        self.connect("main")
        warmup = None
        if self.p.warmup > 0:
            # Measured apart: every pair's first message, the pools' and the caches'
            # first use, right after every user connected (on a fresh database the
            # nodes' first seconds cost more: bench/RESULTS.md, issue 17)
            warm = self.stream("main", "sw", self.p.rate, self.p.warmup)
            warmup = {key: warm[key] for key in _WARMUP_KEYS}
        window = self.window()
        result = self.stream("main", "st", self.p.rate, self.p.duration)
        measured = window.close()
        cpu = measured["server_cpu"]["seconds"]
        per_message = None
        if cpu is not None and result["acked"]:
            per_message = round(1e6 * cpu / result["acked"])
        return {
            "parameters": {
                "users": self.p.users,
                "rate": self.p.rate,
                "duration_s": self.p.duration,
                "warmup_s": self.p.warmup,
            },
            **result,
            **measured,
            "server_cpu_us_per_msg": per_message,
            "warmup": warmup,
        }

    def saturation(self) -> dict[str, Any]:
        self.connect("main")
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        rate = self.p.sat_start
        while rate <= self.p.sat_max and len(steps) < 20:
            window = self.window()
            result = {
                "rate": rate,
                **self.stream("main", f"sa{len(steps)}", rate, self.p.sat_step),
                **window.close(),
            }
            cpu = result["server_cpu"]["seconds"]
            result["msgs_per_server_cpu_s"] = round(result["acked"] / cpu) if cpu else None
            p99 = result["latency_ms"]["receipt"]["p99"]
            sustained = (
                result["acked"] >= SUSTAINED * rate * self.p.sat_step
                and result["lost"] == 0
                and result["duplicates"] == 0
                and p99 is not None
                and p99 < SATURATION_P99_MS
            )
            result["sustained"] = sustained
            steps.append(result)
            _print_step(result)
            if not sustained:
                break
            best = result
            rate = round(rate * self.p.sat_factor, -2)
        summary = best or steps[-1]
        return {
            "parameters": {
                "users": self.p.users,
                "start": self.p.sat_start,
                "factor": self.p.sat_factor,
                "step_s": self.p.sat_step,
                "sync": self.p.sync,
            },
            "best_sustained_rate": best["rate"] if best else None,
            **{
                k: summary[k]
                for k in (
                    "sent",
                    "acked",
                    "delivered",
                    "receipts",
                    "lost",
                    "duplicates",
                    "throughput_msg_s",
                    "latency_ms",
                    "server_rss_mib",
                    "server_cpu",
                    "msgs_per_server_cpu_s",
                    "loadgen_cpu_s",
                )
            },
            "steps": [{k: v for k, v in s.items() if k != "errors"} for s in steps],
        }

    def backlog(self) -> dict[str, Any]:
        if self.backlog_user is None:
            raise RuntimeError("no backlog user was prepared")
        user, count = self.backlog_user
        window = self.window()
        pending = [
            self.pool.send(
                0, "backlog", name=user.name, token=user.token, expected=count, timeout=60.0
            )
        ]
        reply = self.pool.collect(pending, 60.0 + REPLY_SLACK)[0]
        return {
            "parameters": {"queued": count},
            **_empty_stream(),
            "delivered": reply["received"],
            "lost": count - reply["received"],
            "welcome_s": round(reply["welcome_s"], 3),
            "first_s": None if reply["first_s"] is None else round(reply["first_s"], 3),
            "all_received_s": round(reply["all_s"], 3),
            "throughput_msg_s": round(reply["received"] / reply["all_s"], 1)
            if reply["all_s"]
            else 0.0,
            **window.close(),
        }

    def storm(self) -> dict[str, Any]:
        self.connect("main")
        self.connect("side")
        marks = self.pool.all(
            "mark", 120.0 + REPLY_SLACK, group="main", timeout=120.0, indices=self.main_workers
        )
        window = self.window()
        side_duration = self.p.storm_window
        side = self.start_stream("side", "sd", self.p.side_rate, side_duration)
        time.sleep(1.0)  # the side stream runs alone for its first second: a baseline
        storm = [
            self.pool.send(i, "storm", group="main", timeout=self.p.storm_window)
            for i in self.main_workers
        ]
        storm_replies = self.pool.collect(storm, self.p.storm_window + REPLY_SLACK)
        side_result = merge_streams(self.pool.collect(side, side_duration + REPLY_SLACK))
        welcome = [v for r in storm_replies for v in r["welcome_s"]]
        caught = [v for r in storm_replies for v in r["caught_up_s"]]
        return {
            "parameters": {
                "users": self.p.users,
                "side_users": self.p.side_users,
                "side_rate": self.p.side_rate,
            },
            "marked": sum(r["marked"] for r in marks),
            "welcomed": len(welcome),
            "caught_up": len(caught),
            "reconnect_attempts": sum(r["attempts"] for r in storm_replies),
            "all_welcomed_s": round(max(welcome), 2) if welcome else None,
            "all_caught_up_s": round(max(caught), 2) if caught else None,
            "welcome_s": percentiles(welcome),
            **side_result,
            **window.close(),
        }

    def logins(self) -> dict[str, Any]:
        self.connect("main")
        names = [u.name for u in self.users["main"]]
        window = self.window()
        duration = self.p.login_duration
        stream = self.start_stream("main", "lg", self.p.rate, duration)
        login = [
            self.pool.send(
                0,
                "logins",
                usernames=names,
                password=PASSWORD,
                rate=self.p.login_rate,
                duration=duration,
            )
        ]
        login_reply = self.pool.collect(login, duration + REPLY_SLACK)[0]
        result = merge_streams(self.pool.collect(stream, duration + self.p.drain + REPLY_SLACK))
        ok = login_reply["statuses"].get("200", 0)
        return {
            "parameters": {
                "users": self.p.users,
                "rate": self.p.rate,
                "login_rate": self.p.login_rate,
                "duration_s": duration,
            },
            "logins_ok": ok,
            "login_statuses": login_reply["statuses"],
            "logins_per_s": round(ok / login_reply["seconds"], 1),
            "login_attempts_per_s": round(login_reply["attempted"] / duration, 1),
            "login_ms": percentiles(login_reply["login_ms"]),
            **result,
            **window.close(),
        }


def _empty_stream() -> dict[str, Any]:
    nothing = percentiles(())
    return {
        "sent": 0,
        "acked": 0,
        "delivered": 0,
        "lost": 0,
        "duplicates": 0,
        "throughput_msg_s": 0.0,
        "latency_ms": {"ack": nothing, "push": nothing},
    }


# --- output -----------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _print_step(step: dict[str, Any]) -> None:
    lat = step["latency_ms"]
    print(
        f"  step {step['rate']:>8,.0f} msg/s: acked {step['acked']:,} "
        f"({step['throughput_msg_s']:,.0f}/s)  p99 ack {_fmt(lat['ack']['p99'])} "
        f"push {_fmt(lat['push']['p99'])} receipt {_fmt(lat['receipt']['p99'])} ms  "
        f"server cpu {_fmt(step['server_cpu']['pct_of_one_core'])}%  "
        f"{_fmt(step['msgs_per_server_cpu_s'])} msg/cpu-s  lost {step['lost']}",
        flush=True,
    )


def print_table(result: dict[str, Any]) -> None:
    """One scenario's figures as a two-column table, then its latencies."""
    rows: list[tuple[str, str]] = []
    for key, value in result.items():
        if key in ("latency_ms", "steps", "scenario", "profile") or value == {}:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
        rows.append((key, _fmt(value)))
    width = max(len(k) for k, _ in rows)
    print(f"\n== {result['scenario']} ==")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    latency = result.get("latency_ms", {})
    if any(v.get("p50") is not None for v in latency.values()):
        print(f"  {'latency ms':<{width}}  {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
        for name, values in latency.items():
            cells = " ".join(f"{_fmt(values[k]):>8}" for k in ("p50", "p95", "p99", "max"))
            print(f"  {'  ' + name:<{width}}  {cells}")
    sys.stdout.flush()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "chatd": __version__,
    }


# --- entry point ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "scenarios",
        nargs="+",
        metavar="SCENARIO",
        choices=[*SCENARIOS, "all"],
        help=f"{', '.join(SCENARIOS)} or all",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="quick (1,000 users, the defaults) or full (10,000 users)",
    )
    parser.add_argument("--url", help="target this running chatd (give its --data-dir too)")
    parser.add_argument("--server-pid", type=int, help="with --url: its pid, for RSS and CPU")
    parser.add_argument(
        "--data-dir", type=Path, help="the server's data dir (default: a fresh temporary one)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    parser.add_argument(
        "--db",
        metavar="URL",
        help="run chatd on this PostgreSQL database (default: SQLite in the data dir)",
    )
    parser.add_argument(
        "--fresh-db",
        action="store_true",
        help="with --db: a new database beside it for this run, dropped afterwards",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        metavar="N",
        help="start N chatd nodes on --db, each on its own port with the users dealt "
        "among them (about half of each user's peers on another node with two)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="with --nodes: all nodes on one port (SO_REUSEPORT); the kernel picks",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy during each scenario (DIR/NAME.txt)",
    )
    for field in attrs.fields(Params):
        flag = "--" + field.name.replace("_", "-")
        kind = type(field.default)
        if field.name == "sync":
            parser.add_argument(flag, choices=["full", "normal"], default=None)
        else:
            parser.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper())
    return parser


def params_from(args: argparse.Namespace) -> Params:
    values = {k: v for k, v in PRESETS[args.preset].items() if k in attrs.fields_dict(Params)}
    for field in attrs.fields(Params):
        value = getattr(args, field.name)
        if value is not None:
            values[field.name] = value
    return Params(**values)


def run(
    scenarios: Sequence[str],
    params: Params,
    *,
    url: str | None = None,
    data_dir: Path | None = None,
    server_pid: int | None = None,
    json_path: Path | None = None,
    profile_dir: Path | None = None,
    quiet: bool = False,
    db: str | None = None,
    fresh_db: bool = False,
    nodes: int = 1,
    reuse_port: bool = False,
) -> list[dict[str, Any]]:
    """Prepare users, start (or target) chatd, run the scenarios; returns the results.

    ``db`` is a PostgreSQL URL (default: SQLite in the data dir); with ``fresh_db`` the
    run gets a database of its own beside it, dropped afterwards. ``nodes`` chatd
    processes share it: on ports of their own with the users dealt among them (about
    half of each user's peers on another node with two), or with ``reuse_port`` on one
    port that the kernel spreads connections over.
    """
    if nodes < 1:
        raise ValueError("--nodes must be at least 1")
    if (nodes > 1 or fresh_db) and not is_postgres(db):
        raise ValueError("--nodes and --fresh-db need --db postgresql://...")
    if url is not None and (nodes > 1 or fresh_db):
        raise ValueError("--url targets one running chatd: no --nodes or --fresh-db")
    tag = "b" + format(int(time.time()) % 1_000_000, "06d")
    with contextlib.ExitStack() as stack:
        if fresh_db:
            assert db is not None
            db = stack.enter_context(fresh_database(db, f"chatd_bench_{tag}"))
            if not quiet:
                print(f"fresh database {db}", flush=True)
        return _run(
            scenarios,
            params,
            tag,
            url=url,
            data_dir=data_dir,
            server_pid=server_pid,
            json_path=json_path,
            profile_dir=profile_dir,
            quiet=quiet,
            db=db,
            nodes=nodes,
            reuse_port=reuse_port,
        )


def _run(
    scenarios: Sequence[str],
    params: Params,
    tag: str,
    *,
    url: str | None,
    data_dir: Path | None,
    server_pid: int | None,
    json_path: Path | None,
    profile_dir: Path | None,
    quiet: bool,
    db: str | None,
    nodes: int,
    reuse_port: bool,
) -> list[dict[str, Any]]:
    raise_nofile_limit()  # the started chatd inherits it
    if "all" in scenarios:
        scenarios = SCENARIOS
    scratch = None  # the started nodes' logs and other data dirs
    if url is None:
        scratch = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
        data_dir = data_dir or scratch / "data"
    elif data_dir is None:
        raise ValueError("--url needs the server's --data-dir (to mint tokens)")
    db_url = db if db is not None else str(data_dir / "chatd.db")
    names = {
        "main": [f"{tag}u{i:05d}" for i in range(params.users)],
        "side": [f"{tag}s{i:04d}" for i in range(params.side_users if "storm" in scenarios else 0)],
        "backlog": [f"{tag}bl", f"{tag}bs"] if "backlog" in scenarios else [],
    }
    started = time.monotonic()
    made = make_users(data_dir, db_url, [n for group in names.values() for n in group], params.sync)
    by_name = {u.name: u for u in made}
    users = {group: [by_name[n] for n in group_names] for group, group_names in names.items()}
    backlog = None
    if users["backlog"]:
        target, sender = users["backlog"]
        asyncio.run(
            _queue_messages(
                db_url,
                (sender.user_id, sender.name),
                (target.user_id, target.name),
                params.backlog,
                params.sync,
            )
        )
        backlog = (target, params.backlog)
    if not quiet:
        print(f"prepared {len(made):,} users in {time.monotonic() - started:.1f} s", flush=True)
    servers: list[Chatd] = []
    pool = None
    pg = None
    results: list[dict[str, Any]] = []
    try:
        if scratch is not None:  # no --url: start the nodes
            port = 0
            for index in range(nodes):
                # Each node has a data dir (and lock) of its own; PostgreSQL holds the key.
                node_dir = data_dir if index == 0 else scratch / f"data-node{index}"
                chatd = Chatd(
                    node_dir,
                    scratch / ("logs" if index == 0 else f"logs-node{index}"),
                    params.sync,
                    db_url=db,
                    port=port,
                    reuse_port=reuse_port and nodes > 1,
                )
                servers.append(chatd)
                chatd.start()
                if reuse_port:
                    port = int(chatd.host.rpartition(":")[2])
            host = servers[0].host
            pids = [c.proc.pid if c.proc else None for c in servers]
        else:
            host = url.split("://", 1)[-1].rstrip("/")
            pids = [server_pid]
        separate = len(servers) > 1 and not reuse_port
        node_ports = [int(c.host.rpartition(":")[2]) for c in servers] if separate else []
        if not quiet and len(servers) > 1:
            how = "separate ports, users dealt among them" if separate else "--reuse-port"
            print(f"{len(servers)} nodes ({how}): {[c.host for c in servers]}", flush=True)
        if is_postgres(db):
            from chatd.bus import channel_for
            from chatd.store.factory import schema_from_url

            assert db is not None
            pg = PgWatch(db, channel_for(schema_from_url(db)))
        pool = Pool(params.workers + (1 if "storm" in scenarios else 0), host)
        watches = [ProcessWatch(pid) for pid in pids]
        bench = Bench(params, pool, watches, users, backlog, pg=pg, node_ports=node_ports)
        for name in scenarios:
            if not quiet:
                print(f"\nrunning {name} ...", flush=True)
            live = [pid for pid in pids if pid is not None]
            if profile_dir is not None and live:
                profile_dir.mkdir(parents=True, exist_ok=True)
                files = [
                    profile_dir / (f"{name}.txt" if n == 0 else f"{name}-node{n}.txt")
                    for n in range(len(live))
                ]
                with contextlib.ExitStack() as recordings:
                    for pid, stacks in zip(live, files, strict=True):
                        recordings.enter_context(Recording(pid, stacks))
                    result = {"scenario": name, **getattr(bench, name)()}
                result["profile"] = summarise(files[0])
            else:
                result = {"scenario": name, **getattr(bench, name)()}
            results.append(result)
            if not quiet:
                print_table(result)
                if "profile" in result:
                    print_summary(result["profile"])
    finally:
        if pool is not None:
            pool.close()
        for chatd in servers:
            chatd.stop()
        if pg is not None:
            pg.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if json_path is not None:
        setup = {
            "db": "postgresql" if is_postgres(db) else "sqlite",
            "nodes": max(1, len(servers)),
            "reuse_port": reuse_port and len(servers) > 1,
        }
        json_path.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "params": attrs.asdict(params),
                    "setup": setup,
                    "results": results,
                },
                indent=2,
            )
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = params_from(args)
    run(
        args.scenarios,
        params,
        url=args.url,
        data_dir=args.data_dir,
        server_pid=args.server_pid,
        json_path=args.json,
        profile_dir=args.profile,
        db=args.db,
        fresh_db=args.fresh_db,
        nodes=args.nodes,
        reuse_port=args.reuse_port,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
