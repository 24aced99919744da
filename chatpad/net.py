"""The UI's handle on the network thread: two queues and a wake-up.

The network thread (:mod:`chatpad.worker`) owns every socket, the libchat sessions and
the local database. The UI talks to it only through :class:`Network`: ``submit`` puts a
command on one queue and wakes the thread, ``poll`` takes the results from the other.
"""

from __future__ import annotations

import queue
import threading

from chatpad import messages as m
from chatpad.profile import Profile
from chatpad.worker import NetConfig, Waker, Worker

__all__ = ["NetConfig", "Network"]


class Network:
    """The UI's handle on the network thread: ``submit`` commands, ``poll`` results."""

    def __init__(self, profile: Profile, config: NetConfig | None = None) -> None:
        self.commands: queue.Queue[m.Command] = queue.Queue()
        self.results: queue.Queue[m.Result] = queue.Queue()
        self._waker = Waker()
        worker = Worker(profile, config or NetConfig(), self.commands, self.results,
                        self._waker)
        self._thread = threading.Thread(target=worker.run, name="chatpad-net", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, command: m.Command) -> None:
        self.commands.put(command)
        self._waker.wake()

    def poll(self) -> list[m.Result]:
        """Every result waiting now; never blocks."""
        out: list[m.Result] = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.submit(m.Shutdown())
            self._thread.join(timeout)
        self._waker.close()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()
