"""The classifier against Sisimai's labelled corpus (tests/data/sisimai-replies.jsonl).

Suppression is scored against Sisimai's ``hard`` flag ("the address itself is bad"): a
suppress on a ``suspend`` record or on a disputed record (``other_version_expected``) is
not a false positive; every ``hard`` record counts toward recall. Rules were tuned on two
thirds of the e-mail files (a fixed split by a hash of the file name); the held-out third
is the honest figure. Scores are printed at the end of every pytest run (conftest.py).
Intentional disagreements with Sisimai: docs/classification.md.
"""

from __future__ import annotations

import pytest

from corpus import Record, is_false_positive, judge, reason_map, records, score, wilson
from mailpolicy import REASONS

RECORDS = records()
TUNING = [r for r in RECORDS if not r.held_out]
HELD_OUT = [r for r in RECORDS if r.held_out]


def test_split_is_fixed_and_by_file() -> None:
    """A third of the files is held out, and all records of one file stay together."""
    assert len(RECORDS) == 599
    assert 0.28 < len(HELD_OUT) / len(RECORDS) < 0.38
    by_file: dict[str, set[bool]] = {}
    for r in RECORDS:
        by_file.setdefault(r.file, set()).add(r.held_out)
    assert all(len(v) == 1 for v in by_file.values())


def test_suppression_targets_on_the_tuning_split() -> None:
    """Precision >= 0.95 and recall >= 0.90 where the rules were tuned."""
    s = score(TUNING)
    assert s.precision >= 0.95, s
    assert s.recall >= 0.90, s


def test_suppression_on_the_held_out_split_does_not_regress() -> None:
    """The held-out third was never used for tuning. It measured precision 0.896 and
    recall 0.896 when the rules were written; after two reviews removed phrases that
    suppressed live addresses it measured 0.908 and 0.881, and 0.922 / 0.881 after the
    policy-status refinement (below the 0.95/0.90 target: see docs/classification.md).
    This guards against regressions; lowering it needs a reason written here."""
    s = score(HELD_OUT)
    assert s.precision >= 0.90, s
    assert s.recall >= 0.88, s


def test_reason_agreement_floor() -> None:
    """Reason agreement with Sisimai (via the committed mapping) stays where it was."""
    assert score(TUNING).agreement >= 0.72
    assert score(HELD_OUT).agreement >= 0.69


def test_mapping_covers_every_sisimai_reason_with_our_reasons() -> None:
    """The committed Sisimai-to-mailpolicy mapping names only our reasons."""
    mapping = reason_map()
    assert {r.reason for r in RECORDS} <= set(mapping)
    for ours in mapping.values():
        assert set(ours) <= set(REASONS)


def test_never_suppresses_on_policy_or_sender_evidence() -> None:
    """No corpus record whose Sisimai reason is a block, a reputation, an
    authentication, a content or a sender failure is ever suppressed by us."""
    never = {"blocked", "badreputation", "authfailure", "requireptr", "spamdetected",
             "virusdetected", "rejected", "policyviolation", "toomanyconn", "speeding",
             "contenterror", "securityerror", "norelaying"}  # fmt: skip
    bad = [r for r in RECORDS if r.reason in never and judge(r).suppress]
    assert bad == [], [(r.file, r.reply[:80]) for r in bad]


def test_mail_stage_records_never_suppress() -> None:
    """A reply to MAIL FROM is about our sender, never about a recipient."""
    assert not [r for r in RECORDS if r.stage == "mail" and judge(r).suppress]


def test_delivered_records_are_success() -> None:
    recs: list[Record] = [r for r in RECORDS if r.reason == "delivered"]
    assert recs
    assert all(judge(r).kind == "success" for r in recs)
    assert not any(is_false_positive(r, judge(r)) for r in recs)


@pytest.mark.parametrize(
    ("hits", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe(hits: int, n: int, low: float, high: float) -> None:
    """The report's 95% intervals are Wilson's: the published values of Newcombe,
    "Two-sided confidence intervals for the single proportion", Statistics in
    Medicine 17 (1998), Table I, method 3."""
    got_low, got_high = wilson(hits, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)
