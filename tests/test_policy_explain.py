"""``explain``: the firing rule, the action and the whole schedule, as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailpolicy._explain import explain, render_explanation
from mailpolicy._policy_load import load_policy

DAY = 86400.0


def test_a_421_under_the_default_policy() -> None:
    e = explain(load_policy("default"), reply="421 4.3.2 Service shutting down", stage="rcpt")
    assert (e.decision.rule, e.decision.action) == ("service-closing", "retry")
    tiers = [a.tier for a in e.attempts]
    assert tiers[:3] == ["first", "inline", "inline"]
    assert set(tiers[3:]) == {"queue"}
    assert [a.at for a in e.attempts[:3]] == [0.0, 1.0, 3.0]
    assert e.attempts[-1].at == 5 * DAY
    assert all(a.at <= 5 * DAY for a in e.attempts)
    assert (e.final.action, e.final.gave_up) == ("bounce", True)
    assert e.outcome == "bounced: gave up 5d after the first failure"


def test_json_form_carries_rule_action_and_schedule() -> None:
    reply = "450 4.2.0 Greylisted, try again in 600 seconds"
    e = explain(load_policy("transactional"), reply=reply, stage="rcpt")
    data = json.loads(json.dumps(e.to_dict()))
    assert (data["rule"], data["action"], data["reason"]) == ("greylisted", "defer", "greylisted")
    assert data["retry_after"] == 600
    assert data["schedule"][0] == {"number": 1, "tier": "first", "at": 0.0, "wait": 0.0,
                                   "wait_min": 0.0, "wait_max": 0.0}  # fmt: skip
    assert data["schedule"][1]["wait"] == 600  # the server's delay beats the 5m schedule
    assert data["schedule"][-1]["at"] == DAY
    assert data["final"]["gave_up"] is True


@pytest.mark.parametrize(
    "case",
    [
        ("default", "550 5.1.1 User unknown", "rcpt", "suppress", "bounced and suppressed", 1),
        ("default", "554 5.7.1 blocked using zen.spamhaus.org", "rcpt", "bounce", "bounced", 1),
        ("default", "535 5.7.8 Authentication failed", "auth", "hold", "held", 2),
        ("default", "452 4.5.3 Too many recipients", "rcpt", "rebatch", "the remaining", 2),
        ("default", "250 2.0.0 Ok", "end_of_data", "deliver", "delivered", 1),
        ("bulk", "421 4.3.2 Service shutting down", None, "defer", "bounced: gave up 3d", 0),
    ],
)
def test_each_action_has_a_plan(case: tuple[str, str, str | None, str, str, int]) -> None:
    policy, reply, stage, action, outcome, attempts = case
    e = explain(load_policy(policy), reply=reply, stage=stage)  # type: ignore[arg-type]
    assert e.decision.action == action
    assert e.outcome.startswith(outcome)
    if attempts:
        assert len(e.attempts) == attempts
    else:
        assert e.attempts[1].tier == "queue"  # bulk: straight to the queue


def test_the_table_is_readable() -> None:
    e = explain(load_policy("default"), reply="421 4.3.2 Service shutting down", stage="rcpt")
    table = render_explanation(e)
    lines = table.splitlines()
    assert "rule     service-closing" in lines
    assert not any(line.startswith("relay") for line in lines)
    assert "action   retry  retry=true suppress=false" in lines
    header = next(line for line in lines if line.startswith("#"))
    assert header.split() == ["#", "tier", "at", "wait", "jitter", "range"]
    assert any(line.split()[:4] == ["2", "inline", "1s", "1s"] for line in lines)
    assert lines[-1] == "then     bounced: gave up 5d after the first failure"


def test_a_destination_override_shows_in_the_explanation() -> None:
    e = explain(load_policy("transactional"), reply="421 4.3.2 Try later", stage="rcpt",
                domain="corp.example")  # fmt: skip
    inline = [a for a in e.attempts if a.tier in ("first", "inline")]
    assert len(inline) == 6  # the internal destination's max_attempts
    assert e.decision.destination == "internal"


def test_a_421_rate_limit_is_retried_inline_then_pauses_the_relay() -> None:
    """DESIGN.md: any 421 is retried inline first, and a rate limit slows the relay: the
    default policy does both, in that order."""
    e = explain(load_policy("default"), reply="421 4.7.0 Too many connections", stage="rcpt")
    lines = render_explanation(e).splitlines()
    assert "rule     rate-limited-421" in lines
    assert "relay    paused 5m once the inline retries are used up (a relay-wide limit)" in lines
    assert [a.tier for a in e.attempts[:4]] == ["first", "inline", "inline", "queue"]


def test_one_mailboxs_rate_limit_pauses_no_relay_in_the_explanation() -> None:
    """Gmail's per-mailbox limit is throttled without pausing the relay (scope
    recipient): explain must not say it pauses the relay."""
    e = explain(
        load_policy("default"),
        reply="450 4.2.1 The user you are trying to contact is receiving mail at a rate "
        "that prevents additional messages from being delivered.",
        stage="rcpt",
    )
    lines = render_explanation(e).splitlines()
    assert (e.scope, e.decision.action) == ("recipient", "throttle")
    assert not any(line.startswith("relay") for line in lines)


@pytest.mark.parametrize(
    ("reply", "soft"),
    [
        ("552 5.2.2 Mailbox full", True),  # a permanent full mailbox: bounced at once
        ("452 4.2.2 Mailbox full", True),  # the queue gives up on a full mailbox
        ("450 4.1.1 User unknown", True),  # ... or on a 4xx dead-address reply
        ("550 5.1.1 User unknown", False),  # suppressed outright, not counted
        ("421 4.7.0 Try again later", False),  # says nothing about the address
    ],
)
def test_a_soft_bounce_at_the_end_of_the_plan_is_named(reply: str, soft: bool) -> None:
    """explain shows what the Sender counts toward [suppression] soft_bounce_limit."""
    e = explain(load_policy("default"), reply=reply, stage="rcpt")
    assert (e.soft_bounce == (5, 30 * DAY)) is soft
    assert (e.soft_bounce is None) is not soft
    assert ("a soft bounce of the address: the 5th within 30d" in render_explanation(e)) is soft
    data = json.loads(json.dumps(e.to_dict()))
    assert data["soft_bounce"] == ({"limit": 5, "window": 30 * DAY} if soft else None)


def test_no_soft_bounce_is_named_where_the_policy_does_not_count_them(tmp_path: Path) -> None:
    off = tmp_path / "off.toml"
    off.write_text(
        'schema = 1\nname = "off"\nextends = "default"\n[suppression]\nsoft_bounce_limit = 0\n',
        "utf-8",
    )
    e = explain(load_policy(off), reply="552 5.2.2 Mailbox full", stage="rcpt")
    assert e.soft_bounce is None
    assert "soft bounce" not in render_explanation(e)
    one = tmp_path / "one.toml"
    one.write_text(
        'schema = 1\nname = "one"\nextends = "default"\n[suppression]\nsoft_bounce_limit = 1\n'
        'soft_bounce_window = "2d"\n',
        "utf-8",
    )
    e = explain(load_policy(one), reply="552 5.2.2 Mailbox full", stage="rcpt")
    assert "the first within 2d puts it on the suppression list" in render_explanation(e)
