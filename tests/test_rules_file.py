"""The classification rule file format: what a rule file may say, and the errors for what
it may not (the shipped data/classification.toml is loaded through the same code)."""

from __future__ import annotations

from typing import Any

import pytest

from mailpolicy import PolicyError, classify
from mailpolicy._rules import build_ruleset, load_builtin_rules


def ruleset(*rules: dict[str, Any]) -> Any:
    return build_ruleset({"rules": list(rules)}, "test.toml")


def test_text_from_reuses_phrases_under_other_conditions() -> None:
    rules = ruleset(
        {"id": "a", "reason": "mailbox_unknown", "text": ["no such user"], "stage": ["rcpt"]},
        {"id": "b", "reason": "policy_blocked", "text_from": "a", "stage": ["end_of_data"]},
    )
    at_rcpt = classify("550 No such user", stage="rcpt", rules=rules)
    after_dot = classify("550 No such user", stage="end_of_data", rules=rules)
    assert (at_rcpt.rule, at_rcpt.reason) == ("a", "mailbox_unknown")
    assert (after_dot.rule, after_dot.reason) == ("b", "policy_blocked")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"id": "b", "reason": "policy_blocked", "text_from": "a"}],
            "test.toml: rules[0].text_from: no earlier rule 'a' with a text",
        ),
        (
            [
                {"id": "b", "reason": "policy_blocked", "text_from": "a"},
                {"id": "a", "reason": "mailbox_unknown", "text": ["x"]},
            ],
            "test.toml: rules[0].text_from: no earlier rule 'a' with a text",
        ),
        (
            [
                {"id": "a", "reason": "mailbox_unknown", "text": ["x"]},
                {"id": "b", "reason": "policy_blocked", "text": ["y"], "text_from": "a"},
            ],
            "test.toml: rules[1].text_from: give text or text_from",
        ),
        (
            [
                {"id": "a", "reason": "mailbox_unknown", "text": ["x"]},
                {"id": "a", "reason": "policy_blocked", "text": ["y"]},
            ],
            "test.toml: rules[1].id: duplicate rule id 'a'",
        ),
        (
            [{"id": "a", "reason": "mailbox_unknown", "text": ["x"], "phrase": "y"}],
            "test.toml: rules[0].phrase: unknown key",
        ),
        (
            [{"id": "a", "reason": "dead", "text": ["x"]}],
            "test.toml: rules[0].reason: unknown reason 'dead'",
        ),
        (
            [{"id": "a", "reason": "mailbox_unknown"}],
            "test.toml: rules[0].text: a text rule needs at least one phrase",
        ),
    ],
)
def test_rule_file_errors_name_the_place(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(PolicyError) as err:
        ruleset(*rules)
    assert str(err.value).startswith(message), str(err.value)


def test_the_shipped_rules_load_and_every_id_is_unique() -> None:
    rules = load_builtin_rules()
    ids = [r.id for r in rules.text_rules]
    assert len(ids) == len(set(ids))
    assert "mailbox.unknown-after-data" in ids
