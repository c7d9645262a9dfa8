"""One source of truth (issue #3): ``classify()``'s ``retry``/``suppress``/``action`` are
the shipped default policy's decisions, and they say what DESIGN.md says, on every
corpus record and every table row."""

from __future__ import annotations

import pytest

from corpus import records
from decision_spec import default_decision
from mailpolicy import Verdict, classify, load_policy
from test_classify_table import ROWS

DEFAULT = load_policy("default")

CASES: list[tuple[str | bytes, str | None]] = [(r.reply, r.stage) for r in records()] + [
    (row[0], row[1]) for row in ROWS
]


def _policy_decision(v: Verdict, reply: str | bytes) -> tuple[bool, bool, str]:
    text = reply if isinstance(reply, str) else reply.decode("utf-8", "replace")
    d = DEFAULT.decide(
        kind=v.kind,
        reason=v.reason,
        code=v.code,
        status=v.status,
        stage=v.stage,
        text=text,
        attributed=v.attributed,
    )
    return d.retry, d.suppress, d.action


@pytest.mark.parametrize(("reply", "stage"), CASES)
def test_verdict_is_the_default_policys_decision(reply: str | bytes, stage: str | None) -> None:
    v = classify(reply, stage=stage)  # type: ignore[arg-type]
    assert (v.retry, v.suppress, v.action) == _policy_decision(v, reply)
    assert (v.retry, v.suppress) == default_decision(
        v.kind, v.reason, v.stage, attributed=v.attributed
    )


def test_the_cases_cover_every_action_the_default_policy_takes() -> None:
    actions = {classify(r, stage=s).action for r, s in CASES}  # type: ignore[arg-type]
    assert actions >= {
        "deliver",
        "retry",
        "defer",
        "throttle",
        "rebatch",
        "bounce",
        "suppress",
        "hold",
    }
