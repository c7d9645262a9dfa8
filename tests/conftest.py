"""Shared pytest setup: the corpus report at the end of every run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/corpus.py is a helper module


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from corpus import records, score

    recs = records()
    terminalreporter.section(
        "Sisimai corpus (suppression vs hard, [95% Wilson interval]; reason agreement)"
    )
    for name, part in (
        ("tuning", [r for r in recs if not r.held_out]),
        ("held-out", [r for r in recs if r.held_out]),
        ("all", recs),
    ):
        terminalreporter.write_line(f"{name:9} {score(part).summary()}")
