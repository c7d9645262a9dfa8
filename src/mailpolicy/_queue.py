"""The queue tier as a pure function, and the whole attempt plan a decision implies.

:func:`next_step` answers "what now, and when next?" for a failure the inline tier did
not resolve: ``f(policy, decision, first failure time, attempt history, now)`` returns a
:class:`QueueStep` to deliver, defer until a time, hold, rebatch, or bounce (and perhaps
suppress). Reaching the ``[inline]`` limits never bounces: only ``[queue]
give_up_after`` (counted from the first failure) or a permanent decision does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from ._policy import Decision, Policy, QueueSettings
from ._schedule import Rng, apply_jitter, default_rng, jitter_bounds

QueueAction = Literal["deliver", "defer", "hold", "rebatch", "bounce"]

#: A plan never lists more attempts than this (a guard, far above any sane schedule).
MAX_PLANNED: Final = 1000
#: The queue never retries sooner than this after a failure (full jitter may draw 0).
MIN_QUEUE_DELAY: Final = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStep:
    """What the queue does next. ``next_attempt_at`` is set for defer, hold and rebatch;
    ``gave_up`` says a bounce came from ``give_up_after``, not from the reply;
    ``pause_relay_until`` is set after a ``throttle``."""

    action: QueueAction
    rule: str
    next_attempt_at: float | None = None
    suppress: bool = False
    give_up_at: float | None = None
    gave_up: bool = False
    pause_relay_until: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _queue_settings(policy: Policy, decision: Decision) -> QueueSettings:
    for destination in policy.destinations:
        if destination.name == decision.destination:
            return destination.queue
    return policy.queue


def _floor(decision: Decision, retry_after: float | None) -> float:
    """The least delay: the rule's ``min_delay``, the server's announced delay (e.g.
    greylisting's "try again in 300 seconds"), and a throttle's relay pause."""
    return max(decision.min_delay, retry_after or 0.0, decision.pause or 0.0)


def next_step(
    policy: Policy,
    decision: Decision,
    *,
    first_failure_at: float,
    history: Sequence[float],
    now: float,
    retry_after: float | None = None,
    rng: Rng | None = default_rng,
) -> QueueStep:
    """The queue's next step after a delivery attempt that ended with ``decision``.

    ``history`` holds the times of the failed queue deliveries so far (a ``send()`` whose
    inline tier deferred counts as one, at the time it deferred), the current one
    included; it counts the steps of an exponential schedule stage. ``rng=None`` gives
    the nominal (un-jittered) time. Times are seconds on any one clock.
    """
    action = decision.action
    if action == "deliver":
        return QueueStep(action="deliver", rule=decision.rule)
    if action in ("bounce", "suppress"):
        return QueueStep(action="bounce", rule=decision.rule, suppress=decision.suppress)
    queue = _queue_settings(policy, decision)
    if action == "hold":
        return QueueStep(action="hold", rule=decision.rule, next_attempt_at=now + queue.hold_for)
    if action == "rebatch":
        return QueueStep(action="rebatch", rule=decision.rule, next_attempt_at=now)
    # retry (inline limits reached), defer, throttle: the schedule decides when.
    give_up_after = decision.give_up_after or queue.give_up_after
    give_up_at = first_failure_at + give_up_after
    if now >= give_up_at:
        return QueueStep(action="bounce", rule=decision.rule, give_up_at=give_up_at, gave_up=True)
    schedule = policy.schedules[decision.schedule or queue.schedule]
    elapsed = now - first_failure_at
    base = schedule.base_delay(elapsed, [t - first_failure_at for t in history])
    delay = max(
        apply_jitter(base, schedule.jitter, schedule.jitter_ratio, rng),
        _floor(decision, retry_after),
        MIN_QUEUE_DELAY,
    )
    # A throttle pauses the relay; a retry with a pause does once the queue has it (its
    # inline retries are used up: a 421 rate limit, retried inline like any 421).
    pause_until = (
        now + decision.pause if action in ("throttle", "retry") and decision.pause else None
    )
    return QueueStep(
        action="defer",
        rule=decision.rule,
        # One last attempt at the give-up time rather than none after it.
        next_attempt_at=min(now + delay, give_up_at),
        give_up_at=give_up_at,
        pause_relay_until=pause_until,
    )


Tier = Literal["first", "inline", "queue", "hold", "rebatch"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedAttempt:
    """One attempt of a plan: ``at`` seconds after the first attempt (nominal, without
    jitter), after a nominal ``wait``; jitter may make that wait anything in
    ``[wait_min, wait_max]``."""

    number: int
    tier: Tier
    at: float
    wait: float
    wait_min: float
    wait_max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_attempts(
    policy: Policy,
    decision: Decision,
    *,
    retry_after: float | None = None,
    domain: str | None = None,
) -> tuple[tuple[PlannedAttempt, ...], QueueStep]:
    """Every attempt ``decision`` leads to if each one fails the same way, and the final
    step (bounce after give-up, bounce, hold, rebatch or deliver). Attempts take no time;
    the budget and circuit are assumed healthy."""
    attempts = [
        PlannedAttempt(number=1, tier="first", at=0.0, wait=0.0, wait_min=0.0, wait_max=0.0)
    ]
    now = 0.0
    if decision.inline:
        inline = policy.inline_for(domain)
        backoff = inline.backoff
        while len(attempts) < inline.max_attempts:
            base = backoff.base_delay(len(attempts) - 1)
            low, high = jitter_bounds(base, backoff.jitter, backoff.jitter_ratio)
            floor = retry_after or 0.0
            wait = max(base, floor)
            if now + wait >= inline.deadline:  # tenacity's stop_before_delay
                break
            now += wait
            attempts.append(
                PlannedAttempt(
                    number=len(attempts) + 1,
                    tier="inline",
                    at=now,
                    wait=wait,
                    wait_min=max(low, floor),
                    wait_max=max(high, floor),
                )
            )
    history = [now]
    while len(attempts) < MAX_PLANNED:
        step = next_step(
            policy,
            decision,
            first_failure_at=0.0,
            history=history,
            now=now,
            retry_after=retry_after,
            rng=None,
        )
        if step.action in ("deliver", "bounce") or step.next_attempt_at is None:
            return tuple(attempts), step
        tier: Tier = "hold" if step.action == "hold" else "queue"
        if step.action == "rebatch":
            tier = "rebatch"
        wait = step.next_attempt_at - now
        low, high = wait, wait
        if step.action == "defer":
            schedule = policy.schedules[
                decision.schedule or _queue_settings(policy, decision).schedule
            ]
            base = schedule.base_delay(now, history)
            floor = max(_floor(decision, retry_after), MIN_QUEUE_DELAY)
            low, high = jitter_bounds(base, schedule.jitter, schedule.jitter_ratio)
            cap = (step.give_up_at or 0.0) - now
            low, high = min(max(low, floor), cap), min(max(high, floor), cap)
        now = step.next_attempt_at
        attempts.append(
            PlannedAttempt(
                number=len(attempts) + 1, tier=tier, at=now, wait=wait, wait_min=low, wait_max=high
            )
        )
        if step.action in ("hold", "rebatch"):
            return tuple(attempts), step
        history.append(now)
    return tuple(attempts), QueueStep(action="bounce", rule=decision.rule, gave_up=True)
