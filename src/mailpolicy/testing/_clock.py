"""A fake clock for retry schedules: time moves only when told to."""

from __future__ import annotations

import math
import threading


class FakeClock:
    """Monotonic and wall time that advance only through :meth:`sleep` and :meth:`advance`.

    Inject ``clock.now`` / ``clock.time`` / ``clock.sleep`` where the code under test would
    use ``time.monotonic`` / ``time.time`` / ``time.sleep``; ``sleeps`` records every
    requested sleep, so a test asserts an exact retry schedule without waiting::

        clock = FakeClock()
        clock.sleep(30)
        clock.sleep(60)
        assert clock.sleeps == [30, 60] and clock.now() == 90

    Thread-safe.
    """

    def __init__(self, *, monotonic: float = 0.0, wall: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._monotonic = float(monotonic)
        self._wall = float(wall)
        self._sleeps: list[float] = []

    def now(self) -> float:
        """Monotonic seconds (like ``time.monotonic()``)."""
        with self._lock:
            return self._monotonic

    def time(self) -> float:
        """Wall-clock seconds since the epoch (like ``time.time()``)."""
        with self._lock:
            return self._wall

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance both clocks by it, immediately."""
        seconds = self._checked(seconds)
        with self._lock:
            self._sleeps.append(seconds)
            self._monotonic += seconds
            self._wall += seconds

    def advance(self, seconds: float) -> None:
        """Let time pass without recording a sleep."""
        seconds = self._checked(seconds)
        with self._lock:
            self._monotonic += seconds
            self._wall += seconds

    @property
    def sleeps(self) -> list[float]:
        """Every duration passed to :meth:`sleep`, in order (a copy)."""
        with self._lock:
            return list(self._sleeps)

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now()!r}, time={self.time()!r})"

    @staticmethod
    def _checked(seconds: float) -> float:
        value = float(seconds)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"cannot move a clock by {seconds!r} seconds")
        return value
