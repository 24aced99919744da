"""The HTTP side of the contract: one coroutine per typed request event from the engine.

The engine has already routed and validated the request (path, method, body shape,
query, bearer header); this module decides what the answer is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatd.accounts import Accounts, Unauthorized
from chatd.observe.context import set_user
from chatd.observe.health import HealthMonitor
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.reply import UNAUTHORIZED, Reply
from chatd.store import Store, StoreError, StoreUnavailable, User
from chatd.users import UserDirectory
from libchat import events as ev
from libchat import limits
from libchat.protocol import (
    Conversation,
    ConversationList,
    MessagePage,
    UserEntry,
    UserList,
)

if TYPE_CHECKING:
    from chatd.config import Config

log = EventLogger(logging.getLogger(__name__))

HEALTH_BOUND = 1.0  # seconds /healthz waits for the store: a store that slow is down
INTERNAL_ERROR = Reply.error(500, "internal_error", "the server could not do that; try again")
STORE_RETRY_AFTER_S = 2  # what a request answered while the store is down is told to wait
STORE_UNAVAILABLE = Reply.error(
    503, "server_busy", "the server cannot reach its database now; try again later",
    Retry_After=str(STORE_RETRY_AFTER_S),
)


class HttpApi:
    def __init__(
        self,
        config: Config,
        store: Store,
        users: UserDirectory,
        accounts: Accounts,
        metrics: Metrics,
        health: HealthMonitor,
        connection_count: Callable[[], int],
    ) -> None:
        self._config = config
        self._store = store
        self._users = users
        self._accounts = accounts
        self._metrics = metrics
        self._health = health
        self._connection_count = connection_count

    async def handle(self, request: object, ip: str) -> Reply:
        try:
            reply = await self._dispatch(request, ip)
        except Unauthorized:
            reply = UNAUTHORIZED
        except StoreUnavailable:  # the store logs the outage, once
            return STORE_UNAVAILABLE
        except StoreError:
            log.exception("store.error", op=type(request).__name__)
            return INTERNAL_ERROR
        except Exception:  # a bug: answer 500 rather than leave the client hanging
            log.exception("http.handler_failed", op=type(request).__name__)
            return INTERNAL_ERROR
        if reply is UNAUTHORIZED:  # a missing, bad, expired or revoked token
            self._refuse_token(ip, type(request).__name__)
        return reply

    async def _me(self, token: str) -> User:
        """The token's user, also named in the error events of this request."""
        me = (await self._accounts.authenticate(token)).user
        set_user(me.id)
        return me

    def _refuse_token(self, ip: str, op: str) -> None:
        self._metrics.refusals.record(log, "token.refused", key=ip, level=logging.INFO,
                                      ip=ip, op=op)

    async def _dispatch(self, request: object, ip: str) -> Reply:
        accounts = self._accounts
        match request:
            case ev.RegisterRequest(credentials=credentials):
                return await accounts.register(credentials, ip)
            case ev.LoginRequest(credentials=credentials):
                return await accounts.login(credentials, ip)
            case ev.LogoutRequest(token=token):
                return await accounts.logout(token)
            case ev.RefreshRequest(token=token, rotate=rotate):
                return await accounts.refresh(token, rotate=rotate)
            case ev.UserSearchRequest(token=token, prefix=prefix):
                me = await self._me(token)
                names = await self._store.search_users(
                    prefix.lower(), me.username, limits.MAX_USERS_PER_SEARCH
                )
                return Reply(200, UserList(users=[UserEntry(username=n) for n in names]))
            case ev.ConversationsRequest(token=token):
                me = await self._me(token)
                rows = await self._store.conversations(me.id)
                return Reply(200, ConversationList(conversations=[
                    Conversation(peer=peer, last_message=last, unread=unread)
                    for peer, last, unread in rows
                ]))
            case ev.HistoryRequest(token=token, peer=peer_name, before=before, limit=limit):
                me = await self._me(token)
                peer = await self._users.by_name(peer_name)
                if peer is None:
                    return Reply.error(404, "unknown_user", f"no user {peer_name!r}")
                messages, has_more = await self._store.history(me.id, peer.id, before, limit)
                return Reply(200, MessagePage(messages=messages, has_more=has_more))
            case ev.HealthRequest():
                return await self.health()
            case ev.MetricsRequest():
                if self._config.metrics_listen is not None:  # served there, not here
                    return Reply.error(404, "not_found", "no such path: /metrics")
                return Reply(200, self._metrics.render(),
                             content_type="text/plain; version=0.0.4; charset=utf-8")
        raise AssertionError(f"unrouted request {request!r}")  # pragma: no cover

    async def health(self) -> Reply:
        try:
            await asyncio.wait_for(self._store.ping(), HEALTH_BOUND)
            db_ok = True
        except (StoreError, TimeoutError):
            db_ok = False
        count = self._connection_count()
        status, body = self._health.status(
            connections=count, db_ok=db_ok, last_commit_seconds=self._health.last_commit_seconds
        )
        return Reply(status, body)

    async def check_upgrade(self, request: ev.UpgradeRequest, ip: str) -> Reply | None:
        """None to accept the upgrade, else the refusal."""
        if request.origin is not None and request.origin not in self._config.allowed_origins:
            self._metrics.refusals.record(log, "origin.refused", key=ip, ip=ip,
                                          origin=request.origin)
            return Reply.error(403, "origin_not_allowed", "this Origin may not open a WebSocket")
        if request.token is not None:
            try:
                await self._accounts.authenticate(request.token)
            except Unauthorized:
                self._refuse_token(ip, type(request).__name__)
                return UNAUTHORIZED
            except StoreUnavailable:
                return STORE_UNAVAILABLE
            except StoreError:
                log.exception("store.error", op=type(request).__name__)
                return INTERNAL_ERROR
        return None
