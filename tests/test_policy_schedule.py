"""Durations, jitter, backoff and the queue tier's pure ``next_step``: exact values and
Hypothesis invariants (caps, monotonic schedules, nothing after give-up)."""

from __future__ import annotations

import dataclasses
import itertools
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy._policy import Decision, Policy
from mailpolicy._policy_load import load_policy
from mailpolicy._queue import MIN_QUEUE_DELAY, next_step, plan_attempts
from mailpolicy._schedule import (
    JITTERS,
    Backoff,
    Jitter,
    Schedule,
    ScheduleStep,
    apply_jitter,
    format_duration,
    jitter_bounds,
    parse_duration,
)

DEFAULT = load_policy("default")
RETRY = DEFAULT.decide(kind="transient", reason="unknown", code=451, status=None, stage=None)
HOUR = 3600.0
DAY = 86400.0

units = st.integers(min_value=0, max_value=100_000)
ratios = st.floats(min_value=0.0, max_value=1.0)
unit_floats = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
seconds = st.floats(min_value=0.001, max_value=30 * DAY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", 0.5), ("15s", 15), ("15m", 900), ("1.5h", 5400), ("5d", 432000), (" 2s ", 2)],
)
def test_durations_carry_units(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["15", "15 m", "m", "1w", "-5s", "1e3s", ""])
def test_durations_without_a_known_unit_are_refused(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.5, "500ms"), (15, "15s"), (90, "1m30s"), (3600, "1h"), (5 * DAY + 3 * HOUR, "5d3h")],
)
def test_format_duration(value: float, text: str) -> None:
    assert format_duration(value) == text


@given(delay=st.floats(min_value=0, max_value=1e7), jitter=st.sampled_from(JITTERS),
       ratio=ratios, u=unit_floats)  # fmt: skip
def test_jitter_stays_within_its_bounds(
    delay: float, jitter: Jitter, ratio: float, u: float
) -> None:
    low, high = jitter_bounds(delay, jitter, ratio)
    jittered = apply_jitter(delay, jitter, ratio, lambda: u)
    assert low - 1e-9 <= jittered <= high + 1e-9
    assert jittered >= 0


def test_jitter_modes_exactly() -> None:
    assert apply_jitter(10, "none", 0, lambda: 0.9) == 10
    assert apply_jitter(10, "full", 0, lambda: 0.25) == 2.5
    assert apply_jitter(10, "equal", 0, lambda: 0.5) == 7.5
    assert apply_jitter(10, "proportional", 0.2, lambda: 0.0) == 8
    assert apply_jitter(10, "proportional", 0.2, lambda: 0.5) == 10
    assert apply_jitter(10, "full", 0, None) == 10  # rng=None: nominal


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    initial = draw(st.floats(min_value=0.001, max_value=60))
    jitter = draw(st.sampled_from(JITTERS))
    return Backoff(
        initial=initial,
        multiplier=draw(st.floats(min_value=1, max_value=10)),
        max=draw(st.floats(min_value=initial, max_value=600)),
        jitter=jitter,
        jitter_ratio=draw(ratios) if jitter == "proportional" else 0.0,
    )


@given(backoff=backoffs(), k=units, u=unit_floats)
def test_backoff_never_exceeds_its_cap_plus_the_documented_jitter(
    backoff: Backoff, k: int, u: float
) -> None:
    delay = backoff.delay(k, lambda: u)
    assert 0 <= delay <= backoff.ceiling + 1e-9
    ceiling = (
        backoff.max * (1 + backoff.jitter_ratio)
        if backoff.jitter == "proportional"
        else backoff.max
    )
    assert backoff.ceiling == pytest.approx(ceiling)


@given(backoff=backoffs(), k=st.integers(min_value=0, max_value=5000))
def test_backoff_is_non_decreasing_until_the_cap(backoff: Backoff, k: int) -> None:
    assert backoff.base_delay(k) <= backoff.base_delay(k + 1)
    assert backoff.base_delay(k) <= backoff.max
    assert backoff.base_delay(0) == backoff.initial


def test_backoff_exact_values() -> None:
    b = Backoff(initial=1, multiplier=2, max=5, jitter="none")
    assert [b.delay(k, None) for k in range(5)] == [1, 2, 4, 5, 5]
    assert b.base_delay(10**9) == 5  # no overflow however long the run


@st.composite
def schedules(draw: st.DrawFn, shortest: float = 1.0) -> Schedule:
    """Valid schedules, built under the loader's rules (until increasing, never faster),
    no delay below ``shortest``."""
    count = draw(st.integers(min_value=1, max_value=4))
    untils = sorted(draw(st.sets(st.integers(min_value=60, max_value=4 * 86400),
                                 min_size=count - 1, max_size=count - 1)))  # fmt: skip
    steps: list[ScheduleStep] = []
    floor = shortest
    for i in range(count):
        until = float(untils[i]) if i < count - 1 else None
        if draw(st.booleans()):
            every = draw(st.floats(min_value=floor, max_value=floor * 20))
            steps.append(ScheduleStep(until=until, every=every))
            floor = every
        else:
            initial = draw(st.floats(min_value=floor, max_value=floor * 20))
            cap = draw(st.floats(min_value=initial, max_value=initial * 50))
            multiplier = draw(st.floats(min_value=1, max_value=4))
            steps.append(ScheduleStep(until=until, initial=initial, multiplier=multiplier, max=cap))
            floor = cap
    jitter = draw(st.sampled_from(JITTERS))
    ratio = draw(ratios) if jitter == "proportional" else 0.0
    return Schedule(name="x", steps=tuple(steps), jitter=jitter, jitter_ratio=ratio)


def with_schedule(schedule: Schedule, give_up_after: float) -> tuple[Policy, Decision]:
    policy = dataclasses.replace(
        DEFAULT,
        schedules=MappingProxyType({"x": schedule}),
        queue=dataclasses.replace(DEFAULT.queue, schedule="x", give_up_after=give_up_after),
    )
    decision = dataclasses.replace(RETRY, schedule="x", give_up_after=give_up_after)
    return policy, decision


def run_queue(
    policy: Policy, decision: Decision, rng: object = None, start: float = 1000.0
) -> list[tuple[float, float]]:
    """(time of failure, next attempt) pairs until the queue bounces."""
    now, history = start, [start]
    out: list[tuple[float, float]] = []
    for _ in range(20_000):
        step = next_step(policy, decision, first_failure_at=start, history=history, now=now,
                         rng=rng)  # type: ignore[arg-type]  # fmt: skip
        if step.action == "bounce":
            assert step.gave_up
            assert now >= start + (decision.give_up_after or 0)
            return out
        assert step.action == "defer"
        assert step.next_attempt_at is not None
        out.append((now, step.next_attempt_at))
        now = step.next_attempt_at
        history.append(now)
    raise AssertionError("the queue never gave up")


# Lifetimes and schedules whose runs stay below a few hundred attempts.
lifetimes = st.floats(min_value=60, max_value=10 * DAY)


@st.composite
def schedule_and_lifetime(draw: st.DrawFn) -> tuple[Schedule, float]:
    give_up_after = draw(lifetimes)
    return draw(schedules(shortest=max(1.0, give_up_after / 300))), give_up_after


@settings(max_examples=150, deadline=None)
@given(case=schedule_and_lifetime())
def test_nominal_schedules_are_non_decreasing_until_the_cap_and_stop_at_give_up(
    case: tuple[Schedule, float],
) -> None:
    schedule, give_up_after = case
    policy, decision = with_schedule(schedule, give_up_after)
    pairs = run_queue(policy, decision)
    delays = [at - now for now, at in pairs]
    give_up_at = 1000.0 + give_up_after
    assert all(at <= give_up_at for _, at in pairs), "nothing is scheduled after give-up"
    assert pairs[-1][1] == give_up_at, "one last attempt at the give-up time"
    longest = max(s.longest for s in schedule.steps)
    # The last delay may be cut short by give-up; the others never speed up.
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(delays[:-1]))
    assert all(d <= longest + 1e-6 for d in delays)


@settings(max_examples=300, deadline=None)
@given(case=schedule_and_lifetime(), u=unit_floats, at=st.floats(min_value=0, max_value=1),
       earlier=st.lists(st.floats(min_value=0, max_value=1), max_size=20))  # fmt: skip
def test_each_jittered_step_stays_within_its_bounds_and_before_give_up(
    case: tuple[Schedule, float], u: float, at: float, earlier: list[float]
) -> None:
    """One step anywhere in a run: the delay is the stage's base delay jittered within
    the mode's bounds (never below MIN_QUEUE_DELAY), never after give-up."""
    schedule, give_up_after = case
    policy, decision = with_schedule(schedule, give_up_after)
    now = at * give_up_after * 0.999
    history = sorted([e * now for e in earlier] + [now])
    step = next_step(policy, decision, first_failure_at=0.0, history=history, now=now,
                     rng=lambda: u)  # fmt: skip
    assert step.action == "defer"
    assert step.next_attempt_at is not None
    delay = step.next_attempt_at - now
    low, high = jitter_bounds(
        schedule.base_delay(now, history), schedule.jitter, schedule.jitter_ratio
    )
    room = give_up_after - now
    assert step.next_attempt_at <= give_up_after
    assert min(max(low, MIN_QUEUE_DELAY), room) - 1e-6 <= delay <= max(high, MIN_QUEUE_DELAY) + 1e-6
    assert delay <= schedule.ceiling + MIN_QUEUE_DELAY


def test_the_standard_schedule_exactly() -> None:
    """default's standard schedule: 10m x 6 in the first hour, then 30m x 1.5^k to 4h,
    then 6h, until 5 days; the last attempt at exactly 5 days."""
    pairs = run_queue(DEFAULT, RETRY, start=0.0)
    delays = [round(at - now) for now, at in pairs]
    assert delays[:6] == [600] * 6
    assert delays[6:13] == [1800, 2700, 4050, 6075, 9112, 13669, 14400]
    assert set(delays[15:-1]) == {21600}
    assert pairs[-1][1] == 5 * DAY


def test_next_step_maps_every_action() -> None:
    def step(action: str, **kw: object) -> object:
        d = dataclasses.replace(RETRY, action=action, **kw)  # type: ignore[arg-type]
        return next_step(DEFAULT, d, first_failure_at=0, history=[0], now=100, rng=None)

    assert step("deliver").action == "deliver"  # type: ignore[attr-defined]
    bounced = step("bounce", retry=False)
    assert (bounced.action, bounced.suppress, bounced.gave_up) == ("bounce", False, False)  # type: ignore[attr-defined]
    suppressed = step("suppress", retry=False, suppress=True)
    assert (suppressed.action, suppressed.suppress) == ("bounce", True)  # type: ignore[attr-defined]
    held = step("hold", retry=False)
    assert (held.action, held.next_attempt_at) == ("hold", 100 + HOUR)  # type: ignore[attr-defined]
    rebatch = step("rebatch")
    assert (rebatch.action, rebatch.next_attempt_at) == ("rebatch", 100)  # type: ignore[attr-defined]
    throttled = step("throttle", pause=900.0)
    assert (throttled.action, throttled.pause_relay_until) == ("defer", 1000)  # type: ignore[attr-defined]
    assert throttled.next_attempt_at == 1000  # type: ignore[attr-defined]  # the pause is a floor


def test_the_servers_delay_and_min_delay_are_floors() -> None:
    d = dataclasses.replace(RETRY, min_delay=60.0)
    s = next_step(DEFAULT, d, first_failure_at=0, history=[0], now=0, retry_after=1200, rng=None)
    assert s.next_attempt_at == 1200
    s = next_step(DEFAULT, d, first_failure_at=0, history=[0], now=0, retry_after=5, rng=None)
    assert s.next_attempt_at == 600  # the schedule's 10m is longer than both floors


def test_at_give_up_time_the_queue_bounces_without_suppressing() -> None:
    s = next_step(DEFAULT, RETRY, first_failure_at=0, history=[0], now=5 * DAY, rng=None)
    assert (s.action, s.gave_up, s.suppress, s.give_up_at) == ("bounce", True, False, 5 * DAY)


@given(max_attempts=st.integers(min_value=1, max_value=10),
       deadline=st.floats(min_value=0.01, max_value=120))  # fmt: skip
def test_plans_count_the_first_attempt(max_attempts: int, deadline: float) -> None:
    policy = dataclasses.replace(
        DEFAULT,
        inline=dataclasses.replace(
            DEFAULT.inline, max_attempts=max_attempts, deadline=deadline, attempt_timeout=deadline
        ),
    )
    attempts, _ = plan_attempts(policy, RETRY)
    inline = [a for a in attempts if a.tier in ("first", "inline")]
    assert 1 <= len(inline) <= max_attempts
    assert attempts[0].tier == "first"
    assert all(a.at < deadline for a in inline)
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))


_FORK_DRAWS = """
import os
from mailpolicy._schedule import default_rng
for _ in range(3):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, repr(default_rng()).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        print(fh.read())
    os.waitpid(pid, 0)
"""


def test_forked_processes_draw_different_jitter() -> None:
    """gunicorn --preload forks workers from one parent: the default generator is
    reseeded in each child, so their retries spread (concurrency review). Forked from a
    fresh single-threaded interpreter, not from the test process."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    done = subprocess.run(
        [sys.executable, "-c", _FORK_DRAWS], capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    draws = done.stdout.split()
    assert len(draws) == 3
    assert len(set(draws)) == 3
