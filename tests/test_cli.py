"""The ``mailpolicy`` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

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


def test_classify_jsonl_survives_a_line_nested_too_deeply() -> None:
    """Found in review: '[' x 100000 raised RecursionError out of the loop."""
    stdin = b'"550 5.1.1 no such user"\n' + b"[" * 100_000 + b'\n"421 4.3.2 bye"\n'
    p = run("classify", "--jsonl", stdin=stdin)
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [o.get("error", o.get("reason")) for o in out] == [
        "mailbox_unknown", "the JSON value is nested too deeply", "service_unavailable",
    ]  # fmt: skip


def test_classify_jsonl_with_standard_input_closed() -> None:
    import os

    p = subprocess.run(
        [sys.executable, "-m", "mailpolicy", "classify", "--jsonl"],
        preexec_fn=lambda: os.close(0),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert p.returncode == 1
    assert b"Traceback" not in p.stderr
    assert b"standard input, which is closed" in p.stderr


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


def test_policy_check_ok_and_broken_files(tmp_path: Any) -> None:
    """exit 0 for good files; exit 1 with 'file: key.path: problem' on stderr, no
    traceback, for a broken one."""
    from pathlib import Path

    shipped = Path(__file__).parents[1] / "policies" / "default.toml"
    ok = run("policy", "check", str(shipped))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\nname = "bad"\ndescription = "x"\n[inline]\ndeadline = 15\n')
    p = run("policy", "check", str(shipped), str(bad))
    assert p.returncode == 1
    assert b"bad.toml: inline.deadline:" in p.stderr
    assert b"Traceback" not in p.stderr


def test_policy_explain_table_and_json() -> None:
    table = run("policy", "explain", "default", "--reply", "421 4.7.0 Too many connections")
    assert table.returncode == 0, table.stderr
    assert b"retry" in table.stdout
    js = run("policy", "explain", "default", "--reply", "550 5.1.1 User unknown", "--stage",
             "rcpt", "--json")  # fmt: skip
    data = json.loads(js.stdout)
    assert data["decision"]["action"] == "suppress"
    assert data["reason"] == "mailbox_unknown"


def test_send_reports_each_recipient(smtp_server: Any) -> None:
    """mailpolicy send: exit 0 when all delivered, 2 when one was not."""
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 User unknown")
    p = run("send", "--host", smtp_server.host, "--port", str(smtp_server.port),
            "--security", "none", "--from", "app@example.com", "--to", "ann@example.org",
            "bob@example.org", "--json")  # fmt: skip
    assert p.returncode == 2, p.stderr
    report = json.loads(p.stdout)
    assert [o["state"] for o in report["outcomes"]] == ["delivered", "bounced"]
    # As text: the server's words under a failure; a deferral says nobody retries it.
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 User unknown")
    smtp_server.script.rcpt("cy@example.org", "450 4.2.0 Greylisted")
    p = run("send", "--host", smtp_server.host, "--port", str(smtp_server.port),
            "--security", "none", "--from", "app@example.com", "--to", "bob@example.org",
            "cy@example.org")  # fmt: skip
    lines = p.stdout.decode().splitlines()
    assert "    550 5.1.1 User unknown" in lines
    assert any(line.endswith("not retried (no store)") for line in lines)


def test_demo_runs() -> None:
    p = run("demo")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    for needle in ("greylisted", "mailbox_unknown", "mailbox_full", "invalid", "ambiguous",
                   "mail.delivery"):  # fmt: skip
        assert needle in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--body-file", "/nonexistent/body.txt"), b"--body-file: [Errno 2]"),
        (("--body-file", "BINARY"), b"--body-file is not UTF-8 text"),
        (("--subject", "hi\nBcc: victim@example.org"), b"--from, --to or --subject:"),
    ],
)
def test_send_bad_input_is_a_message_not_a_traceback(
    args: tuple[str, ...], expected: bytes, tmp_path: Any
) -> None:
    binary = tmp_path / "body.bin"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    args = tuple(str(binary) if a == "BINARY" else a for a in args)
    p = run("send", "--host", "127.0.0.1", "--port", "1", "--security", "none",
            "--from", "a@example.com", "--to", "b@example.org", *args)  # fmt: skip
    assert p.returncode == 1
    assert b"Traceback" not in p.stderr
    assert expected in p.stderr


def test_dsn_without_a_store_says_it_would_suppress(tmp_path: Any) -> None:
    """It printed "-> suppressed" though nothing was written anywhere."""
    from pathlib import Path

    bounce = Path(__file__).parent / "data" / "dsn" / "postfix-multi.eml"
    p = run("dsn", str(bounce))
    assert p.returncode == 0, p.stderr
    assert b"-> would suppress (no --store)" in p.stdout
    assert b"-> suppressed" not in p.stdout
    # Which message bounced: the DSN's original Message-ID, for `outbox show`.
    assert b"(message <174099689712.4321.15551234@app.example.com>)" in p.stdout
    store = f"sqlite:///{tmp_path / 's.sqlite3'}"
    first, again = (
        run("dsn", str(bounce), "--store", store),
        run("dsn", str(bounce), "--store", store),
    )
    assert b"-> suppressed" in first.stdout
    assert b"-> already suppressed" in again.stdout


def test_dsn_reads_no_more_of_a_file_than_a_bounce_needs() -> None:
    """/dev/zero was read without end (fuzz review): a bounce is read up to MAX_DSN_READ."""
    p = run("dsn", "/dev/zero")
    assert p.returncode == 1
    assert b"not a delivery-status notification" in p.stderr


def test_what_others_wrote_cannot_send_the_terminal_escape_sequences(tmp_path: Any) -> None:
    """A bounce's Final-Recipient went to the terminal as it came: ESC ]0;... retitled
    it, ESC [2J cleared it (security review). Control characters are written \\xNN."""
    status = (
        "Reporting-MTA: dns; mx.example.com\n\n"
        "Final-Recipient: rfc822; \x1b]0;owned\x07\x1b[2J\x9bFAKE@x.example\n"
        "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 \x1b[31mred\n"
    )
    eml = tmp_path / "forged.eml"
    eml.write_bytes(
        (
            "From: MAILER-DAEMON@mx.example.com\nMIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
            "--B\nContent-Type: text/plain\n\nNotice.\n\n"
            f"--B\nContent-Type: message/delivery-status\n\n{status}\n--B--\n"
        ).encode()
    )
    p = run("dsn", str(eml))
    shown = p.stdout + p.stderr
    assert b"FAKE@x.example" in shown
    assert b"\x1b" not in shown
    assert b"\x07" not in shown
    assert "\x9b".encode() not in shown
    assert b"\\x1b" in shown


def test_a_listing_limit_out_of_range_is_a_usage_error(tmp_path: Any) -> None:
    """A number past SQLite's integers raised OverflowError with a traceback (fuzz review)."""
    url = f"sqlite:///{tmp_path / 'mail.sqlite3'}"
    p = run("outbox", "list", "--store", url, "--limit", "99999999999999999999999")
    assert p.returncode == 2
    assert b"is not from 1 to 1000000" in p.stderr
    assert b"Traceback" not in p.stderr


def test_a_carriage_return_from_others_cannot_overwrite_a_line() -> None:
    """A bounce's text could carry a bare CR and overwrite the line on screen with
    a forged one (eleventh review): written as \\x0d; newlines and tabs stay."""
    import io

    from mailpolicy._cli import _Escaped

    buffer = io.StringIO()
    out = _Escaped(buffer)
    out.write("ok\rall bounces read\tfine\n")
    out.writelines(["\x1b[2J", "\x9b"])
    assert buffer.getvalue() == "ok\\x0dall bounces read\tfine\n\\x1b[2J\\x9b"
    assert out.unescaped is buffer
