"""PostgreSQL and several nodes for the load generator (issue 17).

- :func:`fresh_database`: a database of its own for one run, created beside the one a
  URL names and dropped afterwards.
- :class:`PgWatch`: what PostgreSQL does during a measured stretch: the CPU of the
  backends serving the run's database (from /proc, so PostgreSQL must run on this
  machine), the shared writer processes' CPU (WAL writer, checkpointer, background
  writer: shared with anything else on the server), commits (``pg_stat_database``) and
  the NOTIFYs the nodes send on the bus channel, counted by an extra listener.
- :func:`node_of`: which node a user connects to when the nodes listen on ports of
  their own.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql

from chatd.store import factory as store_factory

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LISTEN_POLL = 0.5  # seconds between the listener thread's looks at its stop flag
SHARED_BACKENDS = ("walwriter", "checkpointer", "background writer", "autovacuum launcher")


def is_postgres(url: str | None) -> bool:
    """Whether ``--db`` names PostgreSQL (None: the SQLite file of the data dir)."""
    return url is not None and store_factory.is_postgres(url)


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def fresh_database(url: str, name: str) -> Iterator[str]:
    """Create database ``name`` on the server of ``url``; yields its URL; drops it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def node_of(index: int, workers: int, nodes: int) -> int:
    """The node of a group's ``index``-th user. Users are dealt to the workers
    round-robin (``bench.load.split``), so the node steps with every round: each worker
    holds users of every node, and its random pairs cross nodes with chance
    ``(nodes - 1) / nodes`` (about half with two nodes)."""
    return (index // max(1, workers)) % max(1, nodes)


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


class PgWatch:
    """PostgreSQL's side of a run on database ``url`` and bus channel ``channel``."""

    def __init__(self, url: str, channel: str = "chat") -> None:
        self.url = url
        self.channel = channel
        self._conn = psycopg.connect(url, autocommit=True, application_name="bench-pgwatch")
        self._own = {self._conn.info.backend_pid}
        self.notifies: Counter[str] = Counter()  # the events notified, by kind
        self.notifications = 0  # the notifications that carried them (several when packed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="bench-listen", daemon=True)
        self._thread.start()
        if not self._listening.wait(10):
            raise RuntimeError("the bench's NOTIFY listener did not start")

    def _listen(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-listen") as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            with self._lock:
                self._own.add(conn.info.backend_pid)
            self._listening.set()
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=LISTEN_POLL):
                    kinds = _event_kinds(notify.payload)
                    with self._lock:
                        self.notifications += 1
                        self.notifies.update(kinds)

    def sample(self) -> dict[str, Any]:
        """Backends' CPU by pid, the shared processes' CPU, commits and NOTIFYs so far."""
        rows = self._conn.execute(
            "SELECT pid, backend_type, datname = current_database() FROM pg_stat_activity"
        ).fetchall()
        commits = self._conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        with self._lock:
            own = set(self._own)
            notifies = dict(self.notifies)
            notifications = self.notifications
        backends: dict[int, float] = {}
        shared = 0.0
        for pid, kind, ours in rows:
            if pid in own:
                continue
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            if ours:
                backends[pid] = cpu
            elif kind in SHARED_BACKENDS:
                shared += cpu
        return {
            "at": time.monotonic(),
            "backends": backends,
            "shared": shared,
            "commits": int(commits[0]) if commits else 0,
            "notifies": notifies,
            "notifications": notifications,
        }

    @staticmethod
    def between(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        """What PostgreSQL did from sample ``first`` to sample ``last``. A backend that
        started meanwhile counts whole; one that ended meanwhile is missed (the nodes'
        pools keep theirs open, so that is rare)."""
        wall = max(1e-9, last["at"] - first["at"])
        before = first["backends"]
        backend = sum(cpu - before.get(pid, 0.0) for pid, cpu in last["backends"].items())
        shared = last["shared"] - first["shared"]
        commits = last["commits"] - first["commits"]
        kinds = {
            kind: count - first["notifies"].get(kind, 0)
            for kind, count in sorted(last["notifies"].items())
        }
        events = sum(kinds.values())
        notifications = last["notifications"] - first["notifications"]
        return {
            "backends": len(last["backends"]),
            "backend_cpu_s": round(backend, 2),
            "backend_pct_of_one_core": round(100 * backend / wall, 1),
            "shared_cpu_s": round(shared, 2),
            "commits": commits,
            "commits_per_s": round(commits / wall, 1),
            "notifies": notifications,
            "notifies_per_s": round(notifications / wall, 1),
            "notified_events": events,
            "notifies_by_kind": {k: v for k, v in kinds.items() if v},  # events, by kind
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(LISTEN_POLL * 4 + 5)
        self._conn.close()


def _event_kinds(payload: str) -> list[str]:
    """The kind tag of each event in a bus payload: one event, or several packed."""
    try:
        data = orjson.loads(payload)
        items = data.get("e", [data])
        return [str(item.get("k", "?")) for item in items]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return ["?"]
