r"""How fast :func:`mailpolicy.classify` is, against the least work any classifier must do.

What is measured: verdicts per second of ``classify`` over the texts of the Sisimai reply
corpus (``tests/data/sisimai-replies.jsonl``, 599 real replies and DSN diagnostics, with
the stage its ``command`` field implies), and, in the same run, searches per second of
one bare compiled regex that finds a reply code and an enhanced status anywhere in the
text::

    re.compile(r"(?<![\d.])([245]\d\d)(?:[ -]|$)(?:\s*#?([245])\.(\d{1,3})\.(\d{1,3}))?").search

That search is the floor: no classifier of these texts can do less than find the code
and the status. The figure of merit is the ratio of the two times per text (issue:
"at most 10x the bare search, aim for 5x").

Why the texts are made unique: so that no cache (an ``lru_cache`` on the reply, say) can
make the number. Every text of every pass of every round gets its own suffix: ``" #"``
and a counter spelt in punctuation (the digits 0-9 written as ``~ ! ^ * + < > ? |`` and
a backtick). The suffix holds no digit, no dot and no word character, so it can form no
reply code, no enhanced status and no word for the phrase rules, and the classifier's
end-of-text anchors still see a separator; before measuring anything the script checks
that every made-unique text of the first round gets exactly its original's verdict.
mailpolicy has no result cache in its classify path: its sources were checked (no
``functools.cache`` or ``lru_cache``), and the script checks again at run time, by
source and by looking for cache wrappers in the loaded modules.

How: the two measurements alternate over several rounds (the order flips each round, the
garbage collector is paused while timing, ``time.perf_counter``); medians are reported.
``classify`` on UTF-8 bytes (the same texts, encoded beforehand) is measured too.

Run from the repository root: ``python bench/classify.py [--rounds N] [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import mailpolicy
from mailpolicy import Stage, Verdict, classify

ROOT: Final = Path(__file__).resolve().parent.parent
CORPUS: Final = ROOT / "tests" / "data" / "sisimai-replies.jsonl"

#: The record's SMTP command -> the stage given to classify (DATA, QUIT, none -> None).
COMMAND_STAGE: Final[dict[str | None, Stage]] = {
    "MAIL": "mail",
    "RCPT": "rcpt",
    "CONN": "connect",
    "HELO": "ehlo",
    "EHLO": "ehlo",
}

#: The floor: a reply code and an enhanced status found anywhere in the text.
BARE_SEARCH: Final = re.compile(
    r"(?<![\d.])([245]\d\d)(?:[ -]|$)(?:\s*#?([245])\.(\d{1,3})\.(\d{1,3}))?"
).search

TARGET: Final = 10.0  # classify may take at most this many times the bare search
AIM: Final = 5.0

_DIGITS_AS_PUNCTUATION: Final = str.maketrans("0123456789", "~!^*+<>?|`")

Item = tuple[str | bytes, Stage | None]


def uniquifier(n: int) -> str:
    """A suffix unique to ``n`` that no rule or pattern of the classifier can read."""
    return " #" + str(n).translate(_DIGITS_AS_PUNCTUATION)


def load_corpus() -> list[tuple[str, Stage | None]]:
    out: list[tuple[str, Stage | None]] = []
    with CORPUS.open(encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            out.append((raw["reply"], COMMAND_STAGE.get(raw.get("command"))))
    return out


def unique_items(
    corpus: Sequence[tuple[str, Stage | None]], passes: int, start: int
) -> list[tuple[str, Stage | None]]:
    """``passes`` copies of the corpus, each text with its own counter from ``start``."""
    items: list[tuple[str, Stage | None]] = []
    n = start
    for _ in range(passes):
        for text, stage in corpus:
            items.append((text + uniquifier(n), stage))
            n += 1
    return items


#: The modules ``classify`` runs through (parse, rules, verdict); others are not timed.
CLASSIFY_PATH: Final = ("__init__", "_classify", "_reply", "_rules", "_vocab", "_errors")


def cache_findings() -> tuple[list[str], list[str]]:
    """Result caches in mailpolicy: ``functools`` caches in its sources and cache wrappers
    (anything with ``cache_info``) among its loaded modules' attributes. Returns those in
    the classify path and those elsewhere in the package."""
    inside: list[str] = []
    outside: list[str] = []
    package = Path(mailpolicy.__file__).parent
    pattern = re.compile(r"lru_cache|functools\.cache\b|@cache\b|import cache\b")
    for path in sorted(package.rglob("*.py")):
        found = inside if path.parent == package and path.stem in CLASSIFY_PATH else outside
        for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(package.parent)}:{lineno}: {line.strip()}")
    for name, module in sorted(sys.modules.items()):
        if name == "mailpolicy" or name.startswith("mailpolicy."):
            stem = "__init__" if name == "mailpolicy" else name.rpartition(".")[2]
            found = inside if stem in CLASSIFY_PATH and name.count(".") <= 1 else outside
            for attr, value in vars(module).items():
                if hasattr(value, "cache_info") or hasattr(value, "cache_clear"):
                    found.append(f"{name}.{attr} is a cache wrapper")
    return inside, outside


def check_uniquifier(corpus: Sequence[tuple[str, Stage | None]], items: Sequence[Item]) -> int:
    """Every made-unique text gets the verdict of its original; returns the count checked."""
    originals: list[Verdict] = [classify(text, stage=stage) for text, stage in corpus]
    for i, (text, stage) in enumerate(items):
        expected = originals[i % len(corpus)]
        got = classify(text, stage=stage)
        if got != expected:
            sys.exit(f"uniquifier changed a verdict:\n  {text!r}\n  {expected}\n  {got}")
    return len(items)


def time_classify(items: Sequence[Item]) -> float:
    run = classify
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for text, stage in items:
            run(text, stage=stage)
        return time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


def time_search(texts: Sequence[str]) -> float:
    run = BARE_SEARCH
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for text in texts:
            run(text)
        return time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7; quick 3)")
    parser.add_argument(
        "--passes", type=int, default=None, help="corpus passes per round (default 10; quick 2)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and passes")
    args = parser.parse_args(argv)
    rounds: int = args.rounds if args.rounds is not None else (3 if args.quick else 7)
    passes: int = args.passes if args.passes is not None else (2 if args.quick else 10)
    if rounds < 1 or passes < 1:
        parser.error("--rounds and --passes must be at least 1")

    corpus = load_corpus()
    per_round = len(corpus) * passes

    caches, elsewhere = cache_findings()
    # Texts for every measurement of every round, built before any timing; no two alike.
    n = 0
    str_rounds: list[Sequence[Item]] = []
    bytes_rounds: list[Sequence[Item]] = []
    search_rounds: list[Sequence[str]] = []
    for _ in range(rounds):
        str_rounds.append(unique_items(corpus, passes, n))
        n += per_round
        bytes_rounds.append([(t.encode(), s) for t, s in unique_items(corpus, passes, n)])
        n += per_round
        search_rounds.append([t for t, _ in unique_items(corpus, passes, n)])
        n += per_round
    checked = check_uniquifier(corpus, str_rounds[0])
    checked += check_uniquifier(corpus, bytes_rounds[0])

    # Warm up (imports, the rules' first use, the regex engine) on throw-away texts.
    warm = unique_items(corpus, 1, n)
    time_classify(warm)
    time_search([t for t, _ in warm])

    t_str: list[float] = []
    t_bytes: list[float] = []
    t_search: list[float] = []
    for r in range(rounds):
        order = ("str", "bytes", "search") if r % 2 == 0 else ("search", "bytes", "str")
        for what in order:
            if what == "str":
                t_str.append(time_classify(str_rounds[r]) / per_round)
            elif what == "bytes":
                t_bytes.append(time_classify(bytes_rounds[r]) / per_round)
            else:
                t_search.append(time_search(search_rounds[r]) / per_round)

    med_str = statistics.median(t_str)
    med_bytes = statistics.median(t_bytes)
    med_search = statistics.median(t_search)
    ratio_str = med_str / med_search
    ratio_bytes = med_bytes / med_search
    round_ratios = [c / s for c, s in zip(t_str, t_search, strict=True)]

    print(
        f"mailpolicy {mailpolicy.__version__} classify benchmark, Python "
        f"{sys.version.split()[0]}: {len(corpus)} corpus texts x {passes} passes = "
        f"{per_round} texts per measurement, {rounds} rounds, medians"
    )
    print(
        f"texts made unique by a digit-free suffix ({uniquifier(0)!r}, {uniquifier(1234)!r}, "
        f"...): {n:,} distinct texts; {checked} checked to give their original's verdict"
    )
    if caches:
        print("result caches in mailpolicy's classify path (the figures may flatter it):")
        for line in caches:
            print(f"  {line}")
    else:
        print(
            "no functools.lru_cache / functools.cache (or other cache wrapper) in the classify"
            f" path ({', '.join(CLASSIFY_PATH)})"
        )
    if elsewhere:
        print(f"  (outside it, not timed here: {'; '.join(elsewhere)})")
    print(
        f"bare regex search : {1 / med_search:>12,.0f} searches/s  {med_search * 1e6:8.2f} us/text"
    )
    print(
        f"classify (str)    : {1 / med_str:>12,.0f} verdicts/s  {med_str * 1e6:8.2f} us/text"
        f"  = {ratio_str:.1f}x the bare search"
        f" (rounds {min(round_ratios):.1f}x-{max(round_ratios):.1f}x)"
    )
    print(
        f"classify (bytes)  : {1 / med_bytes:>12,.0f} verdicts/s  {med_bytes * 1e6:8.2f} us/text"
        f"  = {ratio_bytes:.1f}x the bare search"
    )
    verdict = "PASS" if ratio_str <= TARGET else "FAIL"
    aim = "met" if ratio_str <= AIM else "not met"
    print(
        f"{verdict}: classify is {ratio_str:.1f}x the bare search (target <= {TARGET:g}x; "
        f"aim {AIM:g}x {aim}); bytes input {ratio_bytes:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
