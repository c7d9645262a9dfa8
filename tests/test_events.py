"""The events reach the standard library's logging with the configuration docs/events.md
shows."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy._relaystate import RelayRegistry
from mailpolicy._sender import Sender
from mailpolicy.testing import SMTPTestServer


@pytest.fixture
def stdlib_structlog() -> Iterator[None]:
    structlog.configure(
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
    )
    yield
    structlog.reset_defaults()


def test_delivery_events_reach_a_logging_handler(
    stdlib_structlog: None, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 User unknown")
    m = EmailMessage()
    m["From"] = "app@example.com"
    m["To"] = "ann@example.org, bob@example.org"
    m.set_content("hi\n")
    with (
        caplog.at_level(logging.INFO, logger="mailpolicy"),
        Sender(
            smtp_server.host, smtp_server.port, security="none", relays=RelayRegistry()
        ) as sender,
    ):
        sender.send(m)
    records = [r for r in caplog.records if r.name == "mailpolicy"]
    events = [json.loads(r.getMessage()) for r in records]
    assert [(e["event"], e["state"]) for e in events] == [
        ("mail.delivery", "delivered"),
        ("mail.delivery", "bounced"),
    ]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert events[1]["recipient"] == "b***@example.org"


@pytest.mark.parametrize("style", ["mask", "hash"])
def test_a_recipient_without_an_at_sign_is_not_logged_in_full(
    smtp_server: SMTPTestServer, style: str
) -> None:
    """A mistyped address ("john.smith.example.org") has no domain to show: masking used
    to log it whole, as the "domain" and after "***@"."""
    with (
        structlog.testing.capture_logs() as logs,
        Sender(
            smtp_server.host, smtp_server.port, security="none", relays=RelayRegistry(),
            recipient_style=style,  # type: ignore[arg-type]
        ) as sender,
    ):  # fmt: skip
        m = EmailMessage()
        m["From"] = "app@example.com"
        m.set_content("hi\n")
        report = sender.send(m, recipients=["john.smith.example.org", "jane.doe@example.org"])
    assert [o.state for o in report.outcomes] == ["invalid", "delivered"]
    typo, ok = (e for e in logs if e["event"] == "mail.delivery")
    assert "john" not in repr(typo)
    assert typo["domain"] is None
    assert ok["domain"] == "example.org"
    assert ok["recipient"] != "jane.doe@example.org"


def test_a_failing_log_sink_changes_no_delivery(smtp_server: SMTPTestServer, tmp_path: Any) -> None:
    """Found in review: a structlog processor that raised made send() raise after the
    server had accepted the message (a caller would send it again), and stopped the
    worker before it recorded a delivery (the next run sent it again)."""
    from mailpolicy._store import open_store
    from mailpolicy._worker import Worker

    def broken(logger: Any, method: str, event: Any) -> Any:
        raise RuntimeError("log sink down")

    structlog.configure(processors=[broken])
    try:
        with open_store(f"sqlite:///{tmp_path / 'o.sqlite3'}") as store:
            smtp_server.script.rcpt("bob@example.org", "450 4.2.0 Greylisted")
            m = EmailMessage()
            m["From"] = "app@example.com"
            m["To"] = "ann@example.org, bob@example.org"
            m.set_content("hi\n")
            relays = RelayRegistry()
            with Sender(
                smtp_server.host, smtp_server.port, security="none", relays=relays, store=store
            ) as sender:
                report = sender.send(m)
            assert [o.state for o in report.outcomes] == ["delivered", "deferred"]
            store.retry_now(now=10**10)
            worker = Worker(store, smtp_server.host, smtp_server.port, security="none",
                            relays=relays, clock=lambda: 10.0**10)  # fmt: skip
            assert worker.run_once().delivered == 1
            assert Worker(store, smtp_server.host, smtp_server.port, security="none",
                          relays=relays, clock=lambda: 10.0**10).run_once().claims == 0  # fmt: skip
    finally:
        structlog.reset_defaults()
    assert smtp_server.delivered_to("ann@example.org") == 1
    assert smtp_server.delivered_to("bob@example.org") == 1


def test_hashed_recipients_are_one_token_per_mailbox() -> None:
    """Case and the two spellings of a Unicode domain gave different tokens (review)."""
    from mailpolicy._events import show_recipient

    assert show_recipient("Ann@Example.ORG", "hash") == show_recipient("ann@example.org", "hash")
    assert show_recipient("x@bücher.de", "hash") == show_recipient("x@xn--bcher-kva.de", "hash")
    assert show_recipient("x@bücher.de", "hash").endswith("@xn--bcher-kva.de")


_UNCONFIGURED_SEND = """
import logging, sys
from email.message import EmailMessage
from mailpolicy import Sender
from mailpolicy.testing import SMTPTestServer
if sys.argv[1] == "info":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
if sys.argv[1] == "after-capture":  # capture_logs() leaves is_configured() True
    import structlog.testing
    with structlog.testing.capture_logs():
        pass
with SMTPTestServer() as server:
    server.script.rcpt("bob@example.org", "550 5.1.1 <bob@example.org>: User unknown")
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@example.com", "ann@example.org, bob@example.org", "x"
    m.set_content("y")
    with Sender(server.host, server.port, security="none") as sender:
        sender.send(m)
print("program output")
"""


@pytest.mark.parametrize("logging_config", ["none", "info", "after-capture"])
def test_without_structlog_configured_events_go_to_standard_logging(logging_config: str) -> None:
    """structlog's own default printed every event, debug ones included, to stdout, mixed
    into the program's output (operator walkthrough review). Unconfigured, events go to
    the standard library's "mailpolicy" logger: with no logging set up Python shows the
    warnings on stderr; logging.basicConfig(level=INFO) shows the info ones too."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _UNCONFIGURED_SEND, logging_config],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout == "program output\n"
    lines = done.stderr.splitlines()
    bounced = [line for line in lines if "state='bounced'" in line]
    assert len(bounced) == 1
    assert "event='mail.delivery'" in bounced[0]
    assert "recipient='b***@example.org'" in bounced[0]
    delivered = [line for line in lines if "state='delivered'" in line]
    assert len(delivered) == (1 if logging_config == "info" else 0)
    if logging_config == "info":
        assert delivered[0].startswith("mailpolicy ")
    assert "mail.attempt" not in done.stderr  # debug: not shown at either level


@pytest.mark.parametrize(
    ("style", "shown"),
    [
        ("mask", "550 5.1.1 <b***@example.org>: User unknown"),
        ("full", "550 5.1.1 <Bob@Example.org>: User unknown"),
    ],
)
def test_the_delivery_event_carries_the_reply_with_the_recipient_shown_alike(
    smtp_server: SMTPTestServer, style: str, shown: str
) -> None:
    """What the server said is what an operator needs first; the address inside it is
    shown as the event's recipient field is (masked by default)."""
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 <Bob@Example.org>: User unknown")
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "app@example.com", "bob@example.org", "x"
    m.set_content("y")
    sender = Sender(
        smtp_server.host,
        smtp_server.port,
        security="none",
        relays=RelayRegistry(),
        recipient_style=style,  # type: ignore[arg-type]
    )
    with structlog.testing.capture_logs() as logs, sender:
        sender.send(m)
    (event,) = [e for e in logs if e["event"] == "mail.delivery"]
    assert event["text"] == shown


def test_a_log_handler_that_sends_mail_does_not_loop(
    smtp_server_factory: Any,
) -> None:
    """Django's AdminEmailHandler mails ERROR records, here through mailpolicy itself: a
    held delivery logs an error, which is mailed, held again, logged... (review: 47 SMTP
    connections for one send_mail). Events raised while one is handled are dropped."""
    server = smtp_server_factory(auth_required=True)
    sends: list[int] = []

    class MailTheAdmins(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sends.append(1)
            admin = EmailMessage()
            admin["From"], admin["To"], admin["Subject"] = "app@x.example", "ops@x.example", "e"
            admin.set_content(record.getMessage())
            with Sender(server.host, server.port, security="none",
                        relays=RelayRegistry()) as mailer:  # fmt: skip
                mailer.send(admin)

    handler = MailTheAdmins(level=logging.ERROR)
    logger = logging.getLogger("mailpolicy")
    logger.addHandler(handler)
    try:
        structlog.reset_defaults()  # unconfigured: events go to the stdlib logger
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "app@x.example", "ann@x.example", "x"
        m.set_content("y")
        with Sender(server.host, server.port, security="none", relays=RelayRegistry()) as s:
            (o,) = s.send(m).outcomes
    finally:
        logger.removeHandler(handler)
    assert (o.state, o.reason) == ("held", "auth_required")
    assert sends == [1]  # the admins' mail was held too, and its event not handled again
    assert server.connections == 2


@pytest.mark.parametrize(
    ("text", "address", "shown"),
    [
        # NFD as typed on macOS, NFC on the wire and in the server's quote
        ("550 5.1.1 <jürgen@example.org>: unknown", "ju\u0308rgen@example.org",
         "550 5.1.1 <j***@example.org>: unknown"),
        # a Unicode domain quoted as its A-label, and the other way round
        ("550 <x@xn--strae-oqa.de>: no", "x@straße.de", "550 <x***@straße.de>: no"),
        ("550 <x@straße.de>: no", "x@xn--strae-oqa.de", "550 <x***@xn--strae-oqa.de>: no"),
        # the local part echoed alone; a generic one is left readable
        ("550 Mailbox ann.smith does not exist", "ann.smith@example.org",
         "550 Mailbox *** does not exist"),
        ("550 User unknown", "user@example.org", "550 User unknown"),
        # a regex metacharacter in the address, and a trailing full stop
        ("550 a+b@example.org.", "a+b@example.org", "550 a***@example.org."),
        # atext a token pattern might cut short, a quoted local part, an address literal
        ("550 <O'Brien@example.org>", "o'brien@example.org", "550 <o***@example.org>"),
        ("550 <ann{x}@example.org>", "ann{x}@example.org", "550 <a***@example.org>"),
        ('550 <"john doe"@example.org>', '"john doe"@example.org', '550 <"***@example.org>'),
        ("550 <zz@[192.0.2.1]>", "zz@[192.0.2.1]", "550 <z***@[192.0.2.1]>"),
        # other people's addresses are masked too, each in its own spelling (eighth
        # review: a co-recipient or forwarding target is no more the logs' business)
        ("550 <joann@example.org> <ann@example.org>", "ann@example.org",
         "550 <j***@example.org> <a***@example.org>"),
        ("550 <ann@example.org.evil.net>", "ann@example.org", "550 <a***@example.org.evil.net>"),
        # a quoted spelling of another form, and a backslash (no regex group reference)
        ("550 'jürgen@xn--mnchen-3ya.example'", "jürgen@münchen.example",
         "550 'j***@münchen.example'"),
        ("550 <x@a\\1b.example>", "x@a\\1b.example", "550 <x***@a\\1b.example>"),
        # what servers write around an address (fourth review)
        ("550 to=annsmith@example.org", "annsmith@example.org", "550 to=a***@example.org"),
        ("550 orcpt=rfc822;ann@example.org", "x@y.example", "550 orcpt=rfc822;a***@example.org"),
        ("550 ann@example.org's quota", "ann@example.org", "550 a***@example.org's quota"),
        ("550 recipient/ann@example.org?", "ann@example.org", "550 r***@example.org?"),
        ("550 {ann@example.org}", "ann@example.org", "550 {a***@example.org}"),
        ("550 '\"john doe\"@example.org'", '"john doe"@example.org', "550 '\"***@example.org'"),
        # an apostrophe in the local part, quoted in another spelling; an NFD echo alone
        ("550 <o'brien@xn--mnchen-3ya.example>", "o'brien@münchen.example",
         "550 <o***@münchen.example>"),
        ("550 mailbox ju\u0308rgen.smith unknown", "jürgen.smith@example.org",
         "550 mailbox *** unknown"),
        # typographic quotes, a trailing hyphen, two addresses joined by "/"
        ("550 \u2018ann@xn--mnchen-3ya.example\u2019", "ann@münchen.example",
         "550 \u2018a***@münchen.example\u2019"),
        ("550 ann@XN--MNCHEN-3YA.example-", "ann@münchen.example", "550 a***@münchen.example-"),
        ("550 bob@x.org/ann@xn--mnchen-3ya.example", "ann@münchen.example",
         "550 b***@***/a***@münchen.example"),  # "x.org/ann" may be a local part
        # the local part before another domain (an alias rewritten by the server)
        ("550 <ann.smith@mail.example.org>", "ann.smith@example.org",
         "550 <a***@mail.example.org>"),
        # an address is what it may contain, whatever surrounds it (eighth review: a
        # list of separators is never complete; "/" and "|" may be in a local part)
        ("550 5.1.1 Empfänger „max@xn--mnchen-3ya.example“ unbekannt", "max@münchen.example",
         "550 5.1.1 Empfänger „m***@münchen.example“ unbekannt"),
        ("550 宛先「info@xn--mnchen-3ya.example」は存在しません", "info@münchen.example",
         "550 宛先「i***@münchen.example」は存在しません"),
        ("550 \uff1cinfo@xn--mnchen-3ya.example\uff1e: User unknown", "info@münchen.example",
         "550 \uff1ci***@münchen.example\uff1e: User unknown"),
        ("550 „jü@example.org“ unknown", "ju\u0308@example.org", "550 „j***@example.org“ unknown"),
        ("550 <a/b@xn--mnchen-3ya.example>", "a/b@münchen.example", "550 <a***@münchen.example>"),
        ("550 <a|b@example.org>", "a|b@example.org", "550 <a***@example.org>"),
        ("550 <bob#ann@example.org> unknown", "ann@example.org", "550 <b***@example.org> unknown"),
        ("bob@x.org&max@xn--mnchen-3ya.example", "max@münchen.example",
         "b***@***&m***@münchen.example"),
        ("550 SRS0=HHH=TT=example.com=ann@fwd.example", "x@y.example",
         "550 S***@fwd.example"),
        ("550 ann@example.org。", "ann@example.org", "550 a***@example.org。"),
        # ninth review: a quote with no opening one, an escaped quote, an "@" inside a
        # quoted local part, characters beyond atext, a comment or a space before "@"
        ('550 <bob.jones"@example.org>', "x@y.example", "550 <b***@example.org>"),
        ('550 "bob.jones\\"x"@example.org', "x@y.example", '550 "***@example.org'),
        ('550 <"bob@jones"@example.org>', "x@y.example", '550 <"***@example.org>'),
        ("550 <pau.col\u00b7lecta@example.cat>", "x@y.example", "550 <p***@example.cat>"),
        ("550 jordi\u200dpuig@example.org", "x@y.example", "550 j***@example.org"),
        ("550 bob.jones(comment)@example.org", "x@y.example", "550 b***@example.org"),
        ("550 <bob.jones @example.org>", "x@y.example", "550 <b***@example.org>"),
        ("550 bob.jones\\@example.org", "x@y.example", "550 b***@example.org"),
        # eleventh review: punctuation right before the "@", a domain running into the
        # next address, a quoted local part with a space, a local part of symbols
        ("550 \u2018bob.secret\u2019@example.net", "x@y.example", "550 \u2018b***@example.net"),
        ("550 <bob.secret,@example.net>", "x@y.example", "550 <b***@example.net>"),
        ("550 (bob.secret)@example.net", "x@y.example", "550 (b***@example.net"),
        ("550 送信者ann@example.orgと受信者bob.secret@example.net", "x@y.example",
         "550 送***@***@example.net"),
        ("ann@example.org.bob.secret@example.net", "x@y.example", "a***@***@example.net"),
        ('550 "bob secret" @example.net', "x@y.example", '550 "***@example.net'),
        ("550 \U0001f600\U0001f600\U0001f600@x.org", "x@y.example", "550 \U0001f600***@x.org"),
        # twelfth review: a domain running into the next local part through "+", "/" or
        # a space; separators inside a comment; " @" in ordinary text is no address
        ("550 ann@example.orgbob.secret+tag@x.org", "x@y.example", "550 a***@***+t***@x.org"),
        ("550 ann@example.orgbob.secret @x.org", "x@y.example", "550 a***@*** @x.org"),
        ("550 <bob.secret(dept:sales)@x.org>", "x@y.example", "550 <b***@x.org>"),
        ("550 <bob.secret(a,b)@x.org>", "x@y.example", "550 <b***@x.org>"),
        ("an address needs a local part, an @-sign", "x@y.example",
         "an address needs a local part, an @-sign"),
        ("250 sent @ 10:30 to relay", "x@y.example", "250 sent @ 10:30 to relay"),
        ('550 "bob@secret"\uff20a.b', "x@y.example", '550 "***@a.b'),
        ("550 mailfrom=bounce@our.org", "x@y.example", "550 mailfrom=b***@our.org"),
        # fifteenth review: space, a bracket or a comment after the "@"
        ("550 <bob.smith @ example.org> no", "x@y.example", "550 <b***@ example.org> no"),
        ('550 "bob smith" @ example.org', "x@y.example", '550 "***@ example.org'),
        ("550 bob.smith @(c)example.org", "x@y.example", "550 b***@(c)example.org"),
        ("421 retry @10:30 UTC", "x@y.example", "421 retry @10:30 UTC"),
        # thirteenth review: a quoted address before " @", " @[", a long local part
        ('550 "bob.jones@example.org" @ 10:30', "x@y.example", '550 "b***@example.org" @ 10:30'),
        ("550 bob.jones @[192.0.2.1]: denied", "x@y.example", "550 b***@[192.0.2.1]: denied"),
        ("550 " + "q" * 300 + "@x.org", "x@y.example", "550 q***@x.org"),
    ],
)  # fmt: skip
def test_the_reply_text_masks_every_spelling_of_the_recipient(
    text: str, address: str, shown: str
) -> None:
    from mailpolicy._events import shown_text

    assert shown_text(text, address, "mask") == shown


def test_a_cut_without_white_space_leaves_no_piece_of_an_address() -> None:
    """The 1,200-character cut before masking split "bob.jones@..." before its "@" was
    seen, and "bob.j" was shown (ninth review)."""
    from mailpolicy._events import shown_text

    text = "550," + ("y" * 250 + "@d.o,") * 4 + "q" * 170 + "," + "bob.jones@example.org"
    assert "bob" not in shown_text(text, "ann@example.org", "mask")


@pytest.mark.parametrize(
    "text",
    [
        "550 user" + " " * 4770 + "bob.secret @example.org unknown",
        "550 user" + " " * 4770 + '"bob.secret jones"@example.org',
        "550 " + "a" * 1160 + '@x.org "bob.secret jones"@example.org',
        ",".join("a" * 60 + "@x.io" for _ in range(18)) + ",bob(c)smith@x.org more",
    ],
)
def test_a_cut_before_masking_leaves_no_start_of_an_address(text: str) -> None:
    """The word before " @", or a quoted local part, survived a cut that left its "@"
    behind (fourteenth review)."""
    from mailpolicy._events import shown_text

    assert "bob" not in shown_text(text, "x@y.example", "mask")


def test_the_hash_of_one_mailbox_is_one_token_and_of_another_another() -> None:
    """NFD and NFC, a trailing dot: one mailbox, one digest; "strasse@" is not
    "straße@" (case folding made it the recipient's digest: ninth review)."""
    from mailpolicy._events import show_recipient, shown_text

    nfc, nfd = "jürgen@münchen.example", "ju\u0308rgen@münchen.example"
    assert show_recipient(nfc, "hash") == show_recipient(nfd, "hash")
    assert show_recipient("ann@example.org.", "hash") == show_recipient("ann@example.org", "hash")
    own = show_recipient("ann@münchen.example", "hash")
    for spelling in ('"ann"@münchen.example', "ann @münchen.example", "ann\uff20münchen.example"):
        assert shown_text(spelling, "ann@münchen.example", "hash") == own, spelling
    other = shown_text("550 strasse@example.org", "straße@example.org", "hash")
    assert show_recipient("straße@example.org", "hash") not in other


def test_a_reply_of_many_addresses_is_masked_and_cut_to_the_events_length() -> None:
    """1,200 characters of short Unicode addresses cost 10 ms per event, per recipient
    (ninth review): masking stops once twice the event's length is written, and what
    is shown is cut as any text."""
    from mailpolicy._events import MAX_EVENT_TEXT, shown_text

    text = " ".join(f"b{i}@xn--mnchen-3ya{i}.example" for i in range(60))
    shown = shown_text(text, "ann@example.org", "hash")
    assert len(shown) <= MAX_EVENT_TEXT
    assert shown.endswith(" …")


def test_the_hash_style_shows_the_recipients_digest_and_hashes_the_others() -> None:
    """The recipient's own address, in any spelling, carries the event's recipient
    digest (logs join on it); another address its own digest, never the address."""
    from mailpolicy._events import show_recipient, shown_text

    own = show_recipient("ann@münchen.example", "hash")
    text = "550 <ANN@xn--mnchen-3ya.example>, cc bob@example.org: unknown"
    shown = shown_text(text, "ann@münchen.example", "hash")
    assert shown == f"550 <{own}>, cc {show_recipient('bob@example.org', 'hash')}: unknown"
    assert "ann" not in shown.lower()
    assert "bob" not in shown


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            list("ab.-_+/|=&'\"{}<>()[]:;, @\u201e\u300c\u3002\uff1c\u0308xé")
        ),
        max_size=60,
    ),
    st.sampled_from(["ann@example.org", "a.b@münchen.example", "x@[192.0.2.1]"]),
)
def test_no_address_survives_masking(around: str, address: str) -> None:
    """Whatever surrounds an address, no local part of two or more letters and digits
    is left in front of an "@" in the masked text (one character may be shown)."""
    import re

    from mailpolicy._events import shown_text

    shown = shown_text(f"550 {around} zqxv9@example.net {around}", address, "mask")
    assert "zqxv9" not in shown
    for m in re.finditer(r"([^\W_]{2,})(?=@)", shown):
        raise AssertionError(f"{m.group()!r} left before an @ in {shown!r}")


def test_a_long_reply_is_cut_on_a_word_boundary_after_masking() -> None:
    """Whitespace collapses before the cut, so an address far into a padded reply is
    masked; a word cut in two at the end is dropped (a piece of an address would be
    left): fourth review."""
    from mailpolicy._events import MAX_EVENT_TEXT, shown_text

    padded = "550" + " " * 1190 + "annsmith@example.org rejected"
    assert shown_text(padded, "annsmith@example.org", "mask") == "550 a***@example.org rejected"
    long = "550 " + " ".join(["word"] * 100) + " <" + "q" * 64 + "@example.org>"
    cut = shown_text(long, "q" * 64 + "@example.org", "full")
    assert len(cut) <= MAX_EVENT_TEXT
    assert cut.endswith("word …")
    exact = "550 " + "w" * (MAX_EVENT_TEXT - 7) + " tail"  # a space right at the cut
    assert len(shown_text(exact, "a@b.example", "full")) <= MAX_EVENT_TEXT
    # A cut of the raw text inside an address drops the piece (sixth review).
    for blank in ("\n", "\xa0", "\x0b"):  # any whitespace str.split() splits on
        padded = "550 " + blank * 4790 + "ann.smith@example.org unknown"
        assert shown_text(padded, "ann.smith@example.org", "mask") == "550"


def test_a_store_error_in_an_event_shows_the_address_as_recipients_are_shown(
    smtp_server: SMTPTestServer, tmp_path: Any
) -> None:
    """The store's error names the address it was suppressing; the event carried it
    whole whatever recipient_style said (security review)."""
    import sqlite3

    from mailpolicy._store import open_store
    from mailpolicy.testing import FakeClock

    path = tmp_path / "mail.sqlite3"
    store = open_store(f"sqlite:///{path}", busy_timeout=0.05)
    smtp_server.script.rcpt("550 5.1.1 <robert.private@example.org>: User unknown")
    clock = FakeClock()
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "app@example.com", "robert.private@example.org", "x"
    m.set_content("y")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another connection keeps the write lock
    try:
        with structlog.testing.capture_logs() as logs, Sender(
            smtp_server.host, smtp_server.port, security="none", relays=RelayRegistry(),
            store=store, clock=clock.time, monotonic=clock.now, sleep=clock.sleep,
            recipient_style="hash",
        ) as sender:  # fmt: skip
            (o,) = sender.send(m).outcomes
    finally:
        holder.rollback()
        holder.close()
        store.close()
    assert o.state == "bounced"
    (failed,) = [e for e in logs if e["event"] == "mail.suppression_failed"]
    assert "locked" in failed["error"]
    assert "robert" not in failed["error"]
    assert "sha256:" in failed["error"]
