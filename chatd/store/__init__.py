"""Persistence for chatd: the :class:`Store` protocol and its implementations."""

from chatd.store.base import (
    LoginDecider,
    NewMessage,
    Queued,
    ReadResult,
    Retirement,
    SchemaMismatch,
    Stats,
    Store,
    StoreError,
    StoreUnavailable,
    User,
)

__all__ = [
    "LoginDecider",
    "NewMessage",
    "Queued",
    "ReadResult",
    "Retirement",
    "SchemaMismatch",
    "Stats",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "User",
]
