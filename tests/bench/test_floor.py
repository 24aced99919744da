"""``bench.floor`` against a real chatd: every ping answered and every message pushed.
No timing is asserted (the machine is shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.floor import run


@pytest.mark.timeout(120)
def test_the_floor_run_gets_every_pong_and_every_push(tmp_path: Path) -> None:
    result = run("full", 20, tmp_path / "data")
    assert result["sync"] == "full"
    latency = result["latency_ms"]
    assert set(latency) == {"ping_rtt", "send_push"}
    for values in latency.values():
        assert values["p50"] is not None
        assert values["p50"] <= values["p99"] <= values["max"]
