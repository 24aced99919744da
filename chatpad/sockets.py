"""Socket glue for one libchat :class:`~libchat.Session`: the transports it asks for, on
non-blocking sockets (plain TCP, or TLS for an ``https://`` server) in a shared selector.

Nothing here waits: connects are non-blocking, the TLS handshake is stepped whenever the
socket is ready and finished before the session hears ``transport_opened``, and writes
that do not fit in the socket's buffer are kept and finished when it is writable. So a
slow HTTP call or a stalled peer never holds up another transport.

Every selector key this module registers carries ``(host, transport_id)`` as its data;
the loop hands ready keys back with :meth:`SocketHost.ready`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import ssl
import time

import attrs

from libchat import CloseTransport, OpenTransport, Session, WriteTransport

__all__ = ["Server", "SocketHost"]

log = logging.getLogger(__name__)

READ_SIZE = 65536  # bytes per recv: a few frames
# What a non-blocking connect_ex answers while the connect goes on (Windows: WSAEWOULDBLOCK)
_IN_PROGRESS = {0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN,
                getattr(errno, "WSAEWOULDBLOCK", errno.EWOULDBLOCK)}


@attrs.frozen(kw_only=True)
class Server:
    """Where the transports go: ``https`` means TLS, with the system's trusted CAs."""

    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) \
            else f"{host}:{self.port}"


class _Stream:
    """One transport's socket and what is still to be written to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.outgoing = bytearray()
        self.stage = "connecting"  # then "handshaking" (TLS), then "open"
        self.wants = selectors.EVENT_WRITE  # what the selector waits for now


class SocketHost:
    """Carries out one session's transport actions and reports what its sockets did.

    Args:
        session: the session whose ``actions()`` this host carries out.
        selector: shared with the other hosts and the loop's wake-up socket.
        server: where every transport goes.
        tls: the TLS settings for an ``https`` server (default: the system's CAs).
    """

    def __init__(self, session: Session, selector: selectors.BaseSelector,
                 server: Server, tls: ssl.SSLContext | None = None) -> None:
        self.session = session
        self.selector = selector
        self.server = server
        self._streams: dict[int, _Stream] = {}
        self._address: tuple[int, tuple[str, int]] | None = None  # resolved once it works
        self._tls = tls

    def act(self) -> bool:
        """Do what the session asks, until it asks nothing more; True if it asked."""
        acted = False
        while actions := self.session.actions():
            acted = True
            closed = {a.id for a in actions if isinstance(a, CloseTransport)}
            for action in actions:
                if isinstance(action, OpenTransport):
                    if action.id not in closed:  # else given up already: never opened
                        log.debug("transport %d (%s): connecting to %s:%d", action.id,
                                  action.kind, self.server.host, self.server.port)
                        self._open(action.id)
                elif isinstance(action, WriteTransport):
                    self._write(action.id, action.data)
                elif isinstance(action, CloseTransport):
                    self._close(action.id)
        return acted

    def ready(self, tid: int, events: int) -> None:
        """The selector says transport ``tid``'s socket is ready for ``events``."""
        stream = self._streams.get(tid)
        if stream is None:
            return  # closed since the selector looked
        if stream.stage == "connecting":
            self._connected(tid, stream)
        elif stream.stage == "handshaking":
            self._handshake(tid, stream)
        else:
            if events & selectors.EVENT_READ and not self._read(tid, stream):
                return
            if events & selectors.EVENT_WRITE:
                self._flush(tid, stream)

    def close(self) -> None:
        """Close every socket at once (the loop is stopping)."""
        for tid in list(self._streams):
            self._forget(tid)

    # --- the actions --------------------------------------------------------------------

    def _open(self, tid: int) -> None:
        try:
            family, address = self._resolve()
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._report_closed(tid, f"cannot reach {self.server.host}: {exc}")
            return
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in _IN_PROGRESS:
            sock.close()
            self._report_closed(tid, os.strerror(code))
            return
        self._streams[tid] = _Stream(sock)
        self.selector.register(sock, selectors.EVENT_WRITE, (self, tid))

    def _resolve(self) -> tuple[int, tuple[str, int]]:
        """The server's address. Resolving a name may wait on DNS, so it is done once
        per session; an IP address (chatpad's usual case) resolves at once."""
        if self._address is None:
            info = socket.getaddrinfo(self.server.host, self.server.port,
                                      type=socket.SOCK_STREAM)[0]
            self._address = (info[0], (str(info[4][0]), int(info[4][1])))
        return self._address

    def _write(self, tid: int, data: bytes) -> None:
        stream = self._streams.get(tid)
        if stream is None:
            return
        stream.outgoing += data
        if stream.stage == "open":
            self._flush(tid, stream)

    def _close(self, tid: int) -> None:
        """Close after what was queued: what the socket takes at once (a close frame
        does); the rest of a stalled peer's bytes are dropped with it."""
        stream = self._streams.get(tid)
        if stream is not None:
            log.debug("transport %d: closed", tid)
        if stream is not None and stream.stage == "open" and stream.outgoing:
            with contextlib.suppress(OSError, ValueError):
                del stream.outgoing[:stream.sock.send(stream.outgoing)]
        self._forget(tid)

    # --- the sockets --------------------------------------------------------------------

    def _connected(self, tid: int, stream: _Stream) -> None:
        code = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._broken(tid, os.strerror(code))
            return
        if self.server.scheme != "https":
            self._opened(tid, stream)
            return
        self.selector.unregister(stream.sock)  # wrapping moves the descriptor
        try:
            stream.sock = self._context().wrap_socket(
                stream.sock, server_hostname=self.server.host, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            del self._streams[tid]
            stream.sock.close()
            self._report_closed(tid, f"TLS failed: {exc}")
            return
        stream.stage = "handshaking"
        self.selector.register(stream.sock, stream.wants, (self, tid))
        self._handshake(tid, stream)

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _handshake(self, tid: int, stream: _Stream) -> None:
        sock = stream.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(tid, stream, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(tid, stream, selectors.EVENT_WRITE)
            return
        except ssl.SSLError as exc:
            self._broken(tid, f"TLS handshake failed: {exc.reason or exc}")
            return
        except OSError as exc:
            self._broken(tid, f"TLS handshake failed: {exc.strerror or exc}")
            return
        self._opened(tid, stream)

    def _opened(self, tid: int, stream: _Stream) -> None:
        log.debug("transport %d: open%s", tid, " (TLS)" if self.server.scheme == "https" else "")
        stream.stage = "open"
        self._watch(tid, stream, selectors.EVENT_READ)
        self.session.transport_opened(tid, time.monotonic())
        self._flush(tid, stream)  # anything written meanwhile (the session writes later)

    def _read(self, tid: int, stream: _Stream) -> bool:
        """Read what is there; False if the transport ended."""
        sock = stream.sock
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except ssl.SSLZeroReturnError:
            data = b""
        except OSError as exc:
            self._broken(tid, exc.strerror or str(exc) or "read failed")
            return False
        if not data:
            self._broken(tid, "connection closed by the server")
            return False
        # TLS may hold decrypted bytes that the selector cannot see: take them now
        while isinstance(sock, ssl.SSLSocket) and sock.pending():
            try:
                data += sock.recv(sock.pending())
            except OSError:
                break  # the next read reports it
        self.session.receive_data(tid, data, time.monotonic())
        return tid in self._streams

    def _flush(self, tid: int, stream: _Stream) -> None:
        """Write what the socket takes now; wait for writability if anything is left."""
        while stream.outgoing:
            try:
                sent = stream.sock.send(stream.outgoing)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                self._broken(tid, exc.strerror or str(exc) or "write failed")
                return
            if not sent:
                break
            del stream.outgoing[:sent]
        wants = selectors.EVENT_READ
        if stream.outgoing:
            wants |= selectors.EVENT_WRITE
        self._watch(tid, stream, wants)

    def _watch(self, tid: int, stream: _Stream, wants: int) -> None:
        if wants != stream.wants:
            stream.wants = wants
            self.selector.modify(stream.sock, wants, (self, tid))

    def _broken(self, tid: int, reason: str) -> None:
        self._forget(tid)
        self._report_closed(tid, reason)

    def _report_closed(self, tid: int, reason: str) -> None:
        log.debug("transport %d ended: %s", tid, reason)
        self.session.transport_closed(tid, time.monotonic(), reason)

    def _forget(self, tid: int) -> None:
        stream = self._streams.pop(tid, None)
        if stream is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(stream.sock)
        stream.sock.close()
