"""What ``Sender.send()`` reports: one :class:`RecipientOutcome` per envelope recipient."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from ._vocab import Reason

State = Literal["delivered", "deferred", "bounced", "invalid", "suppressed", "held"]
STATES: Final[tuple[State, ...]] = get_args(State)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientOutcome:
    """The end state of one recipient of one ``send()`` (DESIGN.md §1).

    ``recipient`` is the address as the caller gave it; ``reason``, ``code``, ``status``
    and ``text`` describe the deciding reply (or local check); ``attempts`` counts SMTP
    attempts that named this recipient; ``ambiguous`` marks a drop after the final dot
    (the server may have the message); ``next_attempt_at`` (UTC) is when a deferred or
    held recipient is due again; ``persisted`` whether a store holds it for the worker.
    ``rule`` is the classification rule and ``action`` the policy's action.
    """

    recipient: str
    state: State
    reason: Reason
    code: int | None = None
    status: str | None = None
    text: str = ""
    attempts: int = 0
    ambiguous: bool = False
    next_attempt_at: datetime | None = None
    persisted: bool = False
    rule: str = ""
    action: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``next_attempt_at`` as ISO 8601)."""
        return {
            "recipient": self.recipient,
            "state": self.state,
            "reason": self.reason,
            "code": self.code,
            "status": self.status,
            "text": self.text,
            "attempts": self.attempts,
            "ambiguous": self.ambiguous,
            "next_attempt_at": None
            if self.next_attempt_at is None
            else self.next_attempt_at.isoformat(),
            "persisted": self.persisted,
            "rule": self.rule,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    """The result of one ``send()``: the Message-ID it went out with, the envelope, the
    relay and policy used, and one outcome per recipient in the caller's order."""

    message_id: str
    envelope_from: str
    relay: str
    policy: str
    outcomes: tuple[RecipientOutcome, ...]
    elapsed_ms: float = 0.0

    def by_state(self, *states: State) -> list[RecipientOutcome]:
        return [o for o in self.outcomes if o.state in states]

    @property
    def delivered(self) -> list[RecipientOutcome]:
        return self.by_state("delivered")

    @property
    def all_delivered(self) -> bool:
        return all(o.state == "delivered" for o in self.outcomes)

    @property
    def pending(self) -> list[RecipientOutcome]:
        """Recipients that may still be delivered later (deferred or held)."""
        return self.by_state("deferred", "held")

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "envelope_from": self.envelope_from,
            "relay": self.relay,
            "policy": self.policy,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
