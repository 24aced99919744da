"""The protocol types and their codec: strict, exact, never raising but ProtocolViolation."""

from __future__ import annotations

import pytest

from libchat.protocol import (
    Delivered,
    DeliveredReceipt,
    Error,
    Message,
    PeerTyping,
    ProtocolViolation,
    ReadReceipt,
    Send,
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
        ('{"type":"delivered","seqs":[1,true]}', "invalid_frame", None),
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


@pytest.mark.parametrize(
    ("spoken", "welcomed"),
    [("1.0", "1.0.0"), ("1.1", "1.1.0"), ("1.12", "1.1.0"), ("1", "1.0.0"), ("1.0.5", "1.0.0")],
)
def test_welcome_names_the_lower_of_the_two_minors(spoken: str, welcomed: str) -> None:
    assert negotiated_version(spoken) == welcomed
