"""Robustness of :func:`mailpolicy.classify` and :func:`mailpolicy.classify_error`.

``classify`` is total over the *content* of a reply (DESIGN.md §2 rule 5): any str,
bytes, bytearray or memoryview, of any size and in any state of corruption, gives a
well-formed :class:`~mailpolicy.Verdict`. Only arguments of the wrong *type* raise, and
then :class:`~mailpolicy.InvalidInputError`. These are property tests (Hypothesis) over
arbitrary text and over generated reply-like text, plus explicit 1 MB inputs and the
exceptions an SMTP client meets. No test here measures time.
"""

from __future__ import annotations

import json
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailpolicy import (
    KINDS,
    REASONS,
    SCOPES,
    STAGES,
    InvalidInputError,
    MailPolicyError,
    Stage,
    Verdict,
    classify,
    classify_error,
)
from mailpolicy._reply import MAX_SCAN
from mailpolicy._vocab import DEAD_ADDRESS_REASONS

Reply = str | bytes | bytearray | memoryview

# Sizes keep the whole module well under 20 s on a slow 2-core machine; no deadline, so a
# slow CI runner cannot make a property flaky.
PROPERTY = settings(max_examples=200, deadline=None)
HEAVY = settings(max_examples=60, deadline=None)

# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

STAGE_OR_NONE: st.SearchStrategy[Stage | None] = st.sampled_from((None, *STAGES))
HOSTS: st.SearchStrategy[str | None] = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.from_regex(r"[a-zA-Z0-9.-]{1,40}", fullmatch=True),
    st.sampled_from(
        [
            "",
            ".",
            "gmail-smtp-in.l.google.com",
            "GMAIL-SMTP-IN.L.GOOGLE.COM.",
            "example-com.mail.protection.outlook.com",
            "mta7.am0.yahoodns.net",
            "mx.example.org",
            "\x00",
            "\ud800.example",
        ]
    ),
)

# Three-"digit" codes, including ones outside [2-5]xx and wrong lengths.
CODES: st.SearchStrategy[str] = st.one_of(
    st.integers(0, 999).map(lambda n: f"{n:03d}"),
    st.integers(0, 99).map(str),
    st.integers(1000, 99999).map(str),
    st.sampled_from(["250", "354", "421", "450", "451", "452", "535", "550", "552", "553"]),
    st.sampled_from(
        ["\uff15\uff15\uff10", "\u0665\u0665\u0660", "55O", "5.5", "600", "199", "099"]
    ),
)
DIGITS = st.text(alphabet="0123456789", max_size=5)
# Enhanced status codes with odd digit counts and any class digit, with or without "#".
STATUSES: st.SearchStrategy[str] = st.builds(
    lambda h, c, s, d: f"{h}{c}.{s}.{d}",
    st.sampled_from(["", "#", "# ", "("]),
    st.sampled_from("0123456789"),
    DIGITS,
    DIGITS,
)
PHRASES = st.sampled_from(
    [
        "user unknown",
        "User unknown in virtual mailbox table",
        "no such user",
        "mailbox full",
        "mailbox unavailable",
        "Recipient address rejected: Access denied",
        "too many recipients",
        "message too large",
        "relay access denied",
        "authentication required",
        "Must issue a STARTTLS command first",
        "greylisted, try again in 300 seconds",
        "retry after 5 minutes",
        "come back in 9999999 h",
        "host mx.example.org[192.0.2.4] said:",
        "host gmail-smtp-in.l.google.com [192.0.2.4]:",
        "(in reply to RCPT TO command)",
        "after MAIL FROM:<a@b>",
        ">>> DATA",
        "said: 550 5.1.1",
        "smtp; 550 5.7.1",
        "Diagnostic-Code: smtp; 452 4.5.3",
        "The email account that you tried to reach does not exist",
        "receiving mail at a rate that prevents additional messages",
        "permanent failure",
        "temporarily deferred",
        "as 2",
        "5.7.606",
        "Return-Path: <x@y>",
        "1.2.3.4",
        "v5.1.1.2",
        "5.1.1.1",
    ]
)
NOISE = st.sampled_from(
    ["\x00", "\r", "\n", "\r\n", "\t", "\ud800", "\udfff", "\ufffd", "é", "\u2028", "#", "-"]
)
# Invalid UTF-8: stray continuation bytes, truncated sequences, encoded surrogates.
BAD_BYTES = st.sampled_from(
    [b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f", b"\xc0\xaf"]
)
LONG_WORDS = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["A", "5", ".", "x5", "\u00e9"]), st.integers(100, 12000)
)
WORDS: st.SearchStrategy[str | bytes] = st.one_of(
    st.text(max_size=12), PHRASES, STATUSES, CODES, NOISE, BAD_BYTES, LONG_WORDS
)
LINE_ENDS = st.sampled_from(["\r\n", "\n", "\r", "", "\r\r\n", "\n\r"])


@st.composite
def reply_pieces(draw: st.DrawFn) -> list[str | bytes]:
    """Reply-like text as pieces: str pieces, and bytes pieces that are not valid UTF-8.

    One to four lines of ``code sep [status] words``, separated by CRLF, LF, a lone CR
    or nothing.
    """
    pieces: list[str | bytes] = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            pieces.append(draw(CODES))
            pieces.append(draw(st.sampled_from(["-", " ", "", "\t", " -", ": ", ","])))
        if draw(st.booleans()):
            pieces.append(draw(STATUSES))
            pieces.append(" ")
        for word in draw(st.lists(WORDS, max_size=6)):
            pieces.append(word)
            pieces.append(draw(st.sampled_from([" ", "", "\x00", ": "])))
        pieces.append(draw(LINE_ENDS))
    return pieces


def as_str(pieces: list[str | bytes]) -> str:
    """Join pieces into a str; invalid bytes become lone surrogates (surrogateescape)."""
    return "".join(
        p if isinstance(p, str) else p.decode("utf-8", "surrogateescape") for p in pieces
    )


def as_bytes(pieces: list[str | bytes]) -> bytes:
    """Join pieces into bytes; surrogates in str pieces are encoded as such (invalid)."""
    return b"".join(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p for p in pieces)


REPLY_TEXTS: st.SearchStrategy[str] = reply_pieces().map(as_str)
REPLY_BYTES: st.SearchStrategy[bytes] = reply_pieces().map(as_bytes)
BYTES_TYPES: st.SearchStrategy[Callable[[bytes], Reply]] = st.sampled_from(
    [bytes, bytearray, memoryview]
)

# ---------------------------------------------------------------------------------------
# The invariants
# ---------------------------------------------------------------------------------------

_STATUS_SHAPE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}", re.ASCII)


def scanned_text(reply: Reply) -> str:
    """The text the classifier looks at: the first MAX_SCAN characters (or bytes, decoded
    as UTF-8 with replacement)."""
    if isinstance(reply, str):
        return reply[:MAX_SCAN]
    return bytes(reply[:MAX_SCAN]).decode("utf-8", "replace")


def status_written_in(status: str, text: str) -> bool:
    """Whether ``text`` contains ``status`` as written: class.subject.detail with subject
    and detail of 1-3 ASCII digits whose values are the status's (leading zeros are
    normalised away: "5.01.001" reads as "5.1.1"), not run into further digits. A qmail
    "#5.1.1" qualifies: the "#" is outside the match."""
    cls, subject, detail = status.split(".")
    pattern = (
        rf"(?<![0-9]){cls}\.0{{0,{3 - len(subject)}}}{subject}"
        rf"\.0{{0,{3 - len(detail)}}}{detail}(?![0-9])"
    )
    return re.search(pattern, text) is not None


def assert_well_formed(v: Verdict, reply: Reply, stage: Stage | None = None) -> None:
    """Every field of ``v`` is in its vocabulary and consistent with the others and with
    the design (DESIGN.md §2), and nothing in it was invented."""
    assert isinstance(v, Verdict)
    text = scanned_text(reply)
    assert v.kind in KINDS
    assert v.reason in REASONS
    assert v.scope in SCOPES
    assert v.stage is None or v.stage in STAGES
    if stage is not None:
        assert v.stage == stage
    # The code is a real reply code read from the text.
    if v.code is not None:
        assert type(v.code) is int
        assert 200 <= v.code <= 599
        assert re.search(rf"(?<![0-9]){v.code}(?![0-9])", text) is not None
    # The status has the RFC 3463 shape and is written in the text (never invented).
    if v.status is not None:
        assert _STATUS_SHAPE.fullmatch(v.status) is not None, v.status
        assert status_written_in(v.status, text), (v.status, text[:200])
    assert (v.kind == "success") == (v.reason == "delivered")
    if v.suppress:
        assert v.kind == "permanent"
        assert not v.retry
        assert v.reason in DEAD_ADDRESS_REASONS
        assert v.stage != "mail"
    if v.retry_after is not None:
        assert type(v.retry_after) is int
        assert v.retry_after >= 0
        assert v.kind == "transient" or v.retry
    assert isinstance(v.rule, str)
    assert v.rule
    assert type(v.retry) is bool
    assert type(v.suppress) is bool
    # The reply-code class governs the kind; the one exception is RFC 5321 §4.5.3.1.10.
    if v.code is not None:
        if 200 <= v.code < 300:
            assert v.kind == "success"
        elif 400 <= v.code < 500:
            assert v.kind == "transient"
            assert not v.suppress
        elif 500 <= v.code < 600:
            assert v.kind == "permanent" or (
                v.kind == "transient" and v.reason == "too_many_recipients"
            )
    d = v.to_dict()
    assert set(d) == {f.name for f in fields(Verdict)}
    assert json.loads(json.dumps(d)) == d


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------


@PROPERTY
@given(reply=st.text(), stage=STAGE_OR_NONE, host=HOSTS)
@example(reply="", stage=None, host=None)
@example(reply="\ud800\udfff\x00", stage="rcpt", host="\ud800")
@example(reply="550 5.01.001 x", stage=None, host=None)
@example(reply="550 x (#5.1.1 - chkusr)", stage=None, host=None)
@example(reply="550 5.1.1.1 1.2.3.4 v5.1.1", stage=None, host=None)
def test_any_text_gives_well_formed_verdict(
    reply: str, stage: Stage | None, host: str | None
) -> None:
    """Any str, with any stage and host, gives a well-formed verdict and never raises."""
    assert_well_formed(classify(reply, stage=stage, host=host), reply, stage)


@PROPERTY
@given(raw=st.binary(), wrap=BYTES_TYPES, stage=STAGE_OR_NONE, host=HOSTS)
@example(raw=b"550 \xff\xfe 5.1.1 user unknown", wrap=bytes, stage=None, host=None)
@example(raw=b"\xed\xa0\x80", wrap=memoryview, stage="mail", host=None)
def test_any_bytes_give_well_formed_verdict(
    raw: bytes, wrap: Callable[[bytes], Reply], stage: Stage | None, host: str | None
) -> None:
    """Any bytes, bytearray or memoryview gives a well-formed verdict and never raises."""
    reply = wrap(raw)
    assert_well_formed(classify(reply, stage=stage, host=host), reply, stage)


@PROPERTY
@given(reply=REPLY_TEXTS, stage=STAGE_OR_NONE, host=HOSTS)
def test_reply_like_text_gives_well_formed_verdict(
    reply: str, stage: Stage | None, host: str | None
) -> None:
    """Reply-like str (odd codes, continuation lines, odd statuses, CR/LF/CRLF, NULs,
    surrogates, very long words) gives a well-formed verdict."""
    assert_well_formed(classify(reply, stage=stage, host=host), reply, stage)


@PROPERTY
@given(raw=REPLY_BYTES, wrap=BYTES_TYPES, stage=STAGE_OR_NONE, host=HOSTS)
def test_reply_like_bytes_give_well_formed_verdict(
    raw: bytes, wrap: Callable[[bytes], Reply], stage: Stage | None, host: str | None
) -> None:
    """Reply-like bytes with invalid UTF-8 give a well-formed verdict."""
    reply = wrap(raw)
    assert_well_formed(classify(reply, stage=stage, host=host), reply, stage)


@PROPERTY
@given(pieces=reply_pieces(), stage=STAGE_OR_NONE, host=HOSTS)
def test_str_and_its_utf8_bytes_agree(
    pieces: list[str | bytes], stage: Stage | None, host: str | None
) -> None:
    """A str reply and its UTF-8 encoding (when it is valid and within MAX_SCAN bytes)
    classify identically."""
    text = "".join(p for p in pieces if isinstance(p, str))
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    raw = text.encode("utf-8")
    if len(raw) > MAX_SCAN:
        raw = raw[:MAX_SCAN]
        text = raw.decode("utf-8", "ignore")
        raw = text.encode("utf-8")
    assert classify(text, stage=stage, host=host) == classify(raw, stage=stage, host=host)


@PROPERTY
@given(
    code=st.integers(200, 599),
    sep=st.sampled_from([" ", "-", "\r\n", "\n", ""]),
    rest=REPLY_TEXTS,
    stage=STAGE_OR_NONE,
)
@example(code=250, sep="\r\n", rest="", stage=None)
@example(code=550, sep="\r\n", rest="", stage="rcpt")
@example(code=451, sep="\r\n", rest="user unknown", stage="rcpt")
@example(code=250, sep="\n", rest="550 5.1.1 user unknown", stage=None)
@example(code=552, sep=" ", rest="5.5.3 too many recipients", stage="rcpt")
def test_first_line_code_governs_kind(code: int, sep: str, rest: str, stage: Stage | None) -> None:
    """A reply whose first line starts with a reply code (followed by SP, "-", a line
    break or the end, RFC 5321 §4.2) is that code's reply: 2xx is success, 4xx transient
    and never suppressed, 5xx permanent unless the reason is too_many_recipients
    (RFC 5321 §4.5.3.1.10), which is transient."""
    reply = f"{code}{sep}{rest}" if sep else str(code)
    v = classify(reply, stage=stage)
    assert_well_formed(v, reply, stage)
    if v.code != code:
        # Only a greeting or DATA's go-ahead yields, and only to an unmistakable failure
        # reply after it: one that starts a line or carries an enhanced status
        # (test_failure_after_greeting_or_354_decides).
        assert code in (220, 354), v
        assert v.code is not None, v
        assert 400 <= v.code < 600, v
        assert v.status is not None or f"\n{v.code}" in reply or f"\r{v.code}" in reply, v
        return
    if code < 300:
        assert v.kind == "success", v
    elif code < 400:
        pass  # 3xx is an intermediate reply: not a failure, nothing more to say
    elif code < 500:
        assert v.kind == "transient", v
        assert not v.suppress
    else:
        expected = "transient" if v.reason == "too_many_recipients" else "permanent"
        assert v.kind == expected, v
    assert v.code == code, v


@PROPERTY
@given(
    first=st.sampled_from(
        ["220-laposte", "220 mx.example.org ESMTP", "354 End data with <CR><LF>.<CR><LF>", "354"]
    ),
    sep=st.sampled_from([" ", "\r\n", "\n"]),
    code=st.integers(400, 599),
    rest=REPLY_TEXTS,
)
def test_failure_after_greeting_or_354_decides(first: str, sep: str, code: int, rest: str) -> None:
    """A relay's transcript "354 End data ... 451 4.3.0 queue file write error" or a
    greeting cut short "220-laposte 421 4.2.1 Service refused" (on one line: the failure
    carries an enhanced status; or on a line of its own) is the failure's reply."""
    status = f"{code // 100}.7.1"
    reply = f"{first}{sep}{code} {status} {rest}" if sep == " " else f"{first}{sep}{code} {rest}"
    v = classify(reply)
    assert v.code == code, v
    assert v.kind == (
        "transient" if code < 500 or v.reason == "too_many_recipients" else "permanent"
    ), v


@pytest.mark.parametrize(
    ("reply", "stage"),
    [
        ("220 mx.example.org ESMTP Postfix 2.0 ready 450 connections", "greeting"),
        ("354 Send message, end with <CRLF>.<CRLF> (max 500 KB)", "data"),
        ("220-Example Corp, 500 Main Street\r\n220 ready", "greeting"),
        ("Remote host said: 354 go ahead; size 552 KB", None),
    ],
)
def test_numbers_after_a_greeting_or_354_are_not_replies(reply: str, stage: Stage | None) -> None:
    v = classify(reply, stage=stage)
    assert v.kind == "success", v
    assert v.code in (220, 354), v


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("ready for 2001:db8::450", None),
        ("client 2001:db8:0:0:0:0:0:250 rejected: 554 denied", 554),
        ("mx.example.org did not like our RCPT TO:501 5.1.3 <a@example.org>: bad syntax", 501),
        ("Error code:550 user unknown", 550),
    ],
)
def test_an_ipv6_address_is_not_a_reply_code(reply: str, code: int | None) -> None:
    assert classify(reply).code == code


DEAD_ADDRESS_REPLIES = st.builds(
    lambda code, status, phrase, tail: f"{code} {status} {phrase}{tail}",
    st.sampled_from(["550", "551", "553", "554", "450", "452", "5", ""]),
    st.sampled_from(["5.1.1", "5.1.2", "5.1.6", "5.1.10", "5.2.1", "4.1.1", "#5.1.1", ""]),
    st.sampled_from(
        [
            "user unknown",
            "no such user here",
            "mailbox unavailable",
            "The email account that you tried to reach does not exist",
            "account disabled",
            "Host or domain name not found",
        ]
    ),
    REPLY_TEXTS,
)


@PROPERTY
@given(reply=DEAD_ADDRESS_REPLIES, host=HOSTS)
def test_mail_stage_never_suppresses(reply: str, host: str | None) -> None:
    """At the MAIL stage a refusal concerns our sender address: the recipient is never
    suppressed, whatever the text says (DESIGN.md §2 rule 3)."""
    v = classify(reply, stage="mail", host=host)
    assert_well_formed(v, reply, "mail")
    assert not v.suppress


@PROPERTY
@given(
    code=st.integers(400, 499),
    reply=DEAD_ADDRESS_REPLIES,
    stage=STAGE_OR_NONE,
    host=HOSTS,
)
def test_4xx_reply_never_suppresses(
    code: int, reply: str, stage: Stage | None, host: str | None
) -> None:
    """A 4xx reply is transient and never suppresses, even with a 5.1.1 status or a
    dead-address phrase (the reply class wins over the enhanced status)."""
    text = f"{code} {reply}"
    v = classify(text, stage=stage, host=host)
    assert_well_formed(v, text, stage)
    assert v.code == code
    assert v.kind == "transient"
    assert not v.suppress


@HEAVY
@given(
    head=REPLY_TEXTS,
    tail=st.one_of(st.text(), PHRASES, REPLY_TEXTS),
    stage=STAGE_OR_NONE,
    as_bytes_=st.booleans(),
)
def test_input_past_max_scan_is_ignored(
    head: str, tail: str, stage: Stage | None, as_bytes_: bool
) -> None:
    """Whatever follows the first MAX_SCAN characters (or bytes) has no influence on the
    verdict."""
    prefix = (head + " " * MAX_SCAN)[:MAX_SCAN]
    if as_bytes_:
        raw = (prefix.encode("utf-8", "surrogatepass") + b" " * MAX_SCAN)[:MAX_SCAN]
        tail_raw = tail.encode("utf-8", "surrogatepass")
        assert classify(raw + tail_raw, stage=stage) == classify(raw, stage=stage)
    else:
        assert classify(prefix + tail, stage=stage) == classify(prefix, stage=stage)


# ---------------------------------------------------------------------------------------
# Explicit examples: 1 MB inputs and MAX_SCAN
# ---------------------------------------------------------------------------------------

MB = 10**6


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        pytest.param(
            lambda: "550 5.1.1 " + "A" * MB,
            {"code": 550, "status": "5.1.1", "kind": "permanent", "reason": "mailbox_unknown"},
            id="550-5.1.1-then-1MB",
        ),
        pytest.param(
            lambda: b"550 5.1.1 " + b"A" * MB,
            {"code": 550, "status": "5.1.1", "kind": "permanent", "reason": "mailbox_unknown"},
            id="bytes-550-5.1.1-then-1MB",
        ),
        pytest.param(lambda: b"\xff" * MB, {"code": None, "status": None}, id="bytes-ff"),
        pytest.param(lambda: "\r" * MB, {"code": None, "status": None}, id="cr"),
        pytest.param(lambda: "4" * MB, {"code": None, "status": None}, id="digits-4"),
        pytest.param(
            lambda: bytearray(b"4" * MB), {"code": None, "status": None}, id="bytearray-4"
        ),
        pytest.param(
            lambda: "user unknown " * 100_000,
            {"code": None, "status": None, "reason": "mailbox_unknown"},
            id="user-unknown-repeated",
        ),
        pytest.param(
            lambda: "abcdefghij" * (MB // 10 + 1), {"code": None, "status": None}, id="no-spaces"
        ),
        pytest.param(
            lambda: "\x00" * MB + "550 5.1.1 user unknown",
            {"code": None, "status": None},
            id="nul-then-reply",
        ),
        pytest.param(
            lambda: "550-5.1.1 no such user\r\n" * 45_000,
            {"code": 550, "status": "5.1.1", "kind": "permanent", "reason": "mailbox_unknown"},
            id="continuation-lines",
        ),
        pytest.param(
            lambda: memoryview("\ud800".encode("utf-8", "surrogatepass") * (MB // 3 + 1)),
            {"code": None, "status": None},
            id="memoryview-encoded-surrogates",
        ),
        pytest.param(lambda: "\ud800" * MB, {"code": None, "status": None}, id="lone-surrogates"),
    ],
)
def test_one_megabyte_inputs(make: Callable[[], Reply], expect: dict[str, Any]) -> None:
    """1 MB inputs are classified like their first MAX_SCAN characters (or bytes) and
    give well-formed verdicts with the expected code, status and reason."""
    reply = make()
    assert len(reply) >= MB
    v = classify(reply)
    assert_well_formed(v, reply)
    assert v == classify(reply[:MAX_SCAN])
    got = v.to_dict()
    assert {k: got[k] for k in expect} == expect


@pytest.mark.parametrize("as_bytes_", [False, True], ids=["str", "bytes"])
def test_decisive_evidence_past_max_scan_is_ignored(as_bytes_: bool) -> None:
    """A status, a phrase or a reply code that only appears after MAX_SCAN characters
    does not influence the verdict; the same evidence just inside MAX_SCAN does."""
    filler = "550 mailbox " + "x " * MAX_SCAN
    late = filler[: MAX_SCAN - 1] + " 5.1.1 user unknown no such user"
    early = filler[: MAX_SCAN - 40] + " 5.1.1 user unknown"
    straddling = filler[: MAX_SCAN - 4] + " 5.1.1 user unknown"  # "... 5.1" | ".1 ..."
    prose_late = "x" * MAX_SCAN + " 550 5.1.1 user unknown"

    def run(text: str) -> Verdict:
        return classify(text.encode() if as_bytes_ else text)

    assert len(early) <= MAX_SCAN < len(late)
    v_early = run(early)
    assert (v_early.status, v_early.reason) == ("5.1.1", "mailbox_unknown")
    for text in (late, straddling):
        v = run(text)
        assert v.code == 550
        assert v.status is None
        assert v.reason != "mailbox_unknown"
        assert v == run(text[:MAX_SCAN])
    v = run(prose_late)
    assert (v.code, v.status, v.reason) == (None, None, "unknown")
    assert v == run(prose_late[:MAX_SCAN])


# ---------------------------------------------------------------------------------------
# Arguments of the wrong type
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [None, 123, 5.5, ["550 5.1.1"], ("550",), {"reply": "550"}, object(), ValueError("550")],
    ids=lambda r: type(r).__name__,
)
def test_wrong_reply_type_raises_invalid_input(reply: Any) -> None:
    """A reply that is not str or bytes-like raises InvalidInputError, a TypeError and a
    MailPolicyError."""
    with pytest.raises(InvalidInputError) as info:
        classify(reply)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, MailPolicyError)


@pytest.mark.parametrize("stage", ["RCPT", "rcpt ", "bogus", "", "none", 1, b"rcpt", ["rcpt"]])
def test_unknown_stage_raises_invalid_input(stage: Any) -> None:
    """A stage outside STAGES (and not None) raises InvalidInputError, for classify and
    classify_error alike."""
    with pytest.raises(InvalidInputError):
        classify("550 5.1.1 user unknown", stage=stage)
    with pytest.raises(InvalidInputError):
        classify_error(TimeoutError(), stage=stage)


@pytest.mark.parametrize("host", [1, b"mx.example.org", ["mx.example.org"], object()])
def test_non_str_host_raises_invalid_input(host: Any) -> None:
    """A host that is not a str (or None) raises InvalidInputError."""
    with pytest.raises(InvalidInputError):
        classify("550 5.1.1 user unknown", host=host)


# ---------------------------------------------------------------------------------------
# classify_error
# ---------------------------------------------------------------------------------------

ERROR_CASES: list[tuple[str, BaseException, dict[str, Any]]] = [
    (
        "refused",
        ConnectionRefusedError(111, "Connection refused"),
        {"kind": "transient", "reason": "network_error", "retry": True, "scope": "relay"},
    ),
    (
        "reset",
        ConnectionResetError(104, "Connection reset by peer"),
        {"kind": "transient", "reason": "network_error", "retry": True},
    ),
    (
        "timeout",
        TimeoutError("timed out"),
        {"kind": "transient", "reason": "timeout", "retry": True},
    ),
    (
        "socket.timeout",
        socket.timeout("timed out"),  # noqa: UP041 (the alias is what callers catch)
        {"kind": "transient", "reason": "timeout", "retry": True},
    ),
    (
        "gaierror",
        socket.gaierror(-2, "Name or service not known"),
        {"kind": "transient", "reason": "network_error", "retry": True},
    ),
    (
        "tls-cert",
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        {"kind": "permanent", "reason": "tls_failed", "retry": False, "scope": "relay"},
    ),
    (
        "disconnected",
        smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
        {"kind": "transient", "reason": "network_error", "retry": True},
    ),
    (
        "starttls-not-supported",
        smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."),
        {"kind": "permanent", "reason": "tls_failed", "retry": False},
    ),
    (
        "auth-not-supported",
        smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server."),
        {"kind": "permanent", "reason": "auth_failed", "retry": False},
    ),
    (
        "421-shutting-down",
        smtplib.SMTPResponseException(421, b"4.3.2 shutting down"),
        {
            "code": 421,
            "status": "4.3.2",
            "kind": "transient",
            "reason": "service_unavailable",
            "retry": True,
        },
    ),
    (
        "sender-refused",
        smtplib.SMTPSenderRefused(553, b"5.1.8 bad sender", "a@b"),
        {
            "code": 553,
            "status": "5.1.8",
            "kind": "permanent",
            "reason": "sender_rejected",
            "stage": "mail",
            "retry": False,
        },
    ),
    (
        "recipients-refused",
        smtplib.SMTPRecipientsRefused({"x@y": (550, b"5.1.1 unknown")}),
        {
            "code": 550,
            "status": "5.1.1",
            "kind": "permanent",
            "reason": "mailbox_unknown",
            "suppress": True,
            "stage": "rcpt",
            "scope": "recipient",
        },
    ),
    (
        "auth-535",
        smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"),
        {
            "code": 535,
            "status": "5.7.8",
            "kind": "permanent",
            "reason": "auth_failed",
            "stage": "auth",
            "retry": False,
            "scope": "relay",
        },
    ),
    (
        "value-error",
        ValueError("something else"),
        {"kind": "transient", "reason": "unknown", "code": None, "status": None},
    ),
]


def reply_text_of(exc: BaseException) -> str:
    """The SMTP reply an smtplib exception carries, as text ("" when it carries none)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, raw = next(iter(exc.recipients.values()))
        return f"{code} {raw.decode()}"
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        return f"{exc.smtp_code} {error.decode() if isinstance(error, bytes) else error}"
    return ""


@pytest.mark.parametrize(
    ("exc", "expect"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_classify_error(exc: BaseException, expect: dict[str, Any]) -> None:
    """Each network failure and smtplib exception gets a sensible verdict: connection
    trouble and timeouts are transient, TLS failures permanent and not retried, smtplib
    replies classified as replies at the stage the exception implies. Only a recipient's
    own refusal suppresses."""
    v = classify_error(exc)
    assert_well_formed(v, reply_text_of(exc))
    got = v.to_dict()
    assert {k: got[k] for k in expect} == expect
    if "suppress" not in expect:
        assert not v.suppress
    if v.code is None:
        assert v.status is None


@pytest.mark.parametrize("stage", STAGES)
def test_classify_error_keeps_given_stage(stage: Stage) -> None:
    """A stage given to classify_error is the verdict's stage; network failures never
    suppress at any stage."""
    for _, exc, _ in ERROR_CASES:
        v = classify_error(exc, stage=stage)
        assert v.stage == stage
        if v.code is None:
            assert not v.suppress


@pytest.mark.parametrize(
    "not_exc",
    [None, "550 5.1.1 user unknown", 550, ValueError, [ValueError("x")]],
    ids=["None", "str", "int", "exception-class", "list"],
)
def test_classify_error_on_non_exception_raises_invalid_input(not_exc: Any) -> None:
    """classify_error takes an exception instance; anything else raises
    InvalidInputError."""
    with pytest.raises(InvalidInputError):
        classify_error(not_exc)


@pytest.mark.parametrize(
    "exc",
    [
        smtplib.SMTPResponseException("abc", None),  # type: ignore[arg-type]
        smtplib.SMTPDataError(None, None),  # type: ignore[arg-type]
        smtplib.SMTPRecipientsRefused(None),  # type: ignore[arg-type]
        smtplib.SMTPRecipientsRefused({"a@b.example": "no tuple"}),  # type: ignore[dict-item]
    ],
)
def test_classify_error_takes_odd_smtplib_exceptions(exc: BaseException) -> None:
    """Built by other code with odd arguments, these raised TypeError/AttributeError from
    inside classify_error (fuzz review); they are failures without a readable reply."""
    v = classify_error(exc)
    assert v.kind == "transient"
    assert not v.suppress


def test_rules_of_the_wrong_type_are_the_librarys_error() -> None:
    with pytest.raises(InvalidInputError, match="rules must be a RuleSet"):
        classify("550 x", rules="abc")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="rules must be a RuleSet"):
        classify_error(OSError(), rules=5)  # type: ignore[arg-type]
