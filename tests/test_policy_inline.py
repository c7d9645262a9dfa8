"""The inline tier on tenacity, with a fake clock and sleep: the exact delays slept."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailpolicy._inline import AttemptInfo, InlineRetrier
from mailpolicy._policy import BudgetSettings, Decision, InlineSettings
from mailpolicy._policy_load import load_policy
from mailpolicy._relaystate import RelayState
from mailpolicy._schedule import Backoff

DEFAULT = load_policy("default")
RETRY_421 = DEFAULT.decide(kind="transient", reason="service_unavailable", code=421,
                           status="4.3.2", stage="rcpt")  # fmt: skip
GREYLISTED = DEFAULT.decide(kind="transient", reason="greylisted", code=450, status=None,
                            stage="rcpt")  # fmt: skip
DELIVERED = DEFAULT.decide(kind="success", reason="delivered", code=250, status=None, stage=None)


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    retry_after: float | None = None


class FakeClock:
    """Time that moves only when slept through or when an attempt says it took time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def script(
    clock: FakeClock, outcomes: Sequence[Outcome], *, takes: float = 0.0
) -> tuple[Callable[[AttemptInfo], Outcome], list[AttemptInfo]]:
    """An attempt returning ``outcomes`` in turn (the last one repeated), each taking
    ``takes`` seconds; also the list of AttemptInfo it was given."""
    seen: list[AttemptInfo] = []

    def attempt(info: AttemptInfo) -> Outcome:
        seen.append(info)
        clock.now += takes
        return outcomes[min(len(seen), len(outcomes)) - 1]

    return attempt, seen


def retrier(
    clock: FakeClock, settings: InlineSettings = DEFAULT.inline, **kw: object
) -> InlineRetrier:
    return InlineRetrier(settings, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def test_a_421_is_retried_inline_with_full_jitter_then_deferred() -> None:
    """default: 3 attempts, backoff 1s then 2s, full jitter (u = 0.5 halves each)."""
    clock = FakeClock()
    attempt, seen = script(clock, [Outcome(RETRY_421)])
    result = retrier(clock, rng=lambda: 0.5).run(attempt)
    assert clock.slept == [0.5, 1.0]
    assert result.slept == (0.5, 1.0)
    assert [i.number for i in seen] == [1, 2, 3]
    assert (result.attempts, result.stopped_by, result.exhausted) == (3, "max_attempts", True)
    assert result.outcome.decision.action == "retry"  # deferred by the caller, not bounced
    assert result.elapsed == 1.5


def test_nominal_delays_without_randomness() -> None:
    clock = FakeClock()
    settings = dataclasses.replace(DEFAULT.inline, max_attempts=5, deadline=60.0)
    attempt, _ = script(clock, [Outcome(RETRY_421)])
    result = retrier(clock, settings, rng=None).run(attempt)
    assert clock.slept == [1.0, 2.0, 4.0, 5.0]  # capped at max = 5s
    assert result.attempts == 5


def test_success_on_the_second_attempt_stops_at_once() -> None:
    clock = FakeClock()
    attempt, _ = script(clock, [Outcome(RETRY_421), Outcome(DELIVERED)])
    result = retrier(clock, rng=lambda: 1.0).run(attempt)
    assert clock.slept == [1.0]
    assert (result.attempts, result.stopped_by, result.exhausted) == (2, "done", False)
    assert result.outcome.decision.action == "deliver"


def test_a_decision_other_than_retry_ends_the_tier_after_one_attempt() -> None:
    clock = FakeClock()
    attempt, _ = script(clock, [Outcome(GREYLISTED, retry_after=300)])
    result = retrier(clock).run(attempt)
    assert clock.slept == []
    assert (result.attempts, result.stopped_by, result.exhausted) == (1, "done", False)


def test_never_start_a_sleep_that_would_reach_the_deadline() -> None:
    """Attempts take 6 s; deadline 15 s: 0-6, sleep 1 (7), 7-13, then a 2 s sleep would
    end at 15 = the deadline, so the tier stops (tenacity's stop_before_delay)."""
    clock = FakeClock()
    attempt, seen = script(clock, [Outcome(RETRY_421)], takes=6.0)
    result = retrier(clock, rng=None).run(attempt)
    assert clock.slept == [1.0]
    assert (result.attempts, result.stopped_by) == (2, "deadline")
    assert [i.timeout for i in seen] == [10.0, 8.0]  # attempt_timeout cut to the time left


def test_the_servers_announced_delay_replaces_a_shorter_backoff() -> None:
    clock = FakeClock()
    attempt, _ = script(clock, [Outcome(RETRY_421, retry_after=4)])
    result = retrier(clock, rng=None).run(attempt)
    assert clock.slept == [4.0, 4.0]
    assert result.attempts == 3


def test_an_announced_delay_past_the_deadline_defers_at_once() -> None:
    clock = FakeClock()
    attempt, _ = script(clock, [Outcome(RETRY_421, retry_after=300)])
    result = retrier(clock).run(attempt)
    assert clock.slept == []
    assert (result.attempts, result.stopped_by, result.exhausted) == (1, "deadline", True)


def test_the_relay_budget_stops_inline_retries_and_refills_on_success() -> None:
    clock = FakeClock()
    relay = RelayState("smtp.example:587")
    budget = BudgetSettings(capacity=10, retry_cost=5, success_refund=1)
    settings = dataclasses.replace(DEFAULT.inline, max_attempts=10, deadline=600.0,
                                   attempt_timeout=10.0)  # fmt: skip
    attempt, _ = script(clock, [Outcome(RETRY_421)])
    result = retrier(clock, settings, rng=None, relay=relay, budget=budget).run(attempt)
    assert (result.attempts, result.stopped_by) == (3, "budget")
    assert relay.snapshot().tokens == 0
    # The budget is the relay's, shared by the next sender: no inline retry at all now.
    attempt, _ = script(clock, [Outcome(RETRY_421), Outcome(DELIVERED)])
    result = retrier(clock, settings, rng=None, relay=relay, budget=budget).run(attempt)
    assert (result.attempts, result.stopped_by) == (1, "budget")
    attempt, _ = script(clock, [Outcome(DELIVERED)])
    retrier(clock, settings, relay=relay, budget=budget).run(attempt)
    assert relay.snapshot().tokens == 1  # a first-try success refunds success_refund


def test_a_success_after_retries_gives_back_what_the_retries_took() -> None:
    clock = FakeClock()
    relay = RelayState("smtp.example:587")
    budget = BudgetSettings(capacity=20, retry_cost=5, success_refund=1)
    attempt, _ = script(clock, [Outcome(RETRY_421), Outcome(RETRY_421), Outcome(DELIVERED)])
    result = retrier(clock, rng=None, relay=relay, budget=budget).run(attempt)
    assert result.attempts == 3
    assert relay.snapshot().tokens == 20


def test_an_exception_from_the_attempt_propagates() -> None:
    clock = FakeClock()

    def attempt(info: AttemptInfo) -> Outcome:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        retrier(clock).run(attempt)


def test_relay_and_budget_go_together() -> None:
    with pytest.raises(TypeError):
        InlineRetrier(DEFAULT.inline, relay=RelayState("a:25"))


@given(
    max_attempts=st.integers(min_value=1, max_value=10),
    deadline=st.floats(min_value=0.1, max_value=60),
    takes=st.floats(min_value=0, max_value=5),
    u=st.floats(min_value=0, max_value=1, exclude_max=True),
    initial=st.floats(min_value=0.01, max_value=3),
)
def test_limits_hold_whatever_the_timing(
    max_attempts: int, deadline: float, takes: float, u: float, initial: float
) -> None:
    """Never more attempts than max_attempts (the first included); no sleep ends at or
    after the deadline; each sleep within the backoff's jitter bounds."""
    settings = InlineSettings(
        max_attempts=max_attempts,
        deadline=deadline,
        attempt_timeout=deadline,
        backoff=Backoff(initial=initial, multiplier=2.0, max=initial * 4, jitter="equal"),
    )
    clock = FakeClock()
    attempt, seen = script(clock, [Outcome(RETRY_421)], takes=takes)
    result = retrier(clock, settings, rng=lambda: u).run(attempt)
    assert 1 <= result.attempts == len(seen) <= max_attempts
    assert len(result.slept) == result.attempts - 1
    assert result.exhausted
    elapsed = 0.0
    for k, slept in enumerate(result.slept):
        elapsed += takes
        assert elapsed + slept < deadline
        base = settings.backoff.base_delay(k)
        assert base / 2 - 1e-9 <= slept <= base + 1e-9
        elapsed += slept
