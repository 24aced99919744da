"""The one transition table: every edge is reachable only through ``transition``."""

from __future__ import annotations

import pytest

from libchat.states import TRANSITIONS, ConnState, LocalProtocolError, Role, Trigger, transition


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
