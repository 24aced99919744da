"""Protocol limits and timers, each with the reason it has the value it has."""

from __future__ import annotations

PROTOCOL_VERSION = "1.1.0"  # MAJOR.MINOR.BUILD: this side's newest; /healthz carries it
# The newest BUILD of each MINOR this side speaks, by MINOR: welcome names the one of the
# lower of the two minors (a 1.0 client of a 1.1 server is welcomed with "1.0.0").
PROTOCOL_VERSIONS = ("1.0.0", "1.1.0")
PROTOCOL_MAJOR = 1  # a hello whose major differs is refused with close 4002

MAX_BODY_BYTES = 64 * 1024  # HTTP request bodies: credentials and queries are tiny
MAX_FRAME_BYTES = 64 * 1024  # one reassembled WebSocket message: chat text is small
MAX_HEADER_BYTES = 16 * 1024  # request line + headers: a bearer token plus the usual few
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # biggest page: 200 msgs x 5000 chars x 6 bytes escaped
MAX_MESSAGE_CHARS = 5000  # message body, in Unicode code points
MAX_CLIENT_ID_CHARS = 64  # client message id: room for a UUID or a counter with a prefix
MIN_USERNAME_CHARS = 3
MAX_USERNAME_CHARS = 32
MIN_PASSWORD_CHARS = 8  # below this a password is guessable online
MAX_PASSWORD_CHARS = 1024  # above this hashing becomes a denial-of-service lever
MAX_WIRE_INT = 2**63 - 1  # every integer on the wire fits a signed 64-bit store column
MAX_SEQS_PER_DELIVERED = 1000  # one delivered frame confirms at most a catch-up batch or so
MAX_USERS_PER_SEARCH = 20  # user search is a typeahead, not a directory dump
DEFAULT_HISTORY_LIMIT = 50  # one screen of messages
MAX_HISTORY_LIMIT = 200  # a page the client can render in one go

HELLO_TIMEOUT = 10.0  # seconds from the upgrade to the hello frame
REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last: 64 KiB at 6.4 KB/s
KEEPALIVE_TIMEOUT = 15.0  # seconds an HTTP connection waits for a request: clients ask at once
PING_INTERVAL = 30.0  # seconds between server pings
IDLE_TIMEOUT = 75.0  # seconds without any inbound byte (pongs included) before closing
CLOSE_TIMEOUT = 5.0  # seconds to wait for the peer's close frame before giving up
CLIENT_IDLE_TIMEOUT = 90.0  # a client gives up on a server silent for three ping intervals

# WebSocket close codes used by the contract: the only place they are spelled as numbers.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_ABNORMAL = 1006  # never sent: reported when the transport ended without a close frame
CLOSE_POLICY = 1008  # a frame before hello
CLOSE_TOO_BIG = 1009  # a message over MAX_FRAME_BYTES
CLOSE_UNAUTHORIZED = 4001  # bad, expired or revoked token
CLOSE_UNSUPPORTED_PROTOCOL = 4002  # hello with another major version
CLOSE_HELLO_TIMEOUT = 4003  # no hello within HELLO_TIMEOUT
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455's registry: the server cannot serve it now
CLOSE_TOO_MANY_CONNECTIONS = 4004  # the user already has the server's cap of connections
