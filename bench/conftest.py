"""Fixtures of the micro-benchmarks: engines brought to the open WebSocket state in
memory, and the frames they exchange."""

from __future__ import annotations

import random

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from libchat import protocol
from libchat.client import ClientConfig, ClientConnection
from libchat.server import ServerConfig, ServerConnection

Pair = tuple[ClientConnection, ServerConnection]
NOW = 1.0
SEND = protocol.Send(id="c-000017", to="bob", body="x" * 180)  # a frame of about 250 bytes
MESSAGE = protocol.Message(
    id="c-000017",
    seq=123456,
    sender="alice",
    recipient="bob",
    body="x" * 180,
    ts=1_764_000_000_000,
)


def open_pair() -> tuple[ClientConnection, ServerConnection]:
    """A client and a server engine with the WebSocket open and the welcome said."""
    client = ClientConnection(ClientConfig(host="127.0.0.1:8765"), random.Random(1))
    server = ServerConnection(ServerConfig(), random.Random(2), 0.0)
    client.upgrade(0.0)
    server.receive_data(client.data_to_send(), 0.0)
    server.accept_upgrade(0.0)
    client.receive_data(server.data_to_send(), 0.0)
    client.send(protocol.Hello(protocol="1.0", token="bench"), 0.0)
    server.receive_data(client.data_to_send(), 0.0)
    server.send(protocol.Welcome(user_id=1, username="alice", server_time=0), 0.0)
    client.receive_data(server.data_to_send(), 0.0)
    return client, server


def masked_send_frame() -> bytes:
    """One send frame as a client puts it on the wire (masked), built by wsproto."""
    ws = Connection(ConnectionType.CLIENT)
    return ws.send(TextMessage(data=protocol.encode_frame(SEND)))


@pytest.fixture
def pair() -> Pair:
    return open_pair()


@pytest.fixture
def send_frame() -> bytes:
    return masked_send_frame()
