"""Bounce-message (RFC 3464 DSN) intake: :func:`parse_dsn` and :func:`judge_dsn`.

The DSNs under ``tests/data/dsn/`` are written for these tests in the formats of Postfix,
Exim, Exchange Online, Gmail and Sendmail; every parsed field is asserted, then the
judgement: only ``failed`` recipients with a dead-address reason are suppressed, never a
``delayed`` one, never a full mailbox. Non-DSNs raise :class:`DsnError` naming what is
missing. Property tests: any bytes or text either parse or raise DsnError.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy import InvalidInputError, MailPolicyError, load_policy
from mailpolicy._dsn import (
    DSN_ACTIONS,
    MAX_DSN_READ,
    DeliveryStatusReport,
    DsnError,
    DsnRecipient,
    DsnVerdict,
    _blocks,
    classify_recipient,
    judge_dsn,
    parse_dsn,
)

DATA = Path(__file__).parent / "data" / "dsn"
PROPERTY = settings(max_examples=150, deadline=None)


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def recipient_fields(r: DsnRecipient) -> dict[str, Any]:
    return {
        "final_recipient": r.final_recipient,
        "original_recipient": r.original_recipient,
        "action": r.action,
        "status": r.status,
        "remote_mta": r.remote_mta,
        "diagnostic_code": r.diagnostic_code,
        "diagnostic_type": r.diagnostic_type,
        "last_attempt_date": r.last_attempt_date,
        "will_retry_until": r.will_retry_until,
    }


def judged(v: DsnVerdict) -> tuple[object, ...]:
    """The judgement in one tuple: state, suppress, code, status, kind, reason, stage,
    the policy's action."""
    w = v.verdict
    return (v.state, v.suppress, w.code, w.status, w.kind, w.reason, w.stage, v.decision.action)


PST = timezone(timedelta(hours=-8))
CET = timezone(timedelta(hours=1))

# ---------------------------------------------------------------------------------------
# Postfix: two recipients, one failed at RCPT, one delayed (connection timed out)
# ---------------------------------------------------------------------------------------


def test_postfix_multi_recipient_report() -> None:
    report = parse_dsn(load("postfix-multi.eml"))
    assert report.reporting_mta == "mx.example.com"
    assert report.arrival_date == datetime(2025, 3, 3, 10, 14, 58, tzinfo=UTC)
    assert report.original_message_id == "<174099689712.4321.15551234@app.example.com>"
    assert report.original_envelope_id is None
    assert report.received_from_mta is None
    assert report.extra_fields == (
        ("x-postfix-queue-id", "4Xb1cT2wz9z9sVn"),
        ("x-postfix-sender", "rfc822; app@example.com"),
    )
    bob, carol = report.recipients
    assert recipient_fields(bob) == {
        "final_recipient": "bob@example.org",
        "original_recipient": "bob@example.org",
        "action": "failed",
        "status": "5.1.1",
        "remote_mta": "mx.example.org",
        "diagnostic_code": "550 5.1.1 <bob@example.org>: Recipient address rejected: "
        "User unknown in local recipient table",
        "diagnostic_type": "smtp",
        "last_attempt_date": None,
        "will_retry_until": None,
    }
    # Postfix names the command only in the human-readable part.
    assert bob.explanation == (
        "<bob@example.org>: host mx.example.org[192.0.2.4] said: 550 5.1.1 "
        "<bob@example.org>: Recipient address rejected: User unknown in local recipient "
        "table (in reply to RCPT TO command)"
    )
    assert recipient_fields(carol) == {
        "final_recipient": "carol@example.net",
        "original_recipient": "carol@example.net",
        "action": "delayed",
        "status": "4.4.1",
        "remote_mta": None,
        "diagnostic_code": "connect to mx.example.net[198.51.100.7]:25: Connection timed out",
        "diagnostic_type": "x-postfix",
        "last_attempt_date": None,
        "will_retry_until": datetime(2025, 3, 7, 10, 14, 58, tzinfo=UTC),
    }


def test_postfix_multi_recipient_judgement() -> None:
    bob, carol = judge_dsn(parse_dsn(load("postfix-multi.eml")))
    assert bob.recipient == "bob@example.org"
    assert bob.dsn_action == "failed"
    assert judged(bob) == (
        "bounced", True, 550, "5.1.1", "permanent", "mailbox_unknown", "rcpt", "suppress"
    )  # fmt: skip
    assert bob.verdict.suppress  # the default policy agrees
    assert carol.dsn_action == "delayed"
    assert judged(carol) == (
        "deferred", False, None, "4.4.1", "transient", "timeout", None, "retry"
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Exim: Status 5.0.0, the precise code in Diagnostic-Code, X-Exim-Diagnostic names RCPT
# ---------------------------------------------------------------------------------------


def test_exim_report() -> None:
    report = parse_dsn(load("exim.eml"))
    assert report.reporting_mta == "mail.example.com"
    assert report.arrival_date is None
    assert report.original_message_id == "<174107701033.777.4242@app.example.com>"
    assert report.original_envelope_id is None
    (dave,) = report.recipients
    assert recipient_fields(dave) == {
        "final_recipient": "dave@example.net",
        "original_recipient": None,
        "action": "failed",
        "status": "5.0.0",
        "remote_mta": "mx.example.net",  # the first Remote-MTA; the X-ip one is extra
        "diagnostic_code": "550 5.1.1 <dave@example.net>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
        "diagnostic_type": "smtp",
        "last_attempt_date": None,
        "will_retry_until": None,
    }
    assert dave.field("Remote-MTA") == "X-ip; [203.0.113.25]"
    assert dave.field("x-exim-diagnostic") == (
        "X-str; SMTP error from remote mail server after RCPT TO:<dave@example.net>: "
        "550 5.1.1 <dave@example.net>: Recipient address rejected: User unknown in "
        "virtual mailbox table"
    )
    assert dave.field("x-remote-mta-smtp-greeting") == "X-str; 220 mx.example.net ESMTP Postfix"
    assert dave.field("x-nothing") is None
    assert dave.explanation is not None
    assert dave.explanation.startswith("dave@example.net host mx.example.net [203.0.113.25]")


def test_exim_judgement_uses_the_diagnostic_status_and_the_exim_stage() -> None:
    (dave,) = judge_dsn(parse_dsn(load("exim.eml")))
    assert judged(dave) == (
        "bounced", True, 550, "5.1.1", "permanent", "mailbox_unknown", "rcpt", "suppress"
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Exchange Online: CRLF, smtp;550 5.1.10, X-Display-Name, returned headers only
# ---------------------------------------------------------------------------------------


def test_exchange_report() -> None:
    raw = load("exchange.eml")
    assert b"\r\n" in raw
    report = parse_dsn(raw)
    assert report.reporting_mta == "AM6PR01MB1234.eurprd01.prod.exchangelabs.com"
    assert report.received_from_mta == "mail.example.com"
    assert report.arrival_date == datetime(2025, 3, 5, 14, 2, 7, tzinfo=UTC)
    assert report.original_message_id == "<174118332012.9182.77@app.example.com>"
    (erin,) = report.recipients
    assert recipient_fields(erin) == {
        # The domain is lower-cased, the local part kept as written.
        "final_recipient": "Erin@contoso.example",
        "original_recipient": "Erin@contoso.example",
        "action": "failed",
        "status": "5.1.10",
        "remote_mta": "AM6PR01MB1234.eurprd01.prod.exchangelabs.com",
        "diagnostic_code": "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not "
        "found by SMTP address lookup",
        "diagnostic_type": "smtp",
        "last_attempt_date": None,
        "will_retry_until": None,
    }
    assert erin.extra_fields == (("x-display-name", "Erin Example"),)
    assert erin.domain == "contoso.example"


def test_exchange_judgement() -> None:
    (erin,) = judge_dsn(parse_dsn(load("exchange.eml")))
    assert judged(erin) == (
        "bounced", True, 550, "5.1.10", "permanent", "mailbox_unknown", None, "suppress"
    )  # fmt: skip
    assert erin.verdict.rule == "microsoft.recipient-not-found"


# ---------------------------------------------------------------------------------------
# Gmail: folded multi-line replies, X-Original-Message-ID, no returned message
# ---------------------------------------------------------------------------------------


def test_gmail_report() -> None:
    report = parse_dsn(load("gmail.eml"))
    assert report.reporting_mta == "googlemail.com"
    assert report.received_from_mta == "app@example.com"  # Gmail writes the sender here
    assert report.arrival_date == datetime(2025, 3, 6, 2, 11, 53, tzinfo=PST)
    # No returned message part: the per-message X-Original-Message-ID field.
    assert report.original_message_id == "<CAF1k2Zx9nQw8YtE3bW5mH7dQ@mail.gmail.com>"
    unknown, full = report.recipients
    assert recipient_fields(unknown) == {
        "final_recipient": "nobody.here@gmail.com",
        "original_recipient": None,
        "action": "failed",
        "status": "5.1.1",
        "remote_mta": "gmail-smtp-in.l.google.com",  # comment and final dot removed
        "diagnostic_code": "550-5.1.1 The email account that you tried to reach does not "
        "exist. Please try 550-5.1.1 double-checking the recipient's email address for "
        "typos or 550-5.1.1 unnecessary spaces. For more information, go to 550 5.1.1 "
        "https://support.google.com/mail/?p=NoSuchUser "
        "a640c23a62f3a-ac1c3ba2e9fsi1234566b.77 - gsmtp",
        "diagnostic_type": "smtp",
        "last_attempt_date": datetime(2025, 3, 6, 2, 11, 54, tzinfo=PST),
        "will_retry_until": None,
    }
    assert recipient_fields(full) == {
        "final_recipient": "full.inbox@gmail.com",
        "original_recipient": None,
        "action": "failed",
        "status": "5.2.2",
        "remote_mta": "gmail-smtp-in.l.google.com",
        "diagnostic_code": "552-5.2.2 The recipient's inbox is out of storage space. Please "
        "direct the 552-5.2.2 recipient to 552 5.2.2 "
        "https://support.google.com/mail/?p=OverQuotaTemp "
        "a640c23a62f3a-ac1c3ba2e9fsi1234567b.78 - gsmtp",
        "diagnostic_type": "smtp",
        "last_attempt_date": datetime(2025, 3, 6, 2, 11, 54, tzinfo=PST),
        "will_retry_until": None,
    }
    assert unknown.explanation is None  # Gmail's notice does not start with the address


def test_gmail_judgement_mailbox_full_is_never_suppressed() -> None:
    unknown, full = judge_dsn(parse_dsn(load("gmail.eml")))
    assert judged(unknown) == (
        "bounced", True, 550, "5.1.1", "permanent", "mailbox_unknown", None, "suppress"
    )  # fmt: skip
    assert judged(full) == (
        "bounced", False, 552, "5.2.2", "permanent", "mailbox_full", None, "bounce"
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Greylisting: a delayed DSN, returned headers only
# ---------------------------------------------------------------------------------------


def test_greylisting_delayed_report() -> None:
    report = parse_dsn(load("greylist-delayed.eml"))
    assert report.reporting_mta == "relay.example.com"
    assert report.arrival_date == datetime(2025, 3, 7, 5, 21, 40, tzinfo=CET)
    # From the text/rfc822-headers part.
    assert report.original_message_id == "<174132130010.55.901@app.example.com>"
    (frank,) = report.recipients
    assert recipient_fields(frank) == {
        "final_recipient": "frank@example.com",
        "original_recipient": "frank@example.com",
        "action": "delayed",
        "status": "4.7.1",
        "remote_mta": "mx.example.com",
        "diagnostic_code": "450 4.7.1 <frank@example.com>: Recipient address rejected: "
        "Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
        "diagnostic_type": "smtp",
        "last_attempt_date": None,
        "will_retry_until": datetime(2025, 3, 12, 5, 21, 40, tzinfo=CET),
    }


def test_greylisting_is_deferred_not_a_bounce() -> None:
    (frank,) = judge_dsn(parse_dsn(load("greylist-delayed.eml")))
    assert judged(frank) == (
        "deferred", False, 450, "4.7.1", "transient", "greylisted", "rcpt", "defer"
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Status only (Sendmail local delivery): kind follows the Status class
# ---------------------------------------------------------------------------------------


def test_status_only_report() -> None:
    report = parse_dsn(load("sendmail-status-only.eml"))
    assert report.reporting_mta == "mail.example.org"
    assert report.received_from_mta == "app.example.com"  # "DNS;" in capitals
    assert report.arrival_date == datetime(2025, 3, 8, 12, 0, 0, tzinfo=CET)
    assert report.original_message_id is None  # the returned message has none
    attempt = datetime(2025, 3, 8, 12, 0, 1, tzinfo=CET)
    expected = [
        ("Grace@example.org", "5.1.1"),
        ("heidi@example.org", "5.0.0"),  # "5.0.0 (permanent failure)": comment dropped
        ("ivan@example.org", "4.4.7"),
    ]
    assert [recipient_fields(r) for r in report.recipients] == [
        {
            "final_recipient": address,
            "original_recipient": None,
            "action": "failed",  # "Failed" lower-cased
            "status": status,
            "remote_mta": None,
            "diagnostic_code": None,
            "diagnostic_type": None,
            "last_attempt_date": attempt,
            "will_retry_until": None,
        }
        for address, status in expected
    ]


def test_status_only_judgement() -> None:
    grace, heidi, ivan = judge_dsn(parse_dsn(load("sendmail-status-only.eml")))
    assert judged(grace) == (
        "bounced", True, None, "5.1.1", "permanent", "mailbox_unknown", None, "suppress"
    )  # fmt: skip
    assert judged(heidi) == (
        "bounced", False, None, "5.0.0", "permanent", "unknown", None, "bounce"
    )  # fmt: skip
    # Failed, but the status says 4.x.x (the reporting MTA's queue expired): transient,
    # never suppressed; the DSN is still final for this message.
    assert judged(ivan)[:6] == ("bounced", False, None, "4.4.7", "transient", "timeout")


# ---------------------------------------------------------------------------------------
# RFC 6533: UTF-8 addresses and diagnostic in message/global-delivery-status
# ---------------------------------------------------------------------------------------


def test_utf8_global_report() -> None:
    report = parse_dsn(load("utf8-global.eml"))
    assert report.reporting_mta == "mx.example.de"
    assert report.original_message_id == "<174154230011.1.2@app.example.com>"
    (jurgen,) = report.recipients
    assert recipient_fields(jurgen) == {
        "final_recipient": "jürgen@münchen.example",
        "original_recipient": "jürgen@münchen.example",
        "action": "failed",
        "status": "5.1.1",
        "remote_mta": "mx.xn--mnchen-3ya.example",
        "diagnostic_code": "550 5.1.1 <jürgen@münchen.example>: Empfänger unbekannt",
        "diagnostic_type": "utf-8",
        "last_attempt_date": None,
        "will_retry_until": None,
    }
    assert jurgen.domain == "xn--mnchen-3ya.example"


def test_utf8_judgement() -> None:
    (jurgen,) = judge_dsn(parse_dsn(load("utf8-global.eml")))
    assert judged(jurgen) == (
        "bounced", True, 550, "5.1.1", "permanent", "mailbox_unknown", "rcpt", "suppress"
    )  # fmt: skip


def test_utf8_address_escapes_in_an_ascii_delivery_status() -> None:
    r"""RFC 6533 §3: a utf-8 address in a 7-bit part writes \x{HHHH}."""
    report = parse_dsn(
        wrap(
            "Reporting-MTA: dns; mx.example.de\n\n"
            "Final-Recipient: utf-8; j\\x{FC}rgen@M\\x{FC}nchen.example\n"
            "Action: failed\nStatus: 5.1.1\n"
        )
    )
    assert report.recipients[0].final_recipient == "jürgen@münchen.example"


# ---------------------------------------------------------------------------------------
# Success notices
# ---------------------------------------------------------------------------------------


def test_success_report_and_judgement() -> None:
    report = parse_dsn(load("postfix-success.eml"))
    assert report.original_envelope_id == "welcome-42"
    assert report.original_message_id == "<174159000400.3.3@app.example.com>"
    judy, ken = report.recipients
    assert (judy.action, judy.status, judy.diagnostic_code) == (
        "delivered", "2.0.0", "250 2.0.0 Ok: queued as 4Xe1aC0000zZz"
    )  # fmt: skip
    assert (ken.action, ken.status) == ("relayed", "2.0.0")
    for v in judge_dsn(report):
        assert v.state == "delivered"
        assert not v.suppress
        assert (v.verdict.kind, v.verdict.reason, v.decision.action) == (
            "success", "delivered", "deliver"
        )  # fmt: skip


# ---------------------------------------------------------------------------------------
# The whole set: suppress only dead addresses of failed recipients
# ---------------------------------------------------------------------------------------

DSN_FILES = sorted(p.name for p in DATA.glob("*.eml") if not p.name.startswith("not-dsn"))


def test_suppression_across_all_files() -> None:
    suppressed = {
        v.recipient for name in DSN_FILES for v in judge_dsn(parse_dsn(load(name))) if v.suppress
    }
    assert suppressed == {
        "bob@example.org",
        "dave@example.net",
        "Erin@contoso.example",
        "nobody.here@gmail.com",
        "Grace@example.org",
        "jürgen@münchen.example",
    }


@pytest.mark.parametrize("name", DSN_FILES)
def test_delayed_never_suppresses_and_json_round_trips(name: str) -> None:
    report = parse_dsn(load(name))
    for v in judge_dsn(report):
        if v.dsn_action == "delayed":
            assert (v.state, v.suppress, v.verdict.kind) == ("deferred", False, "transient")
        if v.verdict.reason == "mailbox_full":
            assert not v.suppress
        data = json.loads(json.dumps(v.to_dict()))
        assert data["recipient"] == v.recipient
        assert data["verdict"]["reason"] == v.verdict.reason
        assert data["decision"]["action"] == v.decision.action
        assert data["dsn"]["action"] == v.dsn_action
    assert json.loads(json.dumps(report.to_dict()))["reporting_mta"] == report.reporting_mta


@pytest.mark.parametrize("name", DSN_FILES)
def test_bytes_str_and_message_inputs_agree(name: str) -> None:
    raw = load(name)
    from_bytes = parse_dsn(raw)
    assert parse_dsn(bytearray(raw)) == from_bytes
    assert parse_dsn(email.message_from_bytes(raw, policy=email.policy.default)) == from_bytes
    if raw.isascii():
        assert parse_dsn(raw.decode("ascii")) == from_bytes
        assert parse_dsn(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) == from_bytes


# ---------------------------------------------------------------------------------------
# Not DSNs: clear errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not-dsn-plain.eml", "the message is text/plain, with no multipart/report"),
        # A DSN forwarded as an attachment is not read: only the message's own structure.
        ("not-dsn-mixed.eml", "the message is multipart/mixed, with no multipart/report"),
        ("not-dsn-arf.eml", "multipart/report with report-type=feedback-report"),
    ],
)
def test_not_a_dsn(name: str, message: str) -> None:
    with pytest.raises(DsnError, match="not a delivery-status notification") as info:
        parse_dsn(load(name))
    assert message in str(info.value)
    assert isinstance(info.value, MailPolicyError)
    assert isinstance(info.value, ValueError)


def wrap(status: str, *, report_type: str = "; report-type=delivery-status") -> str:
    """A minimal multipart/report around a delivery-status body."""
    return (
        "From: MAILER-DAEMON@mx.example.com\n"
        "MIME-Version: 1.0\n"
        f"Content-Type: multipart/report{report_type}; boundary=B\n\n"
        "--B\nContent-Type: text/plain\n\nNotice.\n\n"
        f"--B\nContent-Type: message/delivery-status\n\n{status}\n"
        "--B--\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "From: a@example.com\nMIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
            "--B\nContent-Type: text/plain\n\nNotice.\n--B--\n",
            r"multipart/report has no message/delivery-status part \(its parts: text/plain\)",
        ),
        (wrap("Reporting-MTA: dns; mx.example.com\n"), "has no per-recipient fields"),
        (wrap(""), "has no per-recipient fields"),
        (
            wrap("Reporting-MTA: dns; mx\n\nAction: failed\nStatus: 5.1.1\n"),
            "per-recipient block 1 has no Final-Recipient address",
        ),
        (
            wrap("Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\n"),
            r"per-recipient block 1 \(a@b.example\) has no Action field",
        ),
        (
            wrap(
                "Reporting-MTA: dns; mx\n\n"
                "Final-Recipient: rfc822; a@b.example\nAction: failed\n\n"
                "Final-Recipient: rfc822; c@b.example\nAction: bounced\n"
            ),
            r"per-recipient block 2 \(c@b.example\) has Action 'bounced'; expected one of "
            "failed, delayed, delivered, relayed, expanded",
        ),
        ("", "the message is text/plain"),
        (b"\x00\xff\xfe garbage \r\n\r\n\x80", "not a delivery-status notification"),
    ],
)
def test_malformed_reports(text: str | bytes, message: str) -> None:
    with pytest.raises(DsnError, match=message):
        parse_dsn(text)


def test_wrong_argument_types() -> None:
    with pytest.raises(InvalidInputError, match="parse_dsn takes bytes, str"):
        parse_dsn(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="judge_dsn takes a DeliveryStatusReport"):
        judge_dsn("report")  # type: ignore[arg-type]
    report = parse_dsn(load("exim.eml"))
    with pytest.raises(InvalidInputError, match="policy must be a Policy"):
        judge_dsn(report, policy="default")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Tolerance: RFC 3464 syntax details
# ---------------------------------------------------------------------------------------


def test_missing_report_type_and_global_report_type_are_accepted() -> None:
    body = "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\nAction: failed\n"
    for report_type in (
        "",
        "; report-type=global-delivery-status",
        "; REPORT-TYPE=Delivery-Status",
        "; report-type*=us-ascii'en'delivery-status",  # RFC 2231
    ):
        report = parse_dsn(wrap(body, report_type=report_type))
        assert report.recipients[0].final_recipient == "a@b.example"


def test_field_syntax() -> None:
    """Case-insensitive names, continuation lines, comments, angle brackets, an address
    type in capitals, a missing per-message block, unknown fields kept."""
    report = parse_dsn(
        wrap(
            "final-recipient: RFC822;<Kim@Example.ORG.>\n"
            "ORIGINAL-RECIPIENT: rfc822; kim (the original) @example.org\n"
            "aCTION: DELAYED (still trying)\n"
            "status: 4.2.2\n"
            "X-Custom:  one\n"
            "  two\n"
            "diagnostic-code: 452 4.2.2 Mailbox full; over\n"
            "\tquota\n"
            "Last-Attempt-Date: not a date\n"
            "Final-Log-ID: 4Xb1 ; id\n"
        )
    )
    assert report.reporting_mta is None
    assert report.arrival_date is None
    (kim,) = report.recipients
    assert kim.final_recipient == "Kim@example.org"
    assert kim.original_recipient == "kim @example.org"
    assert kim.action == "delayed"
    assert kim.status == "4.2.2"
    # No "type;" before it: the whole value is the diagnostic.
    assert kim.diagnostic_type is None
    assert kim.diagnostic_code == "452 4.2.2 Mailbox full; over quota"
    assert kim.last_attempt_date is None
    assert kim.final_log_id == "4Xb1 ; id"
    assert kim.extra_fields == (("x-custom", "one two"),)


def test_x_original_message_id_header_when_nothing_else() -> None:
    text = wrap("Final-Recipient: rfc822; a@b.example\nAction: failed\n").replace(
        "MIME-Version: 1.0\n", "MIME-Version: 1.0\nX-Original-Message-ID: <orig@app.example>\n"
    )
    assert parse_dsn(text).original_message_id == "<orig@app.example>"


def test_nested_report_inside_mixed_is_found() -> None:
    inner = wrap("Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n")
    head, _, body = inner.partition("\n\n")
    content_type = head.split("Content-Type: ", 1)[1]
    text = (
        "From: gateway@example.com\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=OUTER\n\n"
        "--OUTER\nContent-Type: text/plain\n\nFooter added by a list.\n"
        f"--OUTER\nContent-Type: {content_type}\n\n{body}\n--OUTER--\n"
    )
    assert parse_dsn(text).recipients[0].status == "5.1.1"


def test_base64_global_delivery_status() -> None:
    fields = (
        "Reporting-MTA: dns; mx.example.de\n\n"
        "Final-Recipient: utf-8; ärger@example.de\nAction: failed\nStatus: 5.1.1\n"
    )
    encoded = base64.encodebytes(fields.encode("utf-8")).decode("ascii")
    text = (
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
        "--B\nContent-Type: message/global-delivery-status\n"
        f"Content-Transfer-Encoding: base64\n\n{encoded}\n--B--\n"
    )
    report = parse_dsn(text)
    assert report.reporting_mta == "mx.example.de"
    assert report.recipients[0].final_recipient == "ärger@example.de"


# ---------------------------------------------------------------------------------------
# Judgement details
# ---------------------------------------------------------------------------------------


def recipient(**fields: Any) -> DsnRecipient:
    base: dict[str, Any] = {
        "final_recipient": "a@example.org",
        "original_recipient": None,
        "action": "failed",
        "status": None,
        "remote_mta": None,
        "diagnostic_code": None,
        "diagnostic_type": None,
        "last_attempt_date": None,
        "will_retry_until": None,
    }
    base.update(fields)
    return DsnRecipient(**base)


def one(**fields: Any) -> DsnVerdict:
    report = DeliveryStatusReport(
        reporting_mta=None,
        arrival_date=None,
        original_message_id=None,
        original_envelope_id=None,
        recipients=(recipient(**fields),),
    )
    (v,) = judge_dsn(report)
    return v


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # No code in the diagnostic: the DSN's Status class decides the kind.
        (
            {"status": "5.4.4", "diagnostic_code": "Host or domain name not found"},
            ("permanent", "domain_not_found", True),
        ),
        (
            {"status": "4.4.3", "diagnostic_code": "Host or domain name not found, try again"},
            ("transient", "domain_not_found", False),
        ),
        ({"status": "5.0.0", "diagnostic_code": "something odd"}, ("permanent", "unknown", False)),
        # Neither code nor status anywhere: failed is permanent, never suppressed.
        ({"diagnostic_code": "something odd"}, ("permanent", "unknown", False)),
        ({}, ("permanent", "unknown", False)),
        # The diagnostic's own reply code governs (DESIGN.md §2 rule 1), not the Status.
        (
            {"status": "5.0.0", "diagnostic_code": "452 4.2.2 mailbox full"},
            ("transient", "mailbox_full", False),
        ),
        # A code without status: the DSN's Status is not merged into it (no invented
        # recipient evidence for a bare "550 mailbox unavailable").
        (
            {"status": "5.1.1", "diagnostic_code": "550 Requested action not taken"},
            ("permanent", "unknown", False),
        ),
        # Delayed: never a bounce, whatever the diagnostic says.
        (
            {"action": "delayed", "status": "5.1.1", "diagnostic_code": "550 5.1.1 no such user"},
            ("transient", "mailbox_unknown", False),
        ),
        ({"action": "delayed"}, ("transient", "unknown", False)),
        (
            {"action": "delayed", "diagnostic_code": "250 2.0.0 ok"},
            ("transient", "unknown", False),
        ),
        # Delivered / relayed / expanded: success whatever the text.
        ({"action": "expanded", "status": "2.0.0"}, ("success", "delivered", False)),
        ({"action": "relayed", "diagnostic_code": "5.1.1 odd"}, ("success", "delivered", False)),
        # Failed with a 2xx diagnostic: still a failure.
        ({"diagnostic_code": "250 ok"}, ("permanent", "unknown", False)),
        # The stage from the human-readable paragraph: refused at MAIL is our sender.
        (
            {
                "status": "5.1.1",
                "diagnostic_code": "550 5.1.1 <app@example.com>: address unknown",
                "explanation": "<a@example.org>: host mx said: 550 5.1.1 "
                "<app@example.com>: address unknown (in reply to MAIL FROM command)",
            },
            ("permanent", "sender_rejected", False),
        ),
    ],
)
def test_kind_reason_and_suppression(fields: dict[str, Any], expected: tuple[object, ...]) -> None:
    v = one(**fields)
    assert (v.verdict.kind, v.verdict.reason, v.suppress) == expected
    assert v.verdict.suppress == v.suppress  # the default policy agrees with judge_dsn
    assert v.verdict.action == v.decision.action


def test_delayed_keeps_the_announced_delay() -> None:
    v = one(action="delayed", diagnostic_code="550 5.7.1 busy, try again in 300 seconds")
    assert v.verdict.kind == "transient"
    assert v.verdict.rule.endswith("+dsn.delayed")
    assert v.verdict.retry
    assert v.verdict.retry_after == 300


def test_classify_recipient_uses_remote_mta_as_provider_host() -> None:
    r = recipient(
        status="5.7.1",
        remote_mta="[192.0.2.1]",
        diagnostic_code="550 5.7.1 Service unavailable; Client host [203.0.113.10] blocked",
    )
    assert classify_recipient(r).reason == "policy_blocked"


def test_judge_with_an_explicit_policy() -> None:
    policy = load_policy("default")
    report = parse_dsn(load("postfix-multi.eml"))
    assert [v.to_dict() for v in judge_dsn(report, policy=policy)] == [
        v.to_dict() for v in judge_dsn(report)
    ]


def test_actions_vocabulary() -> None:
    assert DSN_ACTIONS == ("failed", "delayed", "delivered", "relayed", "expanded")


# ---------------------------------------------------------------------------------------
# Properties: any input parses or raises DsnError
# ---------------------------------------------------------------------------------------


def parse_or_dsn_error(data: bytes | str) -> DeliveryStatusReport | None:
    try:
        report = parse_dsn(data)
    except DsnError:
        return None
    for v in judge_dsn(report):
        assert v.state in {"delivered", "deferred", "bounced"}
        assert not (v.suppress and v.dsn_action != "failed")
    report.to_dict()
    return report


@PROPERTY
@given(st.one_of(st.binary(max_size=600), st.text(max_size=600)))
def test_random_input_parses_or_raises_dsn_error(data: bytes | str) -> None:
    parse_or_dsn_error(data)


FIELD_NAMES = (
    "Final-Recipient", "Original-Recipient", "Action", "Status", "Remote-MTA",
    "Diagnostic-Code", "Reporting-MTA", "Arrival-Date", "Last-Attempt-Date",
    "Will-Retry-Until", "X-Original-Message-ID", "X-Exim-Diagnostic", "Content-Type",
)  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "rfc822; a@b.example", "utf-8; j\\x{FC}r@b.example", "utf-8; \\x{D800}@x",
            "failed", "delayed", "Delivered", "5.1.1", "4.4.7 (x)", "9.9.9",
            "smtp; 550 5.1.1 user unknown", "X-Postfix; timed out", "dns; mx.b.example.",
            "Mon, 3 Mar 2025 10:14:58 +0000", "Mon, 99 Foo 2025", "(((", "<>", ";", "\x00",
        ]
    ),
)  # fmt: skip
LINES = st.one_of(
    st.tuples(st.sampled_from(FIELD_NAMES), VALUES).map(lambda t: f"{t[0]}: {t[1]}"),
    st.just(""),
    st.just("  continued"),
    st.text(max_size=20),
)
RECIPIENT_BLOCK = st.tuples(
    st.sampled_from(["rfc822; a@b.example", "utf-8; j\\x{FC}r@b.example", "x;", "<z@Y.>"]),
    st.sampled_from([*DSN_ACTIONS, "Failed (comment)", "bounced"]),
    st.lists(LINES, max_size=5),
).map(lambda t: "\n".join([f"Final-Recipient: {t[0]}", f"Action: {t[1]}", *t[2]]))


@st.composite
def reports(draw: st.DrawFn) -> str:
    report_type = draw(
        st.sampled_from(
            [
                "; report-type=delivery-status",
                "; report-type=delivery-status",
                "",
                "; report-type=feedback-report",
                '; report-type="',
                "; report-type*=utf-8''x%",
            ]
        )
    )
    blocks = [
        "\n".join(draw(st.lists(LINES, max_size=6))),
        *draw(st.lists(RECIPIENT_BLOCK, min_size=0, max_size=3)),
    ]
    status_type = draw(
        st.sampled_from(
            [
                "message/delivery-status",
                "message/delivery-status",
                "message/global-delivery-status",
                "text/plain",
            ]
        )
    )
    encoding = draw(st.sampled_from(["", "Content-Transfer-Encoding: quoted-printable\n"]))
    returned = draw(
        st.sampled_from(["", "message/rfc822", "text/rfc822-headers", "message/global-headers"])
    )
    text = (
        f"MIME-Version: 1.0\nContent-Type: multipart/report{report_type}; boundary=B\n\n"
        f"--B\nContent-Type: text/plain\n\n{draw(st.text(max_size=60))}\n"
        f"--B\nContent-Type: {status_type}\n{encoding}\n" + "\n\n".join(blocks) + "\n"
    )
    if returned:
        text += f"--B\nContent-Type: {returned}\n\n{draw(st.lists(LINES, max_size=4))}\n"
    text += "--B--\n"
    return text.replace("\n", "\r\n") if draw(st.booleans()) else text


@PROPERTY
@given(reports())
def test_generated_reports_parse_or_raise_dsn_error(text: str) -> None:
    parse_or_dsn_error(text)
    parse_or_dsn_error(text.encode("utf-8", "surrogatepass"))


def test_a_line_that_is_not_a_field_is_skipped_within_its_block() -> None:
    report = parse_dsn(
        wrap(
            "Reporting-MTA: dns; mx\n\n"
            "Final-Recipient: rfc822; a@b.example\nnot a field\nAction: failed\n\n"
            "Final-Recipient: rfc822; c@b.example\nAction: delayed\n"
        )
    )
    assert [(r.final_recipient, r.action) for r in report.recipients] == [
        ("a@b.example", "failed"),
        ("c@b.example", "delayed"),
    ]


def test_leading_blank_lines_comments_and_continuations_in_fields() -> None:
    report = parse_dsn(
        "MIME-Version: 1.0\nContent-Type: multipart/report; boundary=B\n\n"
        "--B\nContent-Type: message/delivery-status\n\n\n"
        "Final-Recipient: rfc822; a@b.example\nAction: Failed (comment)\n  continued\n"
        "--B--\n"
    )
    (r,) = report.recipients
    assert (r.final_recipient, r.action, r.status) == ("a@b.example", "failed", None)


# --- intake: what goes on the suppression list (found in review) -------------------------


def _report(*blocks: str, notice: str = "This is the mail system.") -> bytes:
    """A Postfix-shaped DSN with these per-recipient blocks (blank-line separated)."""
    status = "\n\n".join(("Reporting-MTA: dns; mx.example.com", *blocks))
    return (
        "From: MAILER-DAEMON@mx.example.com\nTo: app@example.com\nSubject: Undelivered\n"
        "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
        'boundary="BB"\n\n--BB\nContent-Type: text/plain\n\n'
        f"{notice}\n\n--BB\nContent-Type: message/delivery-status\n\n{status}\n\n--BB--\n"
    ).encode()


def _hard(address: str) -> str:
    return (
        f"Final-Recipient: rfc822; {address}\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown"
    )


@pytest.fixture
def dsn_store(tmp_path: Path) -> Any:
    from mailpolicy._store import open_store

    with open_store(f"sqlite:///{tmp_path / 'dsn.sqlite3'}") as store:
        yield store


def test_a_bounce_for_a_unicode_domain_suppresses_what_a_send_looks_up(dsn_store: Any) -> None:
    """send() looks the list up by the wire form (IDNA A-label domain); intake stored the
    Unicode form, so the dead address was never blocked."""
    from mailpolicy._dsn import intake_dsn

    (v,) = intake_dsn(parse_dsn(load("utf8-global.eml")), store=dsn_store, now=1e9)
    assert v.suppression == "added"
    assert dsn_store.suppressed("jürgen@xn--mnchen-3ya.example", now=1e9) is not None
    assert dsn_store.suppressed("Jürgen@München.example", now=1e9) is not None


def test_reading_a_bounce_never_rewrites_an_entry_already_there(dsn_store: Any) -> None:
    from mailpolicy._dsn import intake_dsn

    dsn_store.add_suppression(
        "f@example.org", reason="mailbox_moved", now=1e9, ttl=None, text="added by hand"
    )
    data = _report(_hard("f@example.org"), _hard("g@example.org"), _hard("G@example.org"))
    verdicts = intake_dsn(parse_dsn(data), store=dsn_store, now=2e9)
    assert [v.suppression for v in verdicts] == ["already", "added", "already"]
    entry = dsn_store.suppressed("f@example.org", now=2e9)
    assert (entry.reason, entry.expires_at, entry.text) == ("mailbox_moved", None, "added by hand")


def test_a_report_naming_too_many_dead_addresses_suppresses_none(dsn_store: Any) -> None:
    """A bounce is not authenticated: one forged report suppressed 5,000 addresses
    (security review). Past MAX_SUPPRESSIONS_PER_REPORT, none is taken, and it is said."""
    import structlog

    from mailpolicy._dsn import MAX_SUPPRESSIONS_PER_REPORT, intake_dsn

    many = [_hard(f"u{i}@example.org") for i in range(MAX_SUPPRESSIONS_PER_REPORT + 1)]
    with structlog.testing.capture_logs() as logs:
        verdicts = intake_dsn(parse_dsn(_report(*many)), store=dsn_store, now=1e9)
    assert {v.suppression for v in verdicts} == {"too many"}
    assert dsn_store.suppressions(now=1e9) == []
    (refused,) = [e for e in logs if e["event"] == "mail.dsn_refused"]
    assert (refused["addresses"], refused["log_level"]) == (len(many), "warning")
    # up to the limit, as before
    fewer = intake_dsn(parse_dsn(_report(*many[:-1])), store=dsn_store, now=1e9)
    assert {v.suppression for v in fewer} == {"added"}


def test_intake_says_what_it_did_without_a_store() -> None:
    from mailpolicy._dsn import intake_dsn

    data = parse_dsn(_report(_hard("f@example.org")))
    assert [v.suppression for v in intake_dsn(data, now=1e9)] == ["no store"]


def test_a_unicode_destinations_suppression_ttl_applies(dsn_store: Any, tmp_path: Path) -> None:
    from mailpolicy._dsn import intake_dsn

    policy_file = tmp_path / "idn.toml"
    policy_file.write_text(
        'schema = 1\nname = "idn"\nextends = "default"\n[[destinations]]\nname = "munich"\n'
        'domains = ["xn--mnchen-3ya.example"]\n[destinations.suppression]\nttl = "7d"\n'
    )
    intake_dsn(
        parse_dsn(load("utf8-global.eml")), store=dsn_store, policy=load_policy(policy_file),
        now=1e9,
    )  # fmt: skip
    entry = dsn_store.suppressed("jürgen@xn--mnchen-3ya.example", now=1e9)
    assert entry.expires_at == 1e9 + 7 * 86400


def test_a_block_with_two_recipients_is_read_as_two() -> None:
    """A generator that leaves out the blank line: the second Final-Recipient starts the
    second recipient (its Original-Recipient with it); the first one was suppressed on the
    second one's evidence, and the second one lost."""
    block = (
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 4.4.7\n"
        "Original-Recipient: rfc822; B@example.org\n" + _hard("b@example.org")
    )
    a, b = judge_dsn(parse_dsn(_report(block)))
    assert (a.recipient, a.suppress, a.dsn.status) == ("a@example.org", False, "4.4.7")
    assert (b.recipient, b.suppress, b.dsn.original_recipient) == (
        "b@example.org", True, "B@example.org",
    )  # fmt: skip


def test_a_final_recipient_with_a_display_name_is_its_address() -> None:
    (r,) = parse_dsn(_report(_hard("John Doe <john@example.org>"))).recipients
    assert r.final_recipient == "john@example.org"


def test_each_recipient_gets_its_own_paragraph_of_the_notice() -> None:
    notice = (
        "intro\n\n<b@example.org>: host said: 550 b unknown\n\n"
        "a@example.org\n    mailbox unknown\n\n<a@example.org>: later, not this one"
    )
    a, b = parse_dsn(
        _report(_hard("a@example.org"), _hard("b@example.org"), notice=notice)
    ).recipients
    assert a.explanation == "a@example.org mailbox unknown"
    assert b.explanation == "<b@example.org>: host said: 550 b unknown"


def test_a_policys_own_classification_rules_judge_its_bounces(tmp_path: Path) -> None:
    """The rules a policy adds ([[classification]]) read DSN diagnostics too."""
    from mailpolicy import load_policy

    (tmp_path / "acme.toml").write_text(
        'schema = 1\nname = "acme"\nextends = "default"\n\n[[classification]]\n'
        'id = "acme.gone"\nreason = "mailbox_unknown"\ntext = ["acme no such box"]\n'
    )
    report = parse_dsn(
        wrap(
            "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\n"
            "Action: failed\nStatus: 5.0.0\n"
            "Diagnostic-Code: smtp; 550 ACME no such box (in reply to RCPT TO command)\n"
        ).encode()
    )
    (shipped,) = judge_dsn(report)
    (mine,) = judge_dsn(report, policy=load_policy(tmp_path / "acme.toml"))
    assert shipped.verdict.rule != "acme.gone"
    assert (mine.verdict.reason, mine.verdict.rule, mine.suppress) == (
        "mailbox_unknown", "acme.gone", True
    )  # fmt: skip


# --- hostile bounces: bounded work --------------------------------------------------------


STATUS = "Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; ann@example.org\n"


def test_a_folded_field_is_joined_once_and_kept_bounded() -> None:
    """Folded lines were joined one by one, copying the value each time: a
    Diagnostic-Code of 1.28 million folded lines took 108 s (security review). A field
    keeps at most 64 Ki characters; the rest of the report is read as usual."""
    folded = "Diagnostic-Code: smtp; 550 5.1.1 unknown\n" + " x\n" * 200_000
    report = parse_dsn(wrap(f"{STATUS}Action: failed\nStatus: 5.1.1\n{folded}"))
    (r,) = report.recipients
    assert (r.action, r.status) == ("failed", "5.1.1")
    assert r.diagnostic_code is not None
    assert r.diagnostic_code.startswith("550 5.1.1 unknown x x")
    (((_, diagnostic),),) = _blocks(folded)
    assert len(diagnostic) <= 65536 + 2


def test_a_bounce_is_read_up_to_its_first_megabytes() -> None:
    """The returned message, last in a DSN, may be as large as the original with its
    attachments: only the first MAX_DSN_READ bytes are parsed, which hold the notice and
    the status part."""
    returned = "--B\nContent-Type: message/rfc822\n\nSubject: x\n\n" + "y" * (3 * MAX_DSN_READ)
    text = wrap(f"{STATUS}Action: failed\nStatus: 5.1.1\n").replace("--B--\n", returned)
    (r,) = parse_dsn(text.encode()).recipients
    assert r.status == "5.1.1"


def test_lines_of_dashes_in_a_returned_message_are_not_mime_parts() -> None:
    """Every line starting with "--" was counted: a returned message with an ASCII table
    or a signature separator was refused, its hard bounce never suppressed (tenth
    review). Only "--" and a declared boundary counts."""
    returned = "--B\nContent-Type: message/rfc822\n\nSubject: x\n\n"
    returned += "".join(f"--- item {i} ----\n" for i in range(1500)) + "--B--\n"
    text = wrap(f"{STATUS}Action: failed\nStatus: 5.1.1\n").replace("--B--\n", returned)
    (r,) = parse_dsn(text).recipients
    assert r.status == "5.1.1"


@pytest.mark.parametrize(
    ("declared", "eol"),
    [
        ('boundary="B"', "\n"),
        ("boundary*0=B", "\n"),
        ("boundary*=''%42", "\n"),
        ("boundary=B", "\r"),
    ],
)
def test_a_bounce_of_thousands_of_mime_parts_is_refused(declared: str, eol: str) -> None:
    """100,000 empty parts (683 KB) cost the email package 8 s: refused unread, however
    the boundary is declared (RFC 2231 forms) and lines end (a bare CR): eleventh
    review, 35 s for 2 MiB."""
    parts = f"--B{eol}Content-Type: text/plain{eol}{eol}{eol}" * 5000
    text = wrap(f"{STATUS}Action: failed\nStatus: 5.1.1\n").replace("--B--\n", parts + "--B--\n")
    text = text.replace("boundary=B", declared, 1)
    with pytest.raises(DsnError, match="MIME boundary lines"):
        parse_dsn(text)
