"""A small ``steady`` run of the load generator as a correctness check: 100 users,
200 msg/s for 10 s (after a warm-up of 1 s) against a real chatd; nothing lost,
nothing duplicated. No timing is asserted (the machine is shared). The server's data dir
is given (``--data-dir``), as an operator keeping a run's database would."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import Params, run


@pytest.mark.timeout(180)
def test_steady_small_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    params = Params(users=100, rate=200.0, duration=10.0, warmup=1.0, drain=20.0, workers=2)
    [result] = run(["steady"], params, quiet=True, data_dir=tmp_path / "data")
    assert (tmp_path / "data" / "chatd.db").stat().st_size > 0  # the run's, kept
    assert result["scenario"] == "steady"
    assert result["sent"] >= 1900  # 200 msg/s for 10 s, less any sender not yet back
    assert result["skipped"] == 0
    assert result["errors"] == {}
    assert result["acked"] == result["sent"]
    assert result["delivered"] == result["sent"]
    assert result["receipts"] == result["sent"]
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    warmup = result["warmup"]  # before the window, its own stream
    assert warmup["sent"] >= 150
    assert warmup["acked"] == warmup["sent"]
    assert warmup["lost"] == warmup["duplicates"] == 0
