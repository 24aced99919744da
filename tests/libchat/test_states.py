"""The rulebook: the transition table (every edge reachable only through ``transition``)
and what each role may send in each state."""

from __future__ import annotations

import pytest

from libchat.states import (
    ENDING,
    LIVE,
    SENDS,
    TRANSITIONS,
    ConnState,
    LocalProtocolError,
    Outgoing,
    Role,
    Trigger,
    may_send,
    transition,
)


def test_transition_follows_the_table() -> None:
    for (role, state, trigger), target in TRANSITIONS.items():
        assert transition(role, state, trigger) is target


def test_an_edge_not_in_the_table_raises() -> None:
    with pytest.raises(LocalProtocolError, match="'welcome' is not allowed in state 'http'"):
        transition(Role.SERVER, ConnState.HTTP, Trigger.WELCOME)
    with pytest.raises(LocalProtocolError):
        transition(Role.CLIENT, ConnState.CLOSED, Trigger.END)


def test_every_state_but_closed_can_end_and_closed_is_final() -> None:
    for role in Role:
        for state in ConnState:
            ends = (role, state, Trigger.END) in TRANSITIONS
            role_has_state = any(key[0] is role and key[1] is state for key in TRANSITIONS)
            if state is ConnState.CLOSED:
                assert not role_has_state
            elif role_has_state:
                assert ends, (role, state)


def test_each_role_uses_its_own_handshake_states() -> None:
    server_states = {key[1] for key in TRANSITIONS if key[0] is Role.SERVER}
    client_states = {key[1] for key in TRANSITIONS if key[0] is Role.CLIENT}
    assert ConnState.AUTHENTICATING in server_states - client_states
    assert ConnState.AWAITING_WELCOME in client_states - server_states


def test_live_states_are_the_open_websocket_before_our_close() -> None:
    assert LIVE[Role.SERVER] == {
        ConnState.AWAITING_HELLO,
        ConnState.AUTHENTICATING,
        ConnState.OPEN,
    }
    assert LIVE[Role.CLIENT] == {
        ConnState.AWAITING_HELLO,
        ConnState.AWAITING_WELCOME,
        ConnState.OPEN,
    }
    for role in Role:
        for state in LIVE[role]:
            assert TRANSITIONS[role, state, Trigger.CLOSE] is ConnState.CLOSING
        assert not LIVE[role] & ENDING


def test_sending_hello_or_welcome_is_an_edge_of_the_table() -> None:
    """Where a role may send the frame that moves its handshake on, the transition table
    has that edge; nowhere else may it send one."""
    moves = {Outgoing.HELLO: Trigger.HELLO, Outgoing.WELCOME: Trigger.WELCOME}
    for role, by_state in SENDS.items():
        for state, sends in by_state.items():
            for outgoing in sends & moves.keys():
                assert (role, state, moves[outgoing]) in TRANSITIONS
    assert not any(Outgoing.HELLO in sends for sends in SENDS[Role.SERVER].values())
    assert not any(Outgoing.WELCOME in sends for sends in SENDS[Role.CLIENT].values())


def test_may_send_allows_drops_or_refuses() -> None:
    assert may_send(Role.SERVER, ConnState.OPEN, Outgoing.FRAME, "Ack")
    assert may_send(Role.SERVER, ConnState.AUTHENTICATING, Outgoing.ERROR, "Error")
    assert may_send(Role.CLIENT, ConnState.AWAITING_HELLO, Outgoing.HELLO, "Hello")
    for role in Role:
        for state in ENDING:
            assert not may_send(role, state, Outgoing.FRAME, "Ack")  # dropped
    with pytest.raises(LocalProtocolError, match="cannot send Welcome in state open"):
        may_send(Role.SERVER, ConnState.OPEN, Outgoing.WELCOME, "Welcome")
    with pytest.raises(LocalProtocolError, match="cannot send Send in state awaiting_welcome"):
        may_send(Role.CLIENT, ConnState.AWAITING_WELCOME, Outgoing.FRAME, "Send")
    with pytest.raises(LocalProtocolError, match="in state http"):
        may_send(Role.CLIENT, ConnState.HTTP, Outgoing.CLOSE, "a close")
