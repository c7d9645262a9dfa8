"""Message preparation: the bytes and envelope that go on the wire."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage, Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy import MessageError
from mailpolicy._message import prepare_message, split_addresses


def make(body: str = "hello\n", **headers: str) -> EmailMessage:
    m = EmailMessage()
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    m.set_content(body)
    return m


def test_envelope_from_headers_as_written() -> None:
    """Sender comes from From; recipients from To, Cc, Bcc in order, as the user wrote
    them (Python's parser turns two@@example.org into <>; we keep what was given)."""
    m = make(From="App <app@example.com>", To="two@@example.org, Bob <bob@example.org>",
             Cc='"Doe, J" <j@example.org>', Bcc="hidden@example.org")  # fmt: skip
    p = prepare_message(m)
    assert p.envelope_from == "app@example.com"
    assert p.recipients == (
        "two@@example.org",
        "bob@example.org",
        "j@example.org",
        "hidden@example.org",
    )


def test_sender_header_wins_and_explicit_envelope_wins() -> None:
    m = make(From="a@example.com", Sender="list@example.com", To="b@example.org")
    assert prepare_message(m).envelope_from == "list@example.com"
    p = prepare_message(m, envelope_from="bounces@example.com", recipients=["x@example.org"])
    assert (p.envelope_from, p.recipients) == ("bounces@example.com", ("x@example.org",))


def test_duplicates_removed_order_kept() -> None:
    p = prepare_message(make(From="a@x.org", To="b@x.org, c@x.org", Cc="b@x.org"))
    assert p.recipients == ("b@x.org", "c@x.org")


def test_bcc_never_in_the_data() -> None:
    m = make(From="a@x.org", To="b@x.org", Bcc="secret@x.org, other-secret@x.org")
    p = prepare_message(m)
    assert b"secret" not in p.data
    assert p.recipients == ("b@x.org", "secret@x.org", "other-secret@x.org")
    assert m["Bcc"] is not None  # the caller's message is not modified
    raw = b"From: a@x.org\r\nBcc: s1@x.org,\r\n s2@x.org\r\nTo: b@x.org\r\n\r\nbody\r\n"
    folded = prepare_message(email.message_from_bytes(raw, policy=email.policy.default))
    assert folded.recipients == ("b@x.org", "s1@x.org", "s2@x.org")
    assert b"s1@" not in folded.data
    assert b"s2@" not in folded.data
    assert b"\r\nTo: b@x.org\r\n" in folded.data
    # Resent-Bcc too, as smtplib's send_message removes it (security review)
    resent = make(From="a@x.org", To="b@x.org")
    resent["Resent-Bcc"] = "hidden@x.org"
    assert b"hidden" not in prepare_message(resent).data


def test_crlf_only_and_dot_stuffing() -> None:
    """No bare CR or LF anywhere (SMTP smuggling: "\\n.\\r\\n" must not end the data
    early), lines starting with a dot are doubled, and the data ends with CRLF.CRLF."""
    m = Message()
    m["From"] = "a@x.org"
    m["To"] = "b@x.org"
    m.set_payload("one\n.two\r\n\n.\r\nthree\rfour\n.\n")
    p = prepare_message(m)
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", p.wire_data) is None
    assert p.wire_data.endswith(b"\r\n.\r\n")
    assert p.wire_data.count(b"\r\n.\r\n") == 1
    assert b"\r\n..two\r\n" in p.wire_data
    assert b"\r\n..\r\n" in p.wire_data  # the smuggling attempt became an ordinary line


@given(st.text(alphabet=st.sampled_from(["a", ".", "\r", "\n", " ", "é"]), max_size=200))
@settings(max_examples=200, deadline=None)
def test_no_bare_line_endings_for_any_body(body: str) -> None:
    m = Message()
    m["From"] = "a@x.org"
    m["To"] = "b@x.org"
    m.set_payload(body, charset="utf-8")
    p = prepare_message(m)
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", p.wire_data) is None
    assert p.wire_data.endswith(b"\r\n.\r\n")
    assert p.wire_data.count(b"\r\n.\r\n") == 1


def test_message_id_added_once_and_kept() -> None:
    m = make(From="a@example.com", To="b@x.org")
    p1 = prepare_message(m)
    assert p1.message_id.endswith("@example.com>")
    assert p1.data.startswith(b"Message-ID: " + p1.message_id.encode())
    m2 = make(From="a@example.com", To="b@x.org", Message_ID="<fixed@example.com>")
    assert prepare_message(m2).message_id == "<fixed@example.com>"
    assert prepare_message(m2).data.count(b"Message-ID:") == 1


def test_parsed_message_keeps_folded_headers() -> None:
    raw = b"From: a@x.org\r\nTo: b@x.org,\r\n c@x.org\r\nSubject: s\r\n\r\nbody\r\n"
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert prepare_message(m).recipients == ("b@x.org", "c@x.org")


@pytest.mark.parametrize("value", ["x\r\nBcc: evil@x.org", "x\nBcc: evil@x.org", "x\x00y"])
def test_header_injection_refused(value: str) -> None:
    """compat32 messages accept any header text; we refuse CR/LF/NUL in values."""
    m = Message()
    m["From"] = "a@x.org"
    m["To"] = "b@x.org"
    m["Subject"] = value
    m.set_payload("x")
    with pytest.raises(MessageError, match="header injection"):
        prepare_message(m)


def test_programming_errors() -> None:
    with pytest.raises(MessageError, match="no recipients"):
        prepare_message(make(From="a@x.org"))
    with pytest.raises(MessageError, match="no From"):
        prepare_message(make(To="a@x.org"))
    with pytest.raises(MessageError, match="EmailMessage"):
        prepare_message("not a message")  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="list of str"):
        prepare_message(make(From="a@x.org"), recipients="b@x.org")


def test_recipients_may_be_any_iterable_of_str_and_nothing_else() -> None:
    """A generator used to be consumed by the type check and then reported as "no
    recipients"; an int escaped as TypeError."""
    m = make(From="a@x.org")
    assert prepare_message(m, recipients=(r for r in ["b@x.org"])).recipients == ("b@x.org",)
    with pytest.raises(MessageError, match="recipients must be a list of str, not int"):
        prepare_message(m, recipients=5)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="recipients must be a list of str"):
        prepare_message(m, recipients=[b"b@x.org"])  # type: ignore[list-item]


def _compat32_int_header() -> Message:
    m = Message()
    m["From"], m["To"] = "a@x.org", "b@x.org"
    m["X-Count"] = 5  # type: ignore[assignment]
    m.set_payload("x")
    return m


def _compat32_str_part() -> Message:
    m = Message()
    m["From"], m["To"] = "a@x.org", "b@x.org"
    m.attach("text")
    return m


@pytest.mark.parametrize("build", [_compat32_int_header, _compat32_str_part])
def test_a_malformed_compat32_message_is_a_message_error(build: object) -> None:
    """Hand-built legacy messages that the email package itself cannot walk or
    serialise raised AttributeError from deep inside it."""
    with pytest.raises(MessageError, match="cannot be"):
        prepare_message(build())  # type: ignore[operator]


def test_eight_bit_and_smtputf8_flags() -> None:
    assert prepare_message(make(From="a@x.org", To="b@x.org")).eight_bit is False
    m = EmailMessage()
    m["From"] = "a@x.org"
    m["To"] = "b@x.org"
    m.set_content("héllo wörld\n", cte="8bit")
    assert prepare_message(m).eight_bit is True
    # An internationalised address in a header cannot be an RFC 2047 encoded-word
    # (RFC 2047 §5): the header goes as raw UTF-8 and the message needs SMTPUTF8.
    m2 = make(From="a@x.org", To="用户@例子.广告")
    p2 = prepare_message(m2)
    assert "To: 用户@例子.广告\r\n".encode() in p2.data
    assert b"=?utf-8?" not in p2.data
    assert (p2.smtputf8, p2.recipients) == (True, ("用户@例子.广告",))
    # A non-ASCII display name is fine as an encoded-word: no SMTPUTF8 needed.
    m3 = make(From="a@x.org", To="Jörg <joerg@x.org>")
    p3 = prepare_message(m3)
    assert (p3.smtputf8, p3.data.isascii()) == (False, True)


def test_an_idn_domain_alone_goes_as_its_a_label_without_smtputf8() -> None:
    """Found in review: "user@bücher.de" in To made the whole message need SMTPUTF8, so a
    server without it bounced a message every server can take. The domain is written as
    its A-label (the original message is not changed); a group keeps the old way."""
    m = make(From="Shop <shop@bücher.de>", To="Jürgen Müller <user@bücher.de>, b@x.org")
    p = prepare_message(m)
    assert (p.smtputf8, p.data.isascii()) == (False, True)
    assert b"From: Shop <shop@xn--bcher-kva.de>\r\n" in p.data
    assert b"<user@xn--bcher-kva.de>, b@x.org\r\n" in p.data
    assert p.recipients == ("user@bücher.de", "b@x.org")
    assert str(m["To"]) == "Jürgen Müller <user@bücher.de>, b@x.org"
    group = prepare_message(make(From="a@x.org", To="team: user@bücher.de;"))
    assert group.smtputf8 is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a@x.org", ["a@x.org"]),
        ("A <a@x.org>, b@y.org", ["a@x.org", "b@y.org"]),
        ('"Doe, J" <j@x.org>', ["j@x.org"]),
        ("team: a@x.org, b@y.org;, c@z.org", ["a@x.org", "b@y.org", "c@z.org"]),
        ("c@z.org (a comment, with a comma)", ["c@z.org"]),
        ("undisclosed-recipients:;", []),
        ("", []),
        ("two@@example.org", ["two@@example.org"]),
        # the colons of an address literal are not a group's (fuzz review: '::1]')
        ("b@[IPv6:::1]", ["b@[IPv6:::1]"]),
        ("x@[IPv6:2001:db8::1], A <a@x.org>", ["x@[IPv6:2001:db8::1]", "a@x.org"]),
        # brackets inside a quoted string are text, not the address (twelfth review:
        # the envelope went to bob@evil.example)
        ('Ann <ann@example.com> "<bob@evil.example>"', ["ann@example.com"]),
        ('"x <bob@evil.example>" ann@example.com', ['"x <bob@evil.example>" ann@example.com']),
        ('"a, <b@evil.example>" <c@example.org>', ["c@example.org"]),
        # a quote or a backslash inside a comment is comment (thirteenth review)
        ('("(") <evil@z.example> ) <a@x.example>', ["a@x.example"]),
        ('(")a@x.example, b@y.example', ["a@x.example", "b@y.example"]),
        ("a@x.example (\\)", ["a@x.example"]),
        # fourteenth review: a backslash outside quotes is a character; a quoted group
        # name; a colon in a quoted local part; a source route
        ('Ann \\"<b@y.org>" <a@x.org>', ["a@x.org"]),
        ('"Team A": a@x.org, c@x.org;', ["a@x.org", "c@x.org"]),
        ('a."b:c"@x.org', ['a."b:c"@x.org']),
        ("<@r.org:bob@y.org>", ["bob@y.org"]),
        # fifteenth review: an encoded word is display-name text whatever it holds; an
        # "@" in a quoted group name
        ("=?us-ascii?q?<evil@z>?= <a@x>", ["a@x"]),
        ("A =?us-ascii?q?a,<evil@z>?= <a@x>", ["a@x"]),
        ('=?us-ascii?q?"?= <a@x>, =?us-ascii?q?"?= <b@y>', ["a@x", "b@y"]),
        ("=?us-ascii?q?(?= <a@x>, b@y", ["a@x", "b@y"]),
        (
            '"Support @ Example": ann@example.org, bob@example.org;',
            ["ann@example.org", "bob@example.org"],
        ),
    ],
)
def test_split_addresses(text: str, expected: list[str]) -> None:
    assert split_addresses(text) == expected


def test_a_body_line_over_998_octets_is_re_encoded() -> None:
    """RFC 5321 §4.5.3.1.6 (found in review): a legacy message's 5,000-octet line went out
    as is; its part is now quoted-printable, and reads back the same."""
    m = Message()
    m["From"], m["To"] = "a@x.org", "b@x.org"
    m.set_payload("x" * 5000 + "\n")
    p = prepare_message(m)
    assert max(len(line) for line in p.wire_data.split(b"\r\n")) <= 998
    back = email.message_from_bytes(p.data, policy=email.policy.default)
    assert back["Content-Transfer-Encoding"] == "quoted-printable"
    payload = back.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.rstrip(b"\r\n") == b"x" * 5000


def test_a_long_line_that_cannot_be_re_encoded_is_a_message_error() -> None:
    raw = b"From: a@x.org\r\nTo: b@x.org\r\n\r\n" + "ü".encode() * 600 + b"\r\n"
    m = email.message_from_bytes(raw, policy=email.policy.default)
    with pytest.raises(MessageError, match="longer than 998 octets"):
        prepare_message(m)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"From: a@x.org\r\nTo: b@x.org\r\nX-Trace: " + b"A" * 1200 + b"\r\n\r\nhi\r\n", "X-Trace"),
        (b"X-First: " + b"B" * 1200 + b"\r\nFrom: a@x.org\r\nTo: b@x.org\r\n\r\nhi\r\n", "X-First"),
        (b"From: a@x.org\r\nTo: b@x.org\r\nX-F: a\r\n b\r\n " + b"C" * 1200 + b"\r\n\r\n", "X-F"),
    ],
)  # fmt: skip
def test_a_header_line_over_998_octets_is_a_message_error(raw: bytes, name: str) -> None:
    """Servers refuse it after MAIL and RCPT ("500 5.5.2 Line too long"): every
    recipient bounced (fuzz review). Said before any SMTP traffic, naming the header."""
    with pytest.raises(MessageError, match=f"^header {name} has a line longer than 998"):
        prepare_message(email.message_from_bytes(raw))  # compat32 writes it as it came
    # The modern policies refold (or encode) a long header themselves: no error.
    refolded = prepare_message(email.message_from_bytes(raw, policy=email.policy.default))
    assert max(len(line) for line in refolded.data.split(b"\r\n")) <= 998


def test_a_header_the_email_package_cannot_parse_is_no_crash() -> None:
    """'team: a@x; b@y' (an address after a group's ";" without a comma) makes CPython's
    header parser raise AttributeError; it escaped send() (fifteenth review)."""
    raw = b"From: a@example.org\r\nTo: team: ann@example.org; bob@b\xc3\xbccher.de\r\n\r\nx\r\n"
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert prepare_message(m).recipients == ("ann@example.org", "bob@bücher.de")


def test_short_lines_are_left_alone() -> None:
    m = make("hello\n" * 3, From="a@x.org", To="b@x.org")
    assert b"hello\r\nhello\r\nhello\r\n" in prepare_message(m).data


def test_a_parsed_message_gets_its_idn_domains_as_a_labels_too() -> None:
    """Parsed messages (the Flask integration parses every message) keep raw header text:
    the first rewrite skipped them, and one of two To lines would have been missed."""
    raw = (
        "From: a@example.org\r\nTo: x@bücher.de\r\nTo: Jörg <y@bücher.de>\r\n"
        "Subject: hi\r\n\r\nhi\r\n"
    ).encode()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    p = prepare_message(parsed)
    assert (p.smtputf8, p.data.isascii()) == (False, True)
    assert b"To: x@xn--bcher-kva.de\r\n" in p.data
    assert b"<y@xn--bcher-kva.de>\r\n" in p.data
    assert p.recipients == ("x@bücher.de", "y@bücher.de")
