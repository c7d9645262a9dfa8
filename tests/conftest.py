"""Shared pytest setup: the corpus report at the end of every run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/corpus.py is a helper module


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from corpus import records, score

    recs = records()
    terminalreporter.section("Sisimai corpus (suppression vs hard; reason agreement)")
    for name, part in (
        ("tuning", [r for r in recs if not r.held_out]),
        ("held-out", [r for r in recs if r.held_out]),
        ("all", recs),
    ):
        s = score(part)
        terminalreporter.write_line(
            f"{name:9} n={s.n:3} precision={s.precision:.3f} recall={s.recall:.3f} "
            f"(tp={s.tp} fp={s.fp} fn={s.fn}) reason agreement={s.agreement:.3f}"
        )
