"""The default decisions as DESIGN.md states them, written out independently of the
shipped policy file: the tests check that ``policies/default.toml`` (the one source of
truth the classifier uses) says exactly this."""

from __future__ import annotations

from mailpolicy import Kind, Reason, Stage
from mailpolicy._vocab import DEAD_ADDRESS_REASONS, RECIPIENT_STAGES


def default_decision(
    kind: Kind, reason: Reason, stage: Stage | None, *, attributed: bool = True
) -> tuple[bool, bool]:
    """``(retry, suppress)``: success neither; transient retried; permanent not retried
    except a rate limit (a quota that resets: classification.md §5.1); suppression only
    on recipient evidence (DESIGN.md §2 rule 3)."""
    if kind == "success":
        return False, False
    if kind == "transient":
        return True, False
    retry = reason == "rate_limited"
    suppress = attributed and reason in DEAD_ADDRESS_REASONS and stage in RECIPIENT_STAGES
    return retry, suppress
