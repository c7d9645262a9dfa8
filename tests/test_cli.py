"""The ``mailpolicy`` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mailpolicy", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_classify_plain() -> None:
    """One readable verdict per reply."""
    p = run("classify", "--stage", "rcpt", "550 5.1.1 User unknown", "421 4.3.2 bye")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "mailbox_unknown" in out
    assert "suppress=yes" in out
    assert "service_unavailable" in out


def test_classify_json() -> None:
    p = run("classify", "--json", "--stage", "mail", "553 5.1.8 Sender address rejected")
    verdict = json.loads(p.stdout)
    assert verdict["reason"] == "sender_rejected"
    assert verdict["stage"] == "mail"
    assert verdict["suppress"] is False


def test_classify_accepts_escaped_newlines() -> None:
    """A shell argument may spell a multi-line reply with literal \\n."""
    p = run("classify", "--json", r"550-5.7.1 first line\n550 5.7.1 blocked using zen.spamhaus.org")
    assert json.loads(p.stdout)["reason"] == "policy_blocked"


def test_classify_jsonl_each_line_answered_bad_lines_included() -> None:
    """One JSON line per input line, an error object for a malformed one, exit 0."""
    lines = [
        b'"550 5.1.1 <a@example.org>: User unknown"',
        b'{"reply": "452 4.5.3 Too many recipients", "stage": "rcpt"}',
        b"not json",
        b'{"reply": 3}',
        b'{"reply": "250 ok", "stage": "bogus"}',
        b'"\xff invalid utf-8"',
        b'{"reply": "550 x", "host": 7}',
        b"",
        b'{"reply": "421 4.7.0 Too many connections", "stage": "greeting"}',
    ]
    p = run("classify", "--jsonl", stdin=b"\n".join(lines) + b"\n")
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert len(out) == 8  # the blank line is skipped
    assert out[0]["reason"] == "mailbox_unknown"
    assert set(out[0]) >= {"code", "status", "kind", "reason", "retry", "suppress", "rule"}
    assert out[1]["reason"] == "too_many_recipients"
    assert out[1]["kind"] == "transient"
    for i, line_no in ((2, 3), (3, 4), (4, 5), (5, 6), (6, 7)):
        assert "error" in out[i]
        assert out[i]["line"] == line_no
    assert "stage" in out[4]["error"]
    assert out[7]["reason"] == "rate_limited"


def test_classify_jsonl_default_stage() -> None:
    p = run("classify", "--jsonl", "--stage", "mail", stdin=b'"550 5.1.1 no such user"\n')
    assert json.loads(p.stdout)["reason"] == "sender_rejected"


@pytest.mark.parametrize(
    "args",
    [("classify",), ("classify", "--jsonl", "550 x"), ("classify", "--stage", "nope", "550 x")],
)
def test_usage_errors_exit_nonzero_without_traceback(args: tuple[str, ...]) -> None:
    p = run(*args)
    assert p.returncode != 0
    assert b"Traceback" not in p.stderr
    assert p.stderr


def test_help_and_version() -> None:
    assert b"classify" in run("--help").stdout
    assert run("--version").stdout.startswith(b"mailpolicy ")
