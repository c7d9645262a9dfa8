"""``Policy.decide``: the rules of the shipped policies, and one source of truth with the
classifier's ``retry``/``suppress``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from decision_spec import default_decision
from mailpolicy import KINDS, REASONS, STAGES, Kind, Reason, Stage, classify
from mailpolicy._explain import explain
from mailpolicy._policy import ACTIONS, RETRYING_ACTIONS, Decision, Policy
from mailpolicy._policy_load import load_policy
from mailpolicy._vocab import DEAD_ADDRESS_REASONS, HOLD_REASONS

DEFAULT = load_policy("default")
DATA = Path(__file__).parent / "data"

# Reply codes consistent with each kind (the class of the code governs the kind, except
# RFC 5321 §4.5.3.1.10's transient 552), and None for failures without a reply.
CODES_BY_KIND: dict[Kind, tuple[int | None, ...]] = {
    "success": (250, None),
    "transient": (None, 421, 450, 451, 452, 552),
    "permanent": (None, 550, 551, 553, 554),
}


def decide(policy: Policy, reply: str, stage: Stage | None = None, **kw: str) -> Decision:
    v = classify(reply, stage=stage)
    return policy.decide(
        kind=v.kind,
        reason=v.reason,
        code=v.code,
        status=v.status,
        stage=v.stage,
        text=reply,
        domain=kw.get("domain"),
    )


def test_the_default_policy_agrees_with_default_decision_everywhere() -> None:
    """Every kind x reason x stage (None included) x code x attribution: the shipped
    default policy's (retry, suppress) are today's hard-coded decisions."""
    checked = 0
    stages: tuple[Stage | None, ...] = (*STAGES, None)
    for kind, reason, stage, attributed in itertools.product(KINDS, REASONS, stages, (True, False)):
        expected = default_decision(kind, reason, stage, attributed=attributed)
        for code in CODES_BY_KIND[kind]:
            for status in (None, "5.1.1", "4.7.0"):
                d = DEFAULT.decide(
                    kind=kind,
                    reason=reason,
                    code=code,
                    status=status,
                    stage=stage,
                    attributed=attributed,
                )
                assert (d.retry, d.suppress) == expected, (kind, reason, stage, code, d)
                checked += 1
    assert checked > 10_000


def test_decisions_keep_the_design_invariants() -> None:
    """retry is exactly the retrying actions, suppress exactly suppress, hold neither."""
    stages: tuple[Stage | None, ...] = (*STAGES, None)
    for kind, reason, stage in itertools.product(KINDS, REASONS, stages):
        for code in CODES_BY_KIND[kind]:
            d = DEFAULT.decide(kind=kind, reason=reason, code=code, status=None, stage=stage)
            assert d.action in (*ACTIONS, "deliver")
            assert d.retry == (d.action in RETRYING_ACTIONS)
            assert d.suppress == (d.action == "suppress")
            if d.action == "hold":
                assert (kind, reason in HOLD_REASONS) == ("permanent", True)
            if d.suppress:
                assert kind == "permanent"
                assert reason in DEAD_ADDRESS_REASONS
                assert stage in ("rcpt", "end_of_data", None)


def _corpus_replies() -> list[tuple[str, Stage | None]]:
    out: list[tuple[str, Stage | None]] = []
    with (DATA / "sisimai-replies.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            out.append((record["reply"], None))
            out.append((record["reply"], "rcpt"))
    return out


def test_the_default_policy_agrees_with_classify_on_the_corpus() -> None:
    replies = _corpus_replies()
    assert len(replies) > 1000
    for reply, stage in replies:
        v = classify(reply, stage=stage)
        e = explain(DEFAULT, reply=reply, stage=stage)
        assert (e.decision.retry, e.decision.suppress) == (v.retry, v.suppress), reply


@pytest.mark.parametrize(
    ("reply", "stage", "rule", "action"),
    [
        # The mission's core case: any 421 is retried inline, whatever its reason.
        ("421 4.3.2 Service shutting down", None, "service-closing", "retry"),
        # A 421 rate limit too, and once its inline retries are spent it slows the relay.
        ("421 4.7.0 Too many connections from your IP", "rcpt", "rate-limited-421", "retry"),
        ("421 Must issue a STARTTLS command first", "mail", "service-closing", "retry"),
        ("421-4.7.28 Gmail has detected an unusual rate", "rcpt", "rate-limited-421", "retry"),
        # Greylisting goes to the queue.
        ("450 4.2.0 <a@b.example>: Recipient address rejected: Greylisted", "rcpt",
         "greylisted", "defer"),
        ("451 4.7.1 Greylisting in action, please come back later", "rcpt",
         "greylisted", "defer"),
        # Address is dead: suppress at recipient stages only.
        ("550 5.1.1 <a@b.example>: User unknown", "rcpt", "address-is-dead", "suppress"),
        ("550 5.1.1 <a@b.example>: User unknown", "mail", "permanent", "bounce"),
        ("550 5.1.1 <a@b.example>: User unknown", "end_of_data", "address-is-dead", "suppress"),
        ("450 4.1.1 <a@b.example>: mailbox temporarily unavailable", "rcpt", "transient",
         "retry"),
        # Our own configuration is held, its 4xx retried.
        ("535 5.7.8 Authentication credentials invalid", "auth", "our-configuration", "hold"),
        ("454 4.7.0 Temporary authentication failure", "auth", "transient", "retry"),
        ("554 5.7.1 <a@b.example>: Relay access denied", "rcpt", "our-configuration", "hold"),
        # Blocks and content never suppress.
        ("554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org", "rcpt",
         "permanent", "bounce"),
        ("552 5.3.4 Message size exceeds fixed limit", "end_of_data", "permanent", "bounce"),
        # Too many recipients (RFC 5321 §4.5.3.1.10): a new transaction for the rest.
        ("452 4.5.3 Too many recipients", "rcpt", "too-many-recipients", "rebatch"),
        # A 5xx rate limit is a quota that resets.
        ("550 5.7.1 Our system has detected an unusual rate of unsolicited mail", "rcpt",
         "rate-limited", "throttle"),
        ("452 4.2.2 Mailbox full", "rcpt", "mailbox-full", "defer"),
        ("552 5.2.2 Mailbox full", "rcpt", "permanent", "bounce"),
        ("250 2.0.0 Ok: queued", "end_of_data", "delivered", "deliver"),
    ],
)  # fmt: skip
def test_default_policy_rules(reply: str, stage: Stage | None, rule: str, action: str) -> None:
    d = decide(DEFAULT, reply, stage)
    assert (d.rule, d.action) == (rule, action)


@pytest.mark.parametrize("reason", ["network_error", "timeout", "unknown"])
def test_no_reply_after_the_final_dot_is_deferred_never_retried_inline(reason: Reason) -> None:
    for name in ("default", "transactional", "bulk"):
        d = load_policy(name).decide(
            kind="transient", reason=reason, code=None, status=None, stage="end_of_data"
        )
        assert (d.rule, d.action, d.inline, d.retry) == (
            "ambiguous-after-data",
            "defer",
            False,
            True,
        )


def test_a_421_after_the_final_dot_is_a_reply_not_an_ambiguity() -> None:
    d = decide(DEFAULT, "421 4.4.2 Connection timed out", "end_of_data")
    assert d.action == "retry"


def test_greylisting_respects_the_servers_delay_in_the_queue() -> None:
    d = decide(DEFAULT, "450 4.2.0 Greylisted, try again in 300 seconds", "rcpt")
    assert d.action == "defer"
    assert d.min_delay == 60.0
    e = explain(DEFAULT, reply="450 4.2.0 Greylisted, try again in 300 seconds", stage="rcpt")
    assert e.retry_after == 300
    assert e.attempts[1].tier == "queue"
    assert e.attempts[1].wait_min >= 300


def test_a_suppress_rule_needs_recipient_evidence() -> None:
    """Unattributed dead-address evidence (a quoted reply of unknown provenance) falls
    through to the next rule."""
    d = DEFAULT.decide(
        kind="permanent",
        reason="mailbox_unknown",
        code=550,
        status=None,
        stage=None,
        attributed=False,
    )
    assert (d.action, d.rule, d.suppress) == ("bounce", "permanent", False)


def test_timed_actions_carry_the_effective_timing() -> None:
    d = DEFAULT.decide(
        kind="transient", reason="mailbox_full", code=452, status="4.2.2", stage="rcpt"
    )
    assert (d.schedule, d.give_up_after) == ("slow", 3 * 86400)
    d = DEFAULT.decide(kind="transient", reason="rate_limited", code=450, status=None, stage=None)
    assert (d.action, d.pause, d.schedule) == ("throttle", 300.0, "standard")
    d = DEFAULT.decide(kind="permanent", reason="unknown", code=550, status=None, stage=None)
    assert (d.schedule, d.give_up_after, d.min_delay) == (None, None, 0.0)


def test_bulk_never_retries_inline_and_pauses_for_provider_limits() -> None:
    bulk = load_policy("bulk")
    assert decide(bulk, "421 4.3.2 Service shutting down").action == "defer"
    gmail = decide(bulk, "421-4.7.28 Our system has detected an unusual rate", "rcpt")
    assert (gmail.rule, gmail.action, gmail.pause) == ("provider-rate-limit", "throttle", 1800.0)
    yahoo = decide(bulk, "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred")
    assert (yahoo.rule, yahoo.action) == ("yahoo-deferral", "throttle")
    outlook = decide(bulk, "451 4.7.500 Server busy. Please try again later", "rcpt")
    assert outlook.rule == "provider-rate-limit"


def test_a_destination_can_turn_suppression_off() -> None:
    policy = load_policy("transactional")
    kw = {"kind": "permanent", "reason": "mailbox_unknown", "code": 550, "status": "5.1.1"}
    elsewhere = policy.decide(**kw, stage="rcpt", domain="example.org")  # type: ignore[arg-type]
    internal = policy.decide(**kw, stage="rcpt", domain="hr.corp.example")  # type: ignore[arg-type]
    assert (elsewhere.action, elsewhere.suppress, elsewhere.destination) == ("suppress", True, None)
    assert (internal.action, internal.suppress, internal.destination) == (
        "bounce",
        False,
        "internal",
    )


def test_when_text_is_searched_only_in_the_first_2048_characters(tmp_path: Path) -> None:
    """2,048, not 8,192: a single repeat costs quadratic time under search(), 0.2-0.4 s a
    rule on 8 KB of a hostile reply (eleventh review); SMTP reply lines are at most 512."""
    path = tmp_path / "texty.toml"
    path.write_text(
        'schema = 1\nname = "texty"\nextends = "default"\n'
        '[[rules]]\nname = "marker"\nwhen = { text = "MARKER" }\naction = "hold"\n',
        "utf-8",
    )
    policy = load_policy(path)
    kw = {"kind": "transient", "reason": "unknown", "code": 451, "status": None, "stage": None}
    near = policy.decide(**kw, text="x" * 2000 + "marker")  # type: ignore[arg-type]
    far = policy.decide(**kw, text="x" * 2100 + "marker")  # type: ignore[arg-type]
    assert (near.rule, far.rule) == ("marker", "transient")


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("5.1.1", ["5.1.1"], ["5.1.10", "4.1.1", ""]),
        ("5.7.*", ["5.7.1", "5.7.26"], ["4.7.1", "5.6.1"]),
        ("*.2.2", ["4.2.2", "5.2.2"], ["5.2.1"]),
        ("4.7.5xx", ["4.7.500", "4.7.599"], ["4.7.50", "4.7.600"]),
        ("none", [""], ["5.1.1"]),
    ],
)
def test_enhanced_patterns(
    tmp_path: Path, pattern: str, matches: list[str], misses: list[str]
) -> None:
    path = tmp_path / "pat.toml"
    path.write_text(
        f'schema = 1\nname = "pat"\nextends = "default"\n'
        f'[[rules]]\nname = "p"\nwhen = {{ enhanced = "{pattern}" }}\naction = "hold"\n',
        "utf-8",
    )
    policy = load_policy(path)
    for status, hit in [(s, True) for s in matches] + [(s, False) for s in misses]:
        d = policy.decide(
            kind="transient", reason="unknown", code=451, status=status or None, stage=None
        )
        assert (d.rule == "p") is hit, status
