"""The inline tier: retries inside the caller's ``send()``, run on tenacity.

``stop`` = ``[inline] max_attempts`` (the first attempt included) | ``deadline`` (never
start a sleep that would reach it: tenacity's ``stop_before_delay``, on our injected
clock) | the relay's retry budget (last, so tokens are only taken for a retry the other
limits allow). ``wait`` = the policy's backoff and jitter, or the delay the server
announced when that is longer. Only a decision whose action is ``retry`` is retried
inline; anything else ends the tier at once.

Hitting a limit never raises and never bounces: the result says the tier was
``exhausted`` and the caller defers the recipient to the queue (DESIGN.md §1). An
exception raised by the attempt itself propagates unchanged (turn network errors into
outcomes with ``classify_error`` inside the attempt).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._policy import BudgetSettings, Decision, InlineSettings
from ._relaystate import RelayState
from ._schedule import Backoff, Rng, default_rng

StopReason = Literal["done", "max_attempts", "deadline", "budget"]


class InlineOutcome(Protocol):
    """What one attempt returns: the policy's decision about it, and the delay the
    server announced (seconds), if any."""

    @property
    def decision(self) -> Decision: ...

    @property
    def retry_after(self) -> float | None: ...


OutcomeT = TypeVar("OutcomeT", bound=InlineOutcome)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptInfo:
    """Handed to each attempt: its number (1 for the first) and the socket timeout to use,
    ``attempt_timeout`` cut to the time left before the deadline."""

    number: int
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineResult(Generic[OutcomeT]):
    """How the inline tier ended. ``outcome`` is the last attempt's; ``slept`` every delay
    slept, in order; ``stopped_by`` is ``"done"`` when the last decision did not ask for
    an inline retry, else the limit that stopped it."""

    outcome: OutcomeT
    attempts: int
    slept: tuple[float, ...]
    elapsed: float
    stopped_by: StopReason

    @property
    def exhausted(self) -> bool:
        """The decision still asked for a retry when a limit stopped the tier: hand the
        recipient to the queue (``deferred``), never bounce it."""
        return self.stopped_by != "done"


@dataclass(slots=True)
class _Run:
    started: float
    attempts: int = 0
    stopped_by: StopReason = "done"
    slept: list[float] = field(default_factory=list)


class _StopAfterAttempts(stop_base):
    def __init__(self, run: _Run, max_attempts: int) -> None:
        self.run, self.max_attempts = run, max_attempts

    def __call__(self, retry_state: RetryCallState) -> bool:
        if retry_state.attempt_number >= self.max_attempts:
            self.run.stopped_by = "max_attempts"
            return True
        return False


class _StopBeforeDeadline(stop_base):
    """tenacity's ``stop_before_delay`` on an injected clock (its own reads
    ``time.monotonic``)."""

    def __init__(self, run: _Run, clock: Callable[[], float], deadline: float) -> None:
        self.run, self.clock, self.deadline = run, clock, deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        elapsed = self.clock() - self.run.started
        if elapsed + retry_state.upcoming_sleep >= self.deadline:
            self.run.stopped_by = "deadline"
            return True
        return False


class _StopWhenBudgetEmpty(stop_base):
    def __init__(self, run: _Run, relay: RelayState, budget: BudgetSettings) -> None:
        self.run, self.relay, self.budget = run, relay, budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.relay.acquire_retry(self.budget):
            return False
        self.run.stopped_by = "budget"
        return True


class _PolicyWait(wait_base):
    def __init__(self, backoff: Backoff, rng: Rng | None) -> None:
        self.backoff, self.rng = backoff, rng

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self.backoff.delay(retry_state.attempt_number - 1, self.rng)
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            announced = outcome.result().retry_after
            if announced is not None:
                delay = max(delay, float(announced))
        return delay


class InlineRetrier:
    """Runs attempts under a policy's ``[inline]`` settings.

    ``clock`` (monotonic seconds), ``sleep`` and ``rng`` are injectable; pass a relay's
    :class:`RelayState` and the policy's ``[budget]`` to spend and refill its retry
    budget (a success is recorded on the relay, which also closes its circuit).
    """

    def __init__(
        self,
        settings: InlineSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Rng | None = default_rng,
        relay: RelayState | None = None,
        budget: BudgetSettings | None = None,
    ) -> None:
        if (relay is None) != (budget is None):
            raise TypeError("pass relay and budget together, or neither")
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.relay = relay
        self.budget = budget

    def run(self, attempt: Callable[[AttemptInfo], OutcomeT]) -> InlineResult[OutcomeT]:
        """Call ``attempt`` until its decision stops asking for an inline retry or a limit
        is reached; never more than ``max_attempts`` calls."""
        settings = self.settings
        run = _Run(started=self.clock())

        def call() -> OutcomeT:
            run.attempts += 1
            left = settings.deadline - (self.clock() - run.started)
            timeout = max(0.0, min(settings.attempt_timeout, left))
            return attempt(AttemptInfo(number=run.attempts, timeout=timeout))

        def sleep(seconds: float) -> None:
            run.slept.append(float(seconds))
            self.sleep(float(seconds))

        outcome: OutcomeT = call()
        if outcome.decision.inline:
            # Only now is tenacity needed (most sends succeed at once, and building the
            # controller costs more than the rest of a successful send's bookkeeping).
            # It is handed the first outcome again, so it decides the wait and the stop
            # exactly as if it had made the first call itself.
            replay = [outcome]
            stop = _StopAfterAttempts(run, settings.max_attempts) | _StopBeforeDeadline(
                run, self.clock, settings.deadline
            )
            if self.relay is not None and self.budget is not None:
                stop = stop | _StopWhenBudgetEmpty(run, self.relay, self.budget)
            retrying = Retrying(
                sleep=sleep,
                stop=stop,
                wait=_PolicyWait(settings.backoff, self.rng),
                retry=retry_if_result(lambda o: o.decision.inline),
                retry_error_callback=lambda state: (
                    state.outcome.result() if state.outcome else None
                ),
                reraise=True,
            )
            outcome = retrying(lambda: replay.pop() if replay else call())
        if outcome.decision.action == "deliver" and self.relay is not None and self.budget:
            self.relay.record_success(self.budget, retries=run.attempts - 1)
        return InlineResult(
            outcome=outcome,
            attempts=run.attempts,
            slept=tuple(run.slept),
            elapsed=self.clock() - run.started,
            stopped_by=run.stopped_by,
        )
