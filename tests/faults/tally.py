"""The one line every fault run prints: sent / acked / received / lost / duplicated /
unanswered, and the check that fails the run on any lost or duplicated acknowledged
message or any unanswered send.

A run feeds its :class:`Tally` the client ids it sent, the answers (ack or error frames)
and the messages its recipients received (pushes, or history rows). Client ids must be
unique within a run; a resend of the same id counts once. The counts, as the contract
sees them (clients drop repeats by ``seq``):

- *received*: acked messages that reached their recipient (any number of times);
- *lost*: acked messages that never did;
- *duplicated*: client ids acked, received or stored under more than one ``seq`` (a
  message stored twice, or a resend acked as a new one);
- *unanswered*: client ids sent that got neither an ack nor an error.

The lines are also collected in :data:`LINES`; ``tests/conftest.py`` prints them at the
end of the pytest run, so ``make faults`` shows every run's figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

Frame = dict[str, Any]
LINES: list[str] = []  # every tally line of this pytest process, in order


class Tally:
    def __init__(self, run: str) -> None:
        self.run = run
        self.sent: set[str] = set()
        self.acks: dict[str, int] = {}  # client id -> the seq of its (first) ack
        self.errors: dict[str, list[str]] = {}  # client id -> its error codes, in order
        self.seqs: dict[str, set[int]] = {}  # client id -> every seq seen for it
        self.arrived: set[str] = set()  # client ids the recipients received

    # --- what the run feeds it -------------------------------------------------------

    def send(self, client_id: str) -> None:
        self.sent.add(client_id)

    def answer(self, frame: Frame) -> None:
        """An ``ack`` or ``error`` frame (errors without a ``ref`` are ignored)."""
        if frame["type"] == "ack":
            self.acks.setdefault(frame["id"], frame["seq"])
            self._seq(frame["id"], frame["seq"])
        elif frame["type"] == "error" and frame.get("ref") is not None:
            self.errors.setdefault(frame["ref"], []).append(frame["code"])

    def receive(self, message: Frame) -> None:
        """A message at its recipient: a push, or a row of history."""
        self.arrived.add(message["id"])
        self._seq(message["id"], message["seq"])

    def receive_all(self, messages: Iterable[Frame]) -> None:
        for message in messages:
            self.receive(message)

    def store(self, messages: Iterable[Frame]) -> None:
        """Rows of the server's history: each client id must be stored under one seq."""
        for message in messages:
            self._seq(message["id"], message["seq"])

    def _seq(self, client_id: str, seq: int) -> None:
        self.seqs.setdefault(client_id, set()).add(seq)

    # --- the figures -------------------------------------------------------------------

    @property
    def lost(self) -> list[str]:
        return sorted(cid for cid in self.acks if cid not in self.arrived)

    @property
    def duplicated(self) -> list[str]:
        return sorted(cid for cid, seqs in self.seqs.items() if len(seqs) > 1)

    @property
    def unanswered(self) -> list[str]:
        return sorted(cid for cid in self.sent if cid not in self.acks and cid not in self.errors)

    def line(self) -> str:
        codes = Counter(code for codes in self.errors.values() for code in codes)
        kinds = ", ".join(f"{code} {count}" for code, count in sorted(codes.items()))
        return (
            f"{self.run}: sent {len(self.sent)} / acked {len(self.acks)} / received "
            f"{len(self.arrived & self.acks.keys())} / lost {len(self.lost)} / duplicated "
            f"{len(self.duplicated)} / unanswered {len(self.unanswered)} "
            f"(errors {codes.total()}{': ' + kinds if kinds else ''})"
        )

    def check(self) -> None:
        """Print the line (and keep it for the summary); fail on any lost or duplicated
        acked message or any unanswered send."""
        line = self.line()
        print(line)
        LINES.append(line)
        assert not self.lost, f"{line}; lost: {self.lost[:10]}"
        assert not self.duplicated, (
            f"{line}; duplicated: {[(c, sorted(self.seqs[c])) for c in self.duplicated[:10]]}"
        )
        assert not self.unanswered, f"{line}; unanswered: {self.unanswered[:10]}"
