"""The SQLite store: apsw in WAL mode, one writer thread with group commit, a reader pool.

Every write becomes a job on the writer's queue; the writer thread commits every job
queued since its last commit in one transaction and wakes the event loop once for the
whole batch, so a coroutine that wrote returns only after the commit that holds its
write. Reads run on a small thread pool, each thread with its own connection; WAL lets
them proceed while the writer commits.

The parts, one job each:

- :mod:`~chatd.store.sqlite.store`: :class:`SqliteStore`, the face: lifecycle, and each
  query handed to its group;
- :mod:`~chatd.store.sqlite.schema`: the migrations and the version check;
- :mod:`~chatd.store.sqlite.writer`: the writer thread and group commit;
- :mod:`~chatd.store.sqlite.readers`: the read pool;
- :mod:`~chatd.store.sqlite.jobs`: jobs to the threads, results back to the loop;
- :mod:`~chatd.store.sqlite.db`: connections and small query helpers;
- query groups: :mod:`~chatd.store.sqlite.users`, :mod:`~chatd.store.sqlite.tokens`,
  :mod:`~chatd.store.sqlite.logins` (with :mod:`~chatd.store.sqlite.prune`),
  :mod:`~chatd.store.sqlite.messages`;
- :mod:`~chatd.store.sqlite.backup`: a consistent copy of the live file.
"""

from chatd.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from chatd.store.sqlite.store import SqliteStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore"]
