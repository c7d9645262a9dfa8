"""``mailpolicy policy explain``: which rule fires for a reply, and the whole schedule.

:func:`explain` classifies the reply, asks the policy, and plans every attempt until
the final step; :func:`render_explanation` draws it as a table for a person, and
:meth:`Explanation.to_dict` gives the JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._policy import Decision, Policy, is_soft_bounce
from ._queue import PlannedAttempt, QueueStep, plan_attempts
from ._schedule import format_duration
from ._vocab import Kind, Reason, Stage


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """The classification of a reply, the policy's decision and the attempt plan."""

    policy: str
    reply: str
    stage: Stage | None
    domain: str | None
    code: int | None
    status: str | None
    kind: Kind
    reason: Reason
    retry_after: float | None
    decision: Decision
    #: The classification rule that gave the reason (shipped, or the policy's own).
    classified_by: str
    #: What the failure is about (recipient, message or relay): a throttle pauses the
    #: relay only for a relay-wide limit.
    scope: str
    attempts: tuple[PlannedAttempt, ...]
    final: QueueStep
    #: When the plan ends in a soft bounce of the address (a full mailbox, or the queue
    #: giving up on a 4xx dead-address reply): the ``[suppression]`` soft_bounce_limit
    #: and soft_bounce_window (the destination's, if any) that count it. None when it is
    #: not one, or soft bounces are not counted (suppression disabled, limit 0).
    soft_bounce: tuple[int, float] | None = None

    @property
    def outcome(self) -> str:
        """The end of the plan in words."""
        step = self.final
        if step.action == "bounce" and step.gave_up:
            after = format_duration(step.give_up_at or 0.0)
            return f"bounced: gave up {after} after the first failure"
        if step.action == "bounce":
            return "bounced and suppressed" if step.suppress else "bounced"
        if step.action == "hold":
            return "held: tried again after hold_for, or when released; the operator is alerted"
        if step.action == "rebatch":
            return "the remaining recipients go in a new transaction"
        return "delivered"

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "reply": self.reply,
            "stage": self.stage,
            "domain": self.domain,
            "code": self.code,
            "status": self.status,
            "kind": self.kind,
            "reason": self.reason,
            "retry_after": self.retry_after,
            "classified_by": self.classified_by,
            "scope": self.scope,
            "rule": self.decision.rule,
            "action": self.decision.action,
            "decision": self.decision.to_dict(),
            "schedule": [a.to_dict() for a in self.attempts],
            "final": self.final.to_dict(),
            "outcome": self.outcome,
            "soft_bounce": None
            if self.soft_bounce is None
            else {"limit": self.soft_bounce[0], "window": self.soft_bounce[1]},
        }


def explain(
    policy: Policy, *, reply: str, stage: Stage | None = None, domain: str | None = None
) -> Explanation:
    """Classify ``reply`` (at ``stage``, for a recipient at ``domain``) and explain what
    ``policy`` does about it, attempt by attempt."""
    # Imported here: _classify will import the policy modules, not the other way round.
    from ._classify import classify, decide_on  # noqa: PLC0415

    verdict = classify(reply, stage=stage, rules=policy.classifier)
    decision = decide_on(policy, verdict, text=reply, domain=domain)
    retry_after = float(verdict.retry_after) if verdict.retry_after is not None else None
    attempts, final = plan_attempts(policy, decision, retry_after=retry_after, domain=domain)
    suppression = policy.suppression_for(domain)
    soft = (
        final.action == "bounce"
        and not final.suppress
        and suppression.enabled
        and suppression.soft_bounce_limit > 0
        and is_soft_bounce(verdict.reason, gave_up=final.gave_up)
    )
    return Explanation(
        policy=policy.name,
        reply=reply,
        stage=verdict.stage,
        domain=domain,
        code=verdict.code,
        status=verdict.status,
        kind=verdict.kind,
        reason=verdict.reason,
        retry_after=retry_after,
        decision=decision,
        classified_by=verdict.rule,
        scope=verdict.scope,
        attempts=attempts,
        final=final,
        soft_bounce=(
            (suppression.soft_bounce_limit, suppression.soft_bounce_window) if soft else None
        ),
    )


def _nth(n: int) -> str:
    if n == 1:
        return "the first"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"the {n}{suffix}"


def _span(low: float, high: float) -> str:
    if abs(high - low) < 0.0005:
        return ""
    return f"{format_duration(low)}-{format_duration(high)}"


def render_explanation(explanation: Explanation) -> str:
    """A person's view: the decision, then one row per attempt."""
    e = explanation
    d = e.decision
    lines = [
        f"policy   {e.policy}",
        f"reply    {e.reply.splitlines()[0] if e.reply else ''}",
        f"verdict  {e.kind} / {e.reason} (code {e.code}, status {e.status}, stage {e.stage}; "
        f"classification rule {e.classified_by})",
        f"rule     {d.rule}" + (f" (destination {d.destination})" if d.destination else ""),
        f"action   {d.action}  retry={str(d.retry).lower()} suppress={str(d.suppress).lower()}",
    ]
    if e.retry_after is not None:
        lines.append(f"server   asked to wait {format_duration(e.retry_after)}")
    if d.pause and d.action in ("throttle", "retry") and e.scope == "relay":
        when = "at once" if d.action == "throttle" else "once the inline retries are used up"
        lines.append(f"relay    paused {format_duration(d.pause)} {when} (a relay-wide limit)")
    lines.append("")
    header = ("#", "tier", "at", "wait", "jitter range")
    rows = [
        (
            str(a.number),
            a.tier,
            format_duration(a.at) if a.at else "0s",
            format_duration(a.wait) if a.wait else "-",
            _span(a.wait_min, a.wait_max),
        )
        for a in e.attempts
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )
    lines.append("")
    lines.append(f"then     {e.outcome}")
    if e.soft_bounce is not None:
        limit, window = e.soft_bounce
        lines.append(
            f"         a soft bounce of the address: {_nth(limit)} within "
            f"{format_duration(window)} puts it on the suppression list "
            "([suppression] soft_bounce_limit)"
        )
    return "\n".join(lines)
