"""Sample a running chatd with py-spy while a scenario runs, and summarise the stacks.

``python -m bench.load ... --profile DIR`` records ``DIR/<scenario>.txt`` in py-spy's
raw (collapsed stack) format, which flamegraph.pl, inferno and speedscope read, and
prints the hottest functions of the server's event loop thread. py-spy is not a
dependency of the project: ``.venv/bin/pip install py-spy`` first.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

SAMPLE_RATE = 200  # samples per second: enough for a 10 s window, cheap for the target
_FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def py_spy() -> str:
    """The py-spy executable next to this interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


class Recording:
    """``with Recording(pid, path):`` samples ``pid`` (all threads) until the block ends."""

    def __init__(self, pid: int, path: Path) -> None:
        self.pid = pid
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Recording:
        command = [
            py_spy(),
            "record",
            "--pid",
            str(self.pid),
            "--nonblocking",
            "--threads",
            "--rate",
            str(SAMPLE_RATE),
            "--format",
            "raw",
            "--output",
            str(self.path),
        ]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    name, path = match.groups()
    path = path.split("site-packages/")[-1]
    return f"{name} ({path})"


def summarise(path: Path, top: int = 15) -> dict[str, object]:
    """Per thread: the share of samples; for the main thread, the functions with the
    most samples on top of the stack (self) and anywhere in it (inclusive)."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    main = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples = int(count)
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += samples
        if thread != "MainThread":
            continue
        main += samples
        names = [_short(frame) for frame in frames[1:]] or ["<idle>"]
        own[names[-1]] += samples
        for name in set(names):
            inclusive[name] += samples
    total = sum(threads.values()) or 1
    main = main or 1

    def share(counter: collections.Counter[str], base: int) -> list[tuple[str, float]]:
        return [(name, round(100 * n / base, 1)) for name, n in counter.most_common(top)]

    return {
        "threads_pct": share(threads, total),
        "main_self_pct": share(own, main),
        "main_inclusive_pct": [
            (name, pct)
            for name, pct in share(inclusive, main)
            if not name.startswith(("_run", "<module>", "main (", "run (", "Runner.run"))
        ],
    }


def print_summary(summary: dict[str, object]) -> None:
    for title, key in (
        ("threads (share of all samples)", "threads_pct"),
        ("event loop thread, self", "main_self_pct"),
        ("event loop thread, inclusive", "main_inclusive_pct"),
    ):
        print(f"  {title}:")
        for name, pct in summary[key]:  # type: ignore[attr-defined]
            print(f"    {pct:5.1f}%  {name}")
