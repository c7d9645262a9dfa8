"""The policy model: what to do about a failure, and how its timing is configured.

A :class:`Policy` is an immutable, validated object built from TOML by
:func:`mailpolicy._policy_load.load_policy`. Its one decision function,
:meth:`Policy.decide`, works on plain values (kind, reason, code, enhanced status, stage,
text, destination domain) so the classifier can delegate to it without an import cycle:
this module imports nothing from ``_classify``.

Ordered rules, first match wins (Exim): a destination's rules are tried before the
policy's, and the effective list always ends with a catch-all (``when = {}``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, get_args

from ._address import AddressMode, domain_matches
from ._rules import RuleSet
from ._schedule import Backoff, Schedule
from ._vocab import DEAD_ADDRESS_REASONS, KINDS, REASONS, RECIPIENT_STAGES, Kind, Reason, Stage

Action = Literal["retry", "defer", "throttle", "rebatch", "bounce", "suppress", "hold"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)

#: The decision for a success (``kind == "success"``); never the action of a rule.
DELIVER: Final = "deliver"

#: Actions that try the recipient again (DESIGN.md §3): ``Verdict.retry`` is True for them.
RETRYING_ACTIONS: Final[frozenset[str]] = frozenset({"retry", "defer", "throttle", "rebatch"})

#: Actions that take timing overrides (``schedule``, ``min_delay``, ``give_up_after``).
TIMED_ACTIONS: Final[frozenset[str]] = frozenset({"retry", "defer", "throttle"})

#: Only this much of a reply is searched by ``when.text`` (bounds a regex's cost).
TEXT_SCAN: Final = 2048


@dataclass(frozen=True, slots=True)
class CodePattern:
    """A reply-code (``"4xx"``) or enhanced-status (``"5.7.*"``) pattern as written, and
    its compiled form; ``regex=None`` is the word ``none`` (no code at all)."""

    source: str
    regex: re.Pattern[str] | None

    def __call__(self, value: str) -> bool:
        if self.regex is None:
            return value == ""
        return self.regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineSettings:
    """Retries inside the caller's ``send()``: ``max_attempts`` counts the first try."""

    max_attempts: int = 3
    deadline: float = 15.0
    attempt_timeout: float = 10.0
    backoff: Backoff = field(
        default_factory=lambda: Backoff(initial=1.0, multiplier=2.0, max=5.0, jitter="full")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """Retries from the durable outbox. ``give_up_after`` counts from the first failure."""

    schedule: str
    give_up_after: float = 5 * 86400.0
    hold_for: float = 3600.0
    # RFC 5321 §4.5.3.2.6: wait 10 minutes for the reply after the final dot.
    end_of_data_timeout: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSettings:
    """A token bucket per relay guarding inline retries (botocore's retry quota)."""

    capacity: int = 50
    retry_cost: int = 5
    success_refund: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitSettings:
    """Per relay: open after ``open_after`` consecutive connection-level failures; while
    open, one probe per ``probe_every``."""

    open_after: int = 3
    probe_every: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressSettings:
    """Pre-validation (DESIGN.md §4): ``strict`` is email-validator's own rules,
    ``syntax`` adds the local-domain allowances, ``off`` skips it."""

    mode: AddressMode = "syntax"
    check_deliverability: bool = False
    allow_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressionSettings:
    """Whether ``suppress`` decisions add to the list, and for how long (None: forever).

    Soft bounces escalate: a message that ends undelivered on a failure that does not
    prove the address dead (a permanent full mailbox; the queue giving up on a 4xx full
    mailbox or "user unknown") counts once for its address in the store, its retries not
    at all; ``soft_bounce_limit`` of them within ``soft_bounce_window`` put the address on
    the list (0 turns this off).
    """

    enabled: bool = True
    check_before_send: bool = True
    ttl: float | None = 365 * 86400.0
    soft_bounce_limit: int = 5
    soft_bounce_window: float = 30 * 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class When:
    """A rule's conditions: AND across keys, OR inside each; None means "any"."""

    stages: frozenset[Stage | None] | None = None
    kinds: frozenset[Kind] | None = None
    reasons: frozenset[Reason] | None = None
    replies: tuple[CodePattern, ...] = ()
    enhanced: tuple[CodePattern, ...] = ()
    text: re.Pattern[str] | None = None

    @property
    def is_catch_all(self) -> bool:
        return (
            self.stages is None
            and self.kinds is None
            and self.reasons is None
            and not self.replies
            and not self.enhanced
            and self.text is None
        )

    def holds(  # noqa: PLR0917 - the hot path of decide(): positional on purpose
        self, kind: Kind, reason: Reason, code: str, status: str, stage: Stage | None, text: str
    ) -> bool:
        if self.stages is not None and stage not in self.stages:
            return False
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.reasons is not None and reason not in self.reasons:
            return False
        if self.replies and not any(m(code) for m in self.replies):
            return False
        if self.enhanced and not any(m(status) for m in self.enhanced):
            return False
        return self.text is None or self.text.search(text, 0, TEXT_SCAN) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRule:
    """One ``[[rules]]`` entry. ``source``/``path`` say where it was written."""

    name: str
    when: When
    action: Action
    schedule: str | None = None
    min_delay: float = 0.0
    give_up_after: float | None = None
    pause: float | None = None
    source: str = field(default="", compare=False)
    path: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """A ``[[destinations]]`` entry, resolved: its settings are the policy's with the
    destination's overrides applied, and ``rules`` are its own followed by the policy's."""

    name: str
    domains: tuple[str, ...]
    inline: InlineSettings
    queue: QueueSettings
    suppression: SuppressionSettings
    rules: tuple[PolicyRule, ...]

    def matches(self, domain: str) -> bool:
        return domain_matches(domain, self.domains)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What a policy does about one reply.

    ``action`` is one of :data:`ACTIONS`, or ``"deliver"`` for a success; ``rule`` names
    the policy rule that fired. ``retry`` and ``suppress`` are what a Verdict reports:
    ``retry`` for retry/defer/throttle/rebatch, ``suppress`` for suppress (hold: neither).
    ``schedule``, ``min_delay``, ``give_up_after`` (seconds since the first failure) and
    ``pause`` (of the relay, for throttle) are the effective timing for the queue tier;
    ``destination`` the ``[[destinations]]`` entry that applied, if any.
    """

    action: str
    rule: str
    retry: bool
    suppress: bool
    schedule: str | None = None
    min_delay: float = 0.0
    give_up_after: float | None = None
    pause: float | None = None
    destination: str | None = None

    @property
    def inline(self) -> bool:
        """Whether the inline tier may try again at once (only ``retry`` does)."""
        return self.action == "retry"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return asdict(self)


_SUCCESS: Final = Decision(action=DELIVER, rule="delivered", retry=False, suppress=False)


def recipient_evidence(
    kind: Kind, reason: Reason, stage: Stage | None, *, attributed: bool = True
) -> bool:
    """DESIGN.md §2 rule 3: a permanent, dead-address reason at a recipient stage (or an
    unknown one), tied to the recipient. The only evidence on which anything suppresses."""
    return (
        attributed
        and kind == "permanent"
        and reason in DEAD_ADDRESS_REASONS
        and stage in RECIPIENT_STAGES
    )


#: Failures that say something about the address without proving it dead (DESIGN.md §2):
#: a message that ends on one counts toward [suppression] soft_bounce_limit.
SOFT_BOUNCE_REASONS: Final[frozenset[str]] = DEAD_ADDRESS_REASONS | {"mailbox_full"}


def is_soft_bounce(reason: str, *, gave_up: bool) -> bool:
    """Whether a message that ended undelivered, without the policy suppressing the
    address, counts as a soft bounce of it: a permanent "mailbox full", or the queue
    giving up (``gave_up``) on a full mailbox or a 4xx dead-address reason. A hard
    bounce the policy chose not to suppress counts for nothing: that was its decision.
    (The Sender counts, ``policy explain`` shows it: one rule for both.)"""
    return reason == "mailbox_full" or (gave_up and reason in SOFT_BOUNCE_REASONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """An immutable, validated retry and bounce policy (see ``docs/policies.md``)."""

    name: str
    description: str
    source: str
    extends: str | None
    inline: InlineSettings
    queue: QueueSettings
    schedules: Mapping[str, Schedule]
    rules: tuple[PolicyRule, ...]
    budget: BudgetSettings
    circuit: CircuitSettings
    address: AddressSettings
    suppression: SuppressionSettings
    destinations: tuple[Destination, ...] = ()
    #: The classification rules replies are judged by under this policy: the shipped
    #: ones with the policy's ``[[classification]]`` rules first; None: the shipped ones.
    classifier: RuleSet | None = field(default=None, repr=False, compare=False)
    _decisions: Mapping[tuple[str | None, str], Decision] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _index: Mapping[tuple[str | None, str, str], tuple[PolicyRule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def destination_for(self, domain: str | None) -> Destination | None:
        """The first ``[[destinations]]`` entry matching a recipient domain (IDNA ASCII,
        any case; ``*.x`` matches subdomains of ``x``), or None."""
        if not domain or not self.destinations:
            return None
        domain = domain.lower().rstrip(".")
        for destination in self.destinations:
            if destination.matches(domain):
                return destination
        return None

    def inline_for(self, domain: str | None) -> InlineSettings:
        destination = self.destination_for(domain)
        return self.inline if destination is None else destination.inline

    def queue_for(self, domain: str | None) -> QueueSettings:
        destination = self.destination_for(domain)
        return self.queue if destination is None else destination.queue

    def suppression_for(self, domain: str | None) -> SuppressionSettings:
        destination = self.destination_for(domain)
        return self.suppression if destination is None else destination.suppression

    def __post_init__(self) -> None:
        # Decisions depend only on (destination, rule), and which rules can hold only on
        # (kind, reason) before the per-reply conditions: both are computed once here, so
        # decide() - on the classifier's hot path - only checks the remaining conditions.
        decisions: dict[tuple[str | None, str], Decision] = {}
        index: dict[tuple[str | None, str, str], tuple[PolicyRule, ...]] = {}
        scopes: list[tuple[Destination | None, tuple[PolicyRule, ...]]] = [(None, self.rules)]
        scopes += [(d, d.rules) for d in self.destinations]
        for destination, rules in scopes:
            key = None if destination is None else destination.name
            for rule in rules:
                decisions[(key, rule.name)] = self._decision(rule, destination)
            for kind, reason in itertools.product(KINDS, REASONS):
                index[(key, kind, reason)] = tuple(
                    r
                    for r in rules
                    if (r.when.kinds is None or kind in r.when.kinds)
                    and (r.when.reasons is None or reason in r.when.reasons)
                )
        object.__setattr__(self, "_decisions", decisions)
        object.__setattr__(self, "_index", index)

    def _decision(self, rule: PolicyRule, destination: Destination | None) -> Decision:
        queue = self.queue if destination is None else destination.queue
        action: str = rule.action
        if action == "suppress":
            suppression = self.suppression if destination is None else destination.suppression
            if not suppression.enabled:
                action = "bounce"
        timed = action in TIMED_ACTIONS
        give_up = queue.give_up_after
        if timed and rule.give_up_after is not None:
            give_up = min(give_up, rule.give_up_after)
        return Decision(
            action=action,
            rule=rule.name,
            retry=action in RETRYING_ACTIONS,
            suppress=action == "suppress",
            schedule=(rule.schedule or queue.schedule) if timed else None,
            min_delay=rule.min_delay if timed else 0.0,
            give_up_after=give_up if timed else None,
            pause=rule.pause,
            destination=None if destination is None else destination.name,
        )

    def decide(
        self,
        *,
        kind: Kind,
        reason: Reason,
        code: int | None,
        status: str | None,
        stage: Stage | None,
        text: str = "",
        domain: str | None = None,
        attributed: bool = True,
    ) -> Decision:
        """The first rule whose ``when`` holds decides.

        A ``suppress`` rule only fires on recipient evidence (:func:`recipient_evidence`;
        ``attributed=False`` says the classifier could not tie a dead-address reason to
        this recipient); otherwise the next rule decides. With suppression disabled, a
        ``suppress`` decision bounces instead.
        """
        if kind == "success":
            return _SUCCESS
        destination = self.destination_for(domain) if self.destinations else None
        key = None if destination is None else destination.name
        code_s = "" if code is None else str(code)
        status_s = status or ""
        for rule in self._index[(key, kind, reason)]:
            if not rule.when.holds(kind, reason, code_s, status_s, stage, text):
                continue
            if rule.action == "suppress" and not recipient_evidence(
                kind, reason, stage, attributed=attributed
            ):
                continue
            return self._decisions[(key, rule.name)]
        # Unreachable for a loaded policy: its rules end with a catch-all, and a catch-all
        # suppress rule is refused at load time.
        raise AssertionError(f"policy {self.name!r}: no rule matched")  # pragma: no cover
