"""The PostgreSQL store: psycopg 3 async, a connection pool, group commit for messages.

Several chatd nodes may share one database (and one schema). Reads go straight to pooled
connections; message inserts go through one writer task per node that puts every submit
queued since its last commit into one transaction, and resolves the submitters' futures
only after COMMIT.

The parts, one job each:

- :mod:`~chatd.store.postgres.store`: :class:`PostgresStore`, the face: lifecycle, and
  each query handed to its group;
- :mod:`~chatd.store.postgres.schema`: the migrations and the version check;
- :mod:`~chatd.store.postgres.pool`: the pool, and queries bounded in time (outages);
- :mod:`~chatd.store.postgres.writer`: the batch writer of messages (group commit);
- query groups: :mod:`~chatd.store.postgres.users`, :mod:`~chatd.store.postgres.tokens`,
  :mod:`~chatd.store.postgres.logins`, :mod:`~chatd.store.postgres.messages`,
  :mod:`~chatd.store.postgres.keys`; :mod:`~chatd.store.postgres.columns`, the column
  lists they share.
"""

from chatd.store.postgres.schema import MIGRATE_LOCK, MIGRATIONS, SCHEMA_VERSION
from chatd.store.postgres.store import PostgresStore
from chatd.store.postgres.writer import INSERT_LOCK

__all__ = ["INSERT_LOCK", "MIGRATE_LOCK", "MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]
