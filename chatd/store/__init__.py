"""Persistence for chatd: the :class:`Store` protocol and its implementations."""

from chatd.store.base import (
    NewMessage,
    ReadResult,
    Retirement,
    SchemaMismatch,
    Stats,
    Store,
    StoreError,
    User,
)

__all__ = [
    "NewMessage",
    "ReadResult",
    "Retirement",
    "SchemaMismatch",
    "Stats",
    "Store",
    "StoreError",
    "User",
]
