"""The Sisimai reply corpus and its evaluation, shared by tests and the report script.

Run ``python tests/corpus.py`` for the full report (suppression precision/recall and
reason agreement on the tuning and held-out splits, and the disagreements).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpolicy import Stage, Verdict, classify

DATA = Path(__file__).parent / "data"

#: Stage from the record's SMTP command (issue #2): DATA or none -> no stage.
COMMAND_STAGE: dict[str | None, Stage | None] = {
    "MAIL": "mail",
    "RCPT": "rcpt",
    "CONN": "connect",
    "HELO": "ehlo",
    "EHLO": "ehlo",
}


@dataclass(frozen=True)
class Record:
    reply: str
    stage: Stage | None
    reason: str
    hard: bool
    disputed: bool
    file: str
    raw: dict[str, Any]

    @property
    def held_out(self) -> bool:
        """The fixed split: a third of the e-mail files, chosen by a hash of the name,
        is never looked at while tuning rules."""
        return hashlib.sha256(self.file.encode()).digest()[0] % 3 == 0


def records() -> list[Record]:
    out = []
    with (DATA / "sisimai-replies.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            out.append(
                Record(
                    reply=raw["reply"],
                    stage=COMMAND_STAGE.get(raw.get("command")),
                    reason=raw["reason"],
                    hard=raw["hard"],
                    disputed="other_version_expected" in raw,
                    file=raw["source"].rsplit("/", 1)[-1],
                    raw=raw,
                )
            )
    return out


def reason_map() -> dict[str, list[str]]:
    with (DATA / "sisimai_reasons.toml").open("rb") as fh:
        return tomllib.load(fh)


@dataclass(frozen=True)
class Score:
    n: int
    tp: int
    fp: int
    fn: int
    agree: int
    graded: int  # records whose reason is graded (not delivered)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def agreement(self) -> float:
        return self.agree / self.graded if self.graded else 1.0

    @property
    def precision_interval(self) -> tuple[float, float]:
        return wilson(self.tp, self.tp + self.fp)

    @property
    def recall_interval(self) -> tuple[float, float]:
        return wilson(self.tp, self.tp + self.fn)

    def summary(self) -> str:
        """One line: the figures with their 95% intervals and the counts."""
        (p_lo, p_hi), (r_lo, r_hi) = self.precision_interval, self.recall_interval
        return (
            f"n={self.n:3} precision={self.precision:.3f} [{p_lo:.2f}-{p_hi:.2f}]"
            f" recall={self.recall:.3f} [{r_lo:.2f}-{r_hi:.2f}]"
            f" (tp={self.tp} fp={self.fp} fn={self.fn}) reason agreement={self.agreement:.3f}"
        )


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion ``hits / n``.

    The splits are small (the held-out third has about 65 suppressions), so a point
    figure alone overstates what is known: 59 of 64 is 0.922, but anything from about
    0.83 to 0.97 fits it. Wilson's interval is used because it stays inside [0, 1] and
    behaves near 1 (Brown, Cai & DasGupta, "Interval Estimation for a Binomial
    Proportion", Statistical Science 16(2), 2001)."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    zz = z * z
    centre = (p + zz / (2 * n)) / (1 + zz / n)
    half = z * math.sqrt(p * (1 - p) / n + zz / (4 * n * n)) / (1 + zz / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def judge(rec: Record) -> Verdict:
    return classify(rec.reply, stage=rec.stage)


def is_false_positive(rec: Record, v: Verdict) -> bool:
    """A suppression Sisimai would not make; a suppress on a ``suspend`` record or on a
    disputed record (``other_version_expected``) is not counted against us (issue #2)."""
    return v.suppress and not rec.hard and rec.reason != "suspend" and not rec.disputed


def score(recs: Iterable[Record]) -> Score:
    mapping = reason_map()
    n = tp = fp = fn = agree = graded = 0
    for rec in recs:
        v = judge(rec)
        n += 1
        if rec.hard and v.suppress:
            tp += 1
        elif rec.hard:
            fn += 1
        elif is_false_positive(rec, v):
            fp += 1
        graded += 1
        agree += v.reason in mapping[rec.reason]
    return Score(n=n, tp=tp, fp=fp, fn=fn, agree=agree, graded=graded)


def disagreements(recs: Iterable[Record]) -> Iterator[tuple[str, Record, Verdict]]:
    mapping = reason_map()
    for rec in recs:
        v = judge(rec)
        if rec.hard and not v.suppress:
            yield "missed-suppress", rec, v
        elif is_false_positive(rec, v):
            yield "false-suppress", rec, v
        elif v.reason not in mapping[rec.reason]:
            yield "reason", rec, v


def main(argv: list[str]) -> int:
    recs = records()
    tune = [r for r in recs if not r.held_out]
    held = [r for r in recs if r.held_out]
    for name, part in (("tuning", tune), ("held-out", held), ("all", recs)):
        print(f"{name:9} {score(part).summary()}")
    print("(suppression vs Sisimai's hard flag; [..] = 95% Wilson interval)")
    if "-v" in argv:
        which = held if "--held-out" in argv else tune
        kinds: Counter[str] = Counter()
        for kind, rec, v in disagreements(which):
            kinds[kind] += 1
            print(
                f"{kind:16} sisimai={rec.reason:15} ours={v.reason:20} {v.rule:28} "
                f"stage={rec.stage} code={v.code} st={v.status} | {rec.reply[:150]}"
            )
        print(kinds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
