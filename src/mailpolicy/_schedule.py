"""Time in policies: durations with units, jitter, inline backoff and queue schedules.

Everything here is pure: delays are computed from numbers, randomness comes from an
injected ``rng`` (a callable returning a float in ``[0, 1)``), and nothing sleeps.

Jitter modes (applied *after* the cap, so ``proportional`` may exceed it by the ratio):

=================  ==========================================  ======================
mode               delay actually used for a base delay ``d``  bounds
=================  ==========================================  ======================
``none``           ``d``                                       ``[d, d]``
``full``           ``uniform(0, d)``                           ``[0, d]``
``equal``          ``d/2 + uniform(0, d/2)``                   ``[d/2, d]``
``proportional``   ``d * uniform(1 - r, 1 + r)``               ``[d(1-r), d(1+r)]``
=================  ==========================================  ======================
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

Jitter = Literal["none", "full", "equal", "proportional"]
JITTERS: Final[tuple[Jitter, ...]] = get_args(Jitter)

#: A source of uniform floats in ``[0, 1)``; ``random.random`` or a test's fake.
Rng = Callable[[], float]

# Jitter spreads retries apart; it is not a security boundary, so plain random is right.
_DEFAULT_RNG: Final = random.Random()  # noqa: S311 - jitter, not cryptography
default_rng: Final[Rng] = _DEFAULT_RNG.random
# CPython reseeds only the random module's own generator in a forked child: without this,
# every worker process forked from one parent (gunicorn --preload) draws the same jitter,
# and retries after an outage come back in step instead of spread.
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_DEFAULT_RNG.seed)

_UNITS: Final[dict[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """Seconds for a duration such as ``"500ms"``, ``"15m"``, ``"1.5h"`` or ``"5d"``;
    None when ``text`` is not one (bare numbers are not: the Postfix unit trap)."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        return None
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """A short human form: ``"500ms"``, ``"10s"``, ``"1h30m"``, ``"2d4h"``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) or "0s"


def jitter_bounds(delay: float, jitter: Jitter, ratio: float) -> tuple[float, float]:
    """The smallest and largest delay ``apply_jitter`` can return for ``delay``."""
    if jitter == "full":
        return 0.0, delay
    if jitter == "equal":
        return delay / 2, delay
    if jitter == "proportional":
        return delay * (1 - ratio), delay * (1 + ratio)
    return delay, delay


def apply_jitter(delay: float, jitter: Jitter, ratio: float, rng: Rng | None) -> float:
    """``delay`` spread by ``jitter``; with ``rng=None`` the nominal ``delay`` itself."""
    if rng is None or jitter == "none":
        return delay
    low, high = jitter_bounds(delay, jitter, ratio)
    return low + (high - low) * rng()


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff between inline attempts: the delay before inline retry ``k``
    (``k = 0`` for the first retry) is ``min(initial * multiplier**k, max)``, then jitter."""

    initial: float
    multiplier: float
    max: float
    jitter: Jitter = "full"
    jitter_ratio: float = 0.0

    def base_delay(self, retry_index: int) -> float:
        """The delay before inline retry ``retry_index`` without jitter."""
        return _capped(self.initial, self.multiplier, self.max, retry_index)

    def delay(self, retry_index: int, rng: Rng | None) -> float:
        """The delay before inline retry ``retry_index``, jittered with ``rng``."""
        return apply_jitter(self.base_delay(retry_index), self.jitter, self.jitter_ratio, rng)

    @property
    def ceiling(self) -> float:
        """The longest delay jitter can produce (``max``, or more for ``proportional``)."""
        return jitter_bounds(self.max, self.jitter, self.jitter_ratio)[1]


def _capped(initial: float, multiplier: float, cap: float, k: int) -> float:
    """``min(initial * multiplier**k, cap)`` without overflow for a large ``k``."""
    if k <= 0 or multiplier <= 1 or initial >= cap:
        return min(initial, cap)
    # Compare exponents first: in a long queue k can be large enough to overflow a float.
    if k * math.log(multiplier) >= math.log(cap / initial):
        return cap
    return min(initial * multiplier**k, cap)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleStep:
    """One stage of a queue schedule, applying while the time since the first failure is
    below ``until`` (None: until give-up). Either a fixed ``every`` or an exponential
    ``initial * multiplier**k`` capped at ``max``, ``k`` counting retries in this stage."""

    until: float | None
    every: float | None = None
    initial: float = 0.0
    multiplier: float = 1.0
    max: float = 0.0

    def base_delay(self, retry_index: int) -> float:
        if self.every is not None:
            return self.every
        return _capped(self.initial, self.multiplier, self.max, retry_index)

    @property
    def shortest(self) -> float:
        return self.every if self.every is not None else self.initial

    @property
    def longest(self) -> float:
        return self.every if self.every is not None else self.max


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A named queue schedule keyed on the time since the first failure (Exim style)."""

    name: str
    steps: tuple[ScheduleStep, ...]
    jitter: Jitter = "proportional"
    jitter_ratio: float = 0.2

    def step_at(self, elapsed: float) -> tuple[int, float]:
        """The index of the stage in force ``elapsed`` seconds after the first failure,
        and the time (since the first failure) at which that stage began."""
        start = 0.0
        for i, step in enumerate(self.steps):
            if step.until is None or elapsed < step.until:
                return i, start
            start = step.until
        return len(self.steps) - 1, start  # unreachable: the last step has no `until`

    def base_delay(self, elapsed: float, history: Sequence[float]) -> float:
        """The nominal delay after a failure ``elapsed`` seconds after the first one.

        ``history`` holds the times (seconds since the first failure) of the failed
        deliveries so far, the current one included; those inside the current stage
        count the exponential steps (the first failure in a stage waits ``initial``).
        """
        index, start = self.step_at(elapsed)
        in_stage = sum(1 for t in history if start <= t <= elapsed)
        return self.steps[index].base_delay(max(in_stage - 1, 0))

    @property
    def ceiling(self) -> float:
        """The longest delay this schedule can produce, jitter included."""
        longest = max(step.longest for step in self.steps)
        return jitter_bounds(longest, self.jitter, self.jitter_ratio)[1]
