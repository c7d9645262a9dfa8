"""The one vocabulary: SMTP stages, failure reasons, verdict kinds and scopes.

Everything else (classification rules, policies, events, the CLI's JSON, the docs)
uses these names; DESIGN.md §1-§2 defines them.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Stage = Literal[
    "connect",
    "greeting",
    "ehlo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "end_of_data",
    "quit",
]
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)

Kind = Literal["success", "transient", "permanent"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

Scope = Literal["recipient", "message", "relay"]
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)

Reason = Literal[
    "delivered",
    "service_unavailable",
    "rate_limited",
    "greylisted",
    "mailbox_full",
    "mailbox_unknown",
    "mailbox_disabled",
    "mailbox_name_invalid",
    "domain_not_found",
    "mailbox_moved",
    "relay_denied",
    "policy_blocked",
    "content_rejected",
    "message_too_large",
    "too_many_recipients",
    "sender_rejected",
    "auth_required",
    "auth_failed",
    "tls_required",
    "tls_failed",
    "system_error",
    "protocol_error",
    "network_error",
    "timeout",
    "unknown",
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

#: Reasons that say the address itself is dead (DESIGN.md §2 rule 3): the only ones that
#: may suppress a recipient, and only when permanent and at a recipient stage.
DEAD_ADDRESS_REASONS: Final[frozenset[Reason]] = frozenset(
    {
        "mailbox_unknown",
        "mailbox_disabled",
        "mailbox_name_invalid",
        "domain_not_found",
        "mailbox_moved",
    }
)

#: Permanent failures of our own configuration: held, never bounced (DESIGN.md §3).
HOLD_REASONS: Final[frozenset[Reason]] = frozenset(
    {"auth_required", "auth_failed", "tls_required", "relay_denied", "tls_failed"}
)

#: Stages at which a reply speaks about one recipient (or may: None = unknown stage).
RECIPIENT_STAGES: Final[frozenset[Stage | None]] = frozenset({"rcpt", "end_of_data", None})

#: Stages before any envelope command: a failure there is about the relay, not the mail.
SESSION_STAGES: Final[frozenset[Stage]] = frozenset(
    {"connect", "greeting", "ehlo", "starttls", "auth", "quit"}
)


def as_reason(value: str) -> Reason:
    """``value`` if it is a taxonomy reason (read back from a store, say), else
    ``unknown``."""
    return value if value in REASONS else "unknown"
