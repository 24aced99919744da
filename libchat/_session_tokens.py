"""The session's sign-in side: the session's state, and the token's life.

It logs in (registering first if asked), keeps the credentials to sign in again if the
server ever refuses the token, refreshes the token once ``refresh_share`` of its lifetime
has passed (rotating it), retries a failed refresh, and signs out. It hands each token
to the message side (:class:`~libchat._session_messages.Messages`), which opens and
reauths the WebSocket with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from libchat import limits, protocol
from libchat._session_messages import Messages
from libchat._session_transports import HttpCall, Request, Transport, Transports
from libchat._session_types import (
    REFRESH_MARGIN,
    SessionConfig,
    SessionEvent,
    SessionState,
    SignedIn,
    SignedOut,
    SignInFailed,
    TokenRefreshed,
    error_code,
    retry_after,
)
from libchat.backoff import Backoff
from libchat.events import HttpResponse
from libchat.states import LocalProtocolError

_log = logging.getLogger(__name__)


class Tokens:
    """Sign-in, the session's state, and the token's refresh; see the module docstring.

    Args:
        config: the session's configuration.
        transports: the table HTTP calls are opened in.
        messages: the message side, given every token (and told when there is none).
        backoff: the delays between attempts to sign in again (shared with reconnects).
        emit: reports an event to the application.
    """

    def __init__(
        self,
        config: SessionConfig,
        transports: Transports,
        messages: Messages,
        backoff: Backoff,
        emit: Callable[[SessionEvent], None],
    ) -> None:
        self._config = config
        self._transports = transports
        self._messages = messages
        self._backoff = backoff
        self._emit = emit
        self._state = SessionState.NEW
        self._credentials: protocol.Credentials | None = None  # to sign in again
        self._had_token = False  # a refused token makes a later login a sign-in *again*
        self._token: str | None = None
        self._refresh_at: float | None = None
        self._retry_at: float | None = None  # the next attempt to sign in again

    @property
    def state(self) -> SessionState:
        return self._state

    def next_deadline(self) -> float | None:
        due = [t for t in (self._refresh_at, self._retry_at) if t is not None]
        return min(due) if due else None

    def token_for_calls(self) -> str:
        """The token for an application's HTTP call; raises unless signed in."""
        if self._state is not SessionState.SIGNED_IN or self._token is None:
            raise LocalProtocolError(f"not signed in (state {self._state.value})")
        return self._token

    # --- the application's calls ---------------------------------------------------------------

    def sign_in(self, credentials: protocol.Credentials, now: float, *, register: bool) -> None:
        self._expect(SessionState.NEW, "sign_in")
        self._credentials = credentials
        self._state = SessionState.SIGNING_IN
        if register:
            self._http(lambda conn, t: conn.register(credentials, t), self._on_registered, now)
        else:
            self._login(now)

    def resume(self, token: str, expires_in: float, now: float) -> None:
        self._expect(SessionState.NEW, "resume")
        self._state = SessionState.SIGNED_IN
        self._use_token(token, expires_in, now)
        self._messages.connect(token, now)

    def sign_out(self, now: float) -> None:
        if self._state in (SessionState.SIGNED_OUT, SessionState.CLOSED):
            return
        token = self._token
        if self._state is SessionState.SIGNED_IN and token is not None:
            self._http(lambda conn, t: conn.logout(token, t), _ignore, now, token)
        self._finish(SessionState.SIGNED_OUT, now)
        self._emit(SignedOut(reason="signed out"))

    def close(self, now: float) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._finish(SessionState.CLOSED, now)
        self._transports.end_http("session closed", now)

    def handle_timer(self, now: float) -> None:
        """Sign in again, or refresh the token, when due."""
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._login(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._refresh(now)

    def _expect(self, state: SessionState, what: str) -> None:
        if self._state is not state:
            raise LocalProtocolError(f"cannot {what} in state {self._state.value}")

    def _http(
        self,
        request: Request,
        on_answer: Callable[[Transport, HttpResponse | None, str, float], None],
        now: float,
        token: str | None = None,
    ) -> None:
        self._transports.open_http(HttpCall(request, on_answer), token, now)

    # --- signing in -------------------------------------------------------------------------------

    def _login(self, now: float) -> None:
        credentials = self._credentials
        assert credentials is not None
        self._http(lambda conn, t: conn.login(credentials, t), self._on_login, now)

    def _on_registered(
        self, _call: Transport, response: HttpResponse | None, reason: str, now: float
    ) -> None:
        if self._state is not SessionState.SIGNING_IN:
            return  # signed out or closed meanwhile
        if response is not None and response.status == 201:
            self._login(now)
        else:
            self._sign_in_failed(response, reason, "register")

    def _on_login(
        self, _call: Transport, response: HttpResponse | None, reason: str, now: float
    ) -> None:
        if self._state is not SessionState.SIGNING_IN:
            return  # signed out or closed meanwhile
        grant = response.body if response is not None else None
        if (
            response is not None
            and response.status == 200
            and isinstance(grant, protocol.TokenGrant)
        ):
            self._state = SessionState.SIGNED_IN
            self._emit(
                SignedIn(
                    username=grant.username,
                    user_id=grant.user_id,
                    token=grant.token,
                    expires_in=grant.expires_in,
                )
            )
            self._use_token(grant.token, grant.expires_in, now)
            self._messages.connect(grant.token, now, username=grant.username)
        elif not self._had_token:
            self._sign_in_failed(response, reason, "login")  # the first sign-in
        elif response is None or response.status == 429 or response.status >= 500:
            # Signing in again after the token was refused: keep trying, as reconnects do.
            wait = max(self._backoff.next_delay(), retry_after(response) or 0.0)
            self._retry_at = now + wait
        else:
            self._end(SignedOut(reason=f"cannot sign in again: {error_code(response)}"), now)

    def _sign_in_failed(
        self, response: HttpResponse | None, reason: str, step: Literal["register", "login"]
    ) -> None:
        self._state = SessionState.NEW
        self._credentials = None
        if response is None:
            failure = SignInFailed(status=None, code="unreachable", message=reason, step=step)
        else:
            body = response.body
            if isinstance(body, protocol.ErrorBody):
                code, message = body.error.code, body.error.message
            else:
                code, message = f"http_{response.status}", f"the server answered {response.status}"
            failure = SignInFailed(
                status=response.status,
                code=code,
                message=message,
                retry_after=retry_after(response),
                step=step,
            )
        self._emit(failure)

    # --- the token ------------------------------------------------------------------------------

    def _use_token(self, token: str, expires_in: float, now: float) -> None:
        self._token = token
        self._had_token = True
        # ``expires_in`` counts whole seconds and servers may count the token's life from
        # the start of the second it was issued in: it can end up to a second sooner.
        # Refresh at the configured share of the lifetime, but never later than
        # REFRESH_MARGIN before the earliest moment it may end.
        lifetime = max(0.0, expires_in)
        self._refresh_at = now + max(
            0.0, min(lifetime * self._config.refresh_share, lifetime - 1.0 - REFRESH_MARGIN)
        )

    def _refresh(self, now: float) -> None:
        token = self._token
        if self._state is not SessionState.SIGNED_IN or token is None:
            return
        rotate = self._config.rotate_tokens
        self._http(
            lambda conn, t: conn.refresh(token, t, rotate=rotate), self._on_refreshed, now, token
        )

    def _on_refreshed(
        self, call: Transport, response: HttpResponse | None, _reason: str, now: float
    ) -> None:
        if self._state is not SessionState.SIGNED_IN or call.token != self._token:
            return  # signed out, or signed in again, meanwhile
        grant = response.body if response is not None else None
        if (
            response is not None
            and response.status == 200
            and isinstance(grant, protocol.TokenGrant)
        ):
            self._use_token(grant.token, grant.expires_in, now)
            self._emit(TokenRefreshed(token=grant.token, expires_in=grant.expires_in))
            self._messages.reauth(grant.token, now)
        elif response is not None and response.status == 401:
            self.token_refused(now)
        else:
            _log.debug("token refresh failed; retrying in %.0f s", self._config.refresh_retry)
            self._refresh_at = now + self._config.refresh_retry

    def token_refused(self, now: float) -> bool:
        """The server no longer takes the token: sign in again (returns True) if the
        session has the password, else end it with :class:`SignedOut` (False)."""
        self._token = None
        self._refresh_at = None
        self._messages.leave(limits.CLOSE_NORMAL, "token refused", now)
        if self._credentials is None:
            self._end(SignedOut(reason="the server refused the token"), now)
            return False
        self._state = SessionState.SIGNING_IN
        self._login(now)
        return True

    # --- the end --------------------------------------------------------------------------------

    def _end(self, event: SignedOut, now: float) -> None:
        self._finish(SessionState.SIGNED_OUT, now)
        self._emit(event)

    def _finish(self, state: SessionState, now: float) -> None:
        self._state = state
        self._credentials = None
        self._token = None
        self._refresh_at = self._retry_at = None
        if state is SessionState.SIGNED_OUT:
            self._messages.leave(limits.CLOSE_NORMAL, "signed out", now)
        else:
            self._messages.leave(limits.CLOSE_GOING_AWAY, "client closing", now)


def _ignore(_call: Transport, _response: HttpResponse | None, _reason: str, _now: float) -> None:
    """A logout's answer: nothing to do either way."""
