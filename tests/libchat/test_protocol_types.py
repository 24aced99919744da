"""The protocol types and their codec: strict, exact, never raising but ProtocolViolation."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat import limits
from libchat.protocol import (
    CLIENT_ID_RE,
    USERNAME_RE,
    Ack,
    Delivered,
    DeliveredReceipt,
    Error,
    Message,
    PeerTyping,
    ProtocolViolation,
    Read,
    ReadReceipt,
    Send,
    Typing,
    _decode_client_generic,
    _encode_generic,
    decode_client_frame,
    decode_server_frame,
    encode_frame,
    negotiated_version,
)


def test_send_is_parsed_and_recipient_lowered() -> None:
    frame = decode_client_frame('{"type":"send","id":"c-1","to":"Bob","body":"hi 😀"}')
    assert frame == Send(id="c-1", to="bob", body="hi 😀")


@pytest.mark.parametrize(
    ("raw", "code", "ref"),
    [
        ('{"type":"send","id":"c-1","to":"bob","body":""}', "empty_body", "c-1"),
        ('{"type":"send","id":"c-1","to":"bob","body":"' + "😀" * 5001 + '"}', "too_long", "c-1"),
        ('{"type":"send","id":"c 1","to":"bob","body":"x"}', "invalid_frame", None),
        ('{"type":"send","id":"c1","to":"bob","body":"a\\u0000b"}', "invalid_frame", "c1"),
        ('{"type":"send","id":"c1","to":"bob","body":5}', "invalid_frame", "c1"),
        ('{"type":"send","id":"c1","to":"bob"}', "invalid_frame", "c1"),
        ('{"type":"nope","id":"c1"}', "invalid_frame", "c1"),
        ('{"type":["send"],"id":"c1"}', "invalid_frame", "c1"),
        ('{"type":{"send":1}}', "invalid_frame", None),
        ('{"type":"delivered","seqs":[1,true]}', "invalid_frame", None),
        ('{"type":"delivered","seqs":[18446744073709551615]}', "invalid_frame", None),
        ('{"type":"delivered","seqs":[9223372036854775808]}', "invalid_frame", None),
        ('{"type":"delivered","seqs":[-1]}', "invalid_frame", None),
        ('{"type":"read","peer":"bob","up_to":9223372036854775808}', "invalid_frame", None),
        ('{"type":"read","peer":"bob","up_to":-5}', "invalid_frame", None),
        ("[1]", "invalid_frame", None),
        ("{", "invalid_frame", None),
    ],
)
def test_bad_frames_are_violations(raw: str, code: str, ref: str | None) -> None:
    with pytest.raises(ProtocolViolation) as info:
        decode_client_frame(raw)
    assert (info.value.code, info.value.ref) == (code, ref)


def test_5000_emoji_are_allowed() -> None:
    frame = Send(id="a", to="bob", body="😀" * 5000)
    assert decode_client_frame(encode_frame(frame)) == frame


def test_server_frames_round_trip() -> None:
    message = Message(id="a", seq=1, sender="alice", recipient="bob", body="x", ts=5)
    for frame in (
        message,
        PeerTyping(sender="alice"),
        Error(code="too_long", ref="a"),
        DeliveredReceipt(id="a", seq=1, ts=2),
        ReadReceipt(peer="bob", up_to=3, ts=4),
    ):
        assert decode_server_frame(encode_frame(frame)) == frame
    assert encode_frame(Error(code="x")) == '{"type":"error","code":"x"}'
    assert '"from":"alice","to":"bob"' in encode_frame(message)
    assert decode_client_frame(encode_frame(Delivered(seqs=[1, 2]))) == Delivered(seqs=(1, 2))


# --- the hot frames' encoder: byte for byte the generic (converter) path -----------------

wire_ints = st.one_of(
    st.sampled_from((0, limits.MAX_WIRE_INT)), st.integers(0, limits.MAX_WIRE_INT)
)
# Any code point, lone surrogates included: orjson refuses those, and both paths must.
any_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)
bodies = st.one_of(
    st.text(
        st.characters(exclude_characters="\x00"), min_size=1, max_size=limits.MAX_MESSAGE_CHARS
    ),
    any_text,
)
client_ids = st.from_regex(CLIENT_ID_RE, fullmatch=True)
usernames = st.one_of(st.from_regex(USERNAME_RE, fullmatch=True), any_text)
hot_frames = st.one_of(
    st.builds(Ack, id=client_ids, seq=wire_ints, ts=wire_ints),
    st.builds(DeliveredReceipt, id=client_ids, seq=wire_ints, ts=wire_ints),
    st.builds(
        Message,
        id=client_ids,
        seq=wire_ints,
        sender=usernames,
        recipient=usernames,
        body=bodies,
        ts=wire_ints,
        delivered_at=st.none() | wire_ints,
        read_at=st.none() | wire_ints,
    ),
)


HotFrame = Ack | DeliveredReceipt | Message


def _outcome(encode: Callable[[HotFrame], str], frame: HotFrame) -> str | type[Exception]:
    """The text, or the type of what was raised (orjson refuses lone surrogates)."""
    try:
        return encode(frame)
    except Exception as exc:
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(frame=hot_frames)
def test_hot_frames_encode_as_the_generic_path_does(
    frame: HotFrame,
) -> None:
    assert _outcome(encode_frame, frame) == _outcome(_encode_generic, frame)


def test_hot_frames_encode_to_the_contract_bytes() -> None:
    top = limits.MAX_WIRE_INT
    message = Message(id="c-1", seq=0, sender="alice", recipient="bob", body="é😀\u2028", ts=top)
    assert encode_frame(message) == (
        f'{{"type":"message","id":"c-1","seq":0,"from":"alice","to":"bob",'
        f'"body":"é😀\u2028","ts":{top},"delivered_at":null,"read_at":null}}'
    )
    assert (
        encode_frame(Ack(id="c-1", seq=top, ts=0))
        == f'{{"type":"ack","id":"c-1","seq":{top},"ts":0}}'
    )
    assert encode_frame(DeliveredReceipt(id="c-1", seq=1, ts=2)) == (
        '{"type":"receipt","status":"delivered","id":"c-1","seq":1,"ts":2}'
    )


@settings(max_examples=300, deadline=None)
@given(frame=hot_frames)
def test_a_trusted_frame_is_the_validated_one(frame: HotFrame) -> None:
    """``trusted()`` sets every field (a field it forgot would fail the call or the
    comparison) to what ``cls(...)`` would."""
    trusted = type(frame).trusted(**attrs.asdict(frame, recurse=False))
    assert type(trusted) is type(frame)
    assert trusted == frame and hash(trusted) == hash(frame)
    assert _outcome(encode_frame, trusted) == _outcome(encode_frame, frame)


# --- the hot frames' decoder: the generic (converter) path's outcome, exactly --------------

# Values of every JSON kind, near and at each field's limits, with the keys sometimes
# missing or extra: the fast decoders must accept what the validating path accepts, as
# the same frame, and leave everything else to it.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), any_text,
    st.integers(-(2**63), 2**64 - 1), wire_ints,
    st.sampled_from((-1, limits.MAX_WIRE_INT + 1, 2**64 - 1)),
)
seq_lists = st.lists(st.one_of(wire_ints, json_scalars), max_size=3) | st.sampled_from(
    (limits.MAX_SEQS_PER_DELIVERED, limits.MAX_SEQS_PER_DELIVERED + 1)
).map(lambda count: list(range(count)))
send_values = {
    "id": st.one_of(client_ids, json_scalars),
    "to": st.one_of(usernames, usernames.map(str.swapcase), st.just(""), json_scalars),
    "body": st.one_of(
        bodies, st.just(""), bodies.map(lambda body: body + "\x00"), json_scalars,
        st.text(min_size=limits.MAX_MESSAGE_CHARS, max_size=limits.MAX_MESSAGE_CHARS + 1),
    ),
}
hot_client_objects = st.one_of(
    st.fixed_dictionaries({"type": st.one_of(
        json_scalars, st.lists(json_scalars, max_size=2),
        st.dictionaries(any_text, json_scalars, max_size=2),
    )}, optional={**send_values}),
    st.fixed_dictionaries({"type": st.just("send"), **send_values}),
    st.fixed_dictionaries({"type": st.just("send")}, optional={
        **send_values, "extra": json_scalars,
    }),
    st.fixed_dictionaries({"type": st.just("delivered")}, optional={
        "seqs": st.one_of(seq_lists, json_scalars), "id": client_ids,
    }),
)


def _decoded(decode: Callable[[], object]) -> object:
    """The frame, or what the violation says."""
    try:
        frame = decode()
    except ProtocolViolation as exc:
        return (exc.code, exc.message, exc.ref)
    return (type(frame), frame)


@settings(max_examples=500, deadline=None)
@given(obj=hot_client_objects)
def test_hot_frames_decode_as_the_generic_path_does(obj: dict[str, object]) -> None:
    try:
        text = orjson.dumps(obj)
    except TypeError:  # a lone surrogate: no client can send it
        return
    assert _decoded(lambda: decode_client_frame(text)) == _decoded(
        lambda: _decode_client_generic(dict(obj))
    )


@pytest.mark.parametrize(
    ("spoken", "welcomed"),
    [("1.0", "1.0.0"), ("1.1", "1.1.0"), ("1.12", "1.1.0"), ("1", "1.0.0"), ("1.0.5", "1.0.0")],
)
def test_welcome_names_the_lower_of_the_two_minors(spoken: str, welcomed: str) -> None:
    assert negotiated_version(spoken) == welcomed


# --- integers: 0..2**63-1, the range of a signed 64-bit store column ---------------------


def test_integers_at_the_edges_of_the_wire_range_are_accepted() -> None:
    top = 2**63 - 1
    assert decode_client_frame(f'{{"type":"delivered","seqs":[0,{top}]}}') == Delivered(
        seqs=(0, top)
    )
    assert decode_client_frame(f'{{"type":"read","peer":"bob","up_to":{top}}}') == Read(
        peer="bob", up_to=top
    )


def test_an_unknown_field_is_ignored_whatever_its_value() -> None:
    raw = '{"type":"typing","to":"bob","n":-18446744073709551615,"m":[18446744073709551615]}'
    assert decode_client_frame(raw) == Typing(to="bob")


def test_an_out_of_range_integer_is_named_by_its_path() -> None:
    with pytest.raises(ProtocolViolation) as info:
        decode_client_frame('{"type":"delivered","seqs":[1,2,9223372036854775808]}')
    assert "0..9223372036854775807" in info.value.message
    assert "$.seqs[2]" in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"ack","id":"a","seq":1,"ts":18446744073709551615}',
        '{"type":"welcome","user_id":-1,"username":"bob","protocol":"1.0.0","server_time":1}',
        '{"type":"receipt","status":"delivered","id":"a","seq":9223372036854775808,"ts":1}',
        '{"type":"error","code":"rate_limited","retry_after_ms":-1}',
    ],
)
def test_a_client_refuses_out_of_range_integers_from_a_server(raw: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        decode_server_frame(raw)
    assert info.value.code == "invalid_frame"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Delivered(seqs=(1, 2**63)),
        lambda: Delivered(seqs=(-1,)),
        lambda: Read(peer="bob", up_to=2**63),
        lambda: Ack(id="a", seq=-1, ts=1),
        lambda: Message(id="a", seq=2**64 - 1, sender="a", recipient="b", body="x", ts=1),
    ],
)
def test_out_of_range_integers_are_refused_when_built(build: Callable[[], object]) -> None:
    with pytest.raises(ProtocolViolation):
        build()
