"""Interop against a real MTA: Debian's Postfix as a throwaway instance on 127.0.0.1.

One instance per session (tests/postfix/, docs/interop.md) with its own configuration,
queue, log and Maildirs in a temporary directory. Every test checks the outcome the
Sender reports against Postfix's real reply, and what Postfix did with the message: its
log (``maillog_file``) and the delivered Maildir file, compared byte for byte.

Skipped, with the reason in pytest's summary, where Postfix cannot run (not installed,
not root); set ``MAILPOLICY_REQUIRE_POSTFIX=1`` (CI does) to make that a failure.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Literal, NoReturn

import pytest
import trustme

from mailpolicy._outcome import DeliveryReport, RecipientOutcome, utc
from mailpolicy._relaystate import RelayRegistry
from mailpolicy._sender import Sender
from mailpolicy.testing import FakeClock
from postfix import DOMAIN, LOCAL_DOMAIN, PostfixInstance, PostfixUnavailableError, find_postfix

REQUIRE_ENV = "MAILPOLICY_REQUIRE_POSTFIX"
FROM = f"app@{DOMAIN}"
PortName = Literal["plain", "noutf8", "tls"]


# --- the instance --------------------------------------------------------------------


class Interop:
    """The running instance plus the CA its STARTTLS certificate comes from."""

    def __init__(self, pf: PostfixInstance, ca: trustme.CA) -> None:
        self.pf = pf
        self.ca = ca

    def trusting_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def _unavailable(reason: str) -> NoReturn:
    message = f"Postfix interop suite not run: {reason}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1 requires it)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def interop() -> Iterator[Interop]:
    try:
        postfix = find_postfix()
    except PostfixUnavailableError as exc:
        _unavailable(str(exc))
    # Not tmp_path_factory: pytest makes its base directory 0700, and virtual(8) delivers
    # as an unprivileged user who must reach the Maildirs.
    root = Path(tempfile.mkdtemp(prefix="mailpolicy-postfix-"))
    ca = trustme.CA()
    tls = root / "tls"
    tls.mkdir(mode=0o700)
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tls / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))
    pf = PostfixInstance(root, postfix, tls_cert=tls / "cert.pem", tls_key=tls / "key.pem")
    try:
        try:
            pf.start()
        except PostfixUnavailableError as exc:
            _unavailable(str(exc))
        yield Interop(pf, ca)
    finally:
        pf.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pf(interop: Interop) -> PostfixInstance:
    return interop.pf


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def sender(
    pf: PostfixInstance,
    clock: FakeClock,
    port: PortName = "plain",
    *,
    security: Literal["none", "starttls"] = "none",
    ssl_context: ssl.SSLContext | None = None,
) -> Sender:
    """A Sender to one of the instance's ports with fake time (no real sleeps) and its
    own relay registry (no budget or circuit shared between tests)."""
    return Sender(
        "127.0.0.1",
        pf.ports[port],
        security=security,
        ssl_context=ssl_context,
        local_hostname="client.example.org",
        relays=RelayRegistry(),
        clock=clock.time,
        monotonic=clock.now,
        sleep=clock.sleep,
    )


# --- messages and what must arrive ---------------------------------------------------

BODY = (
    "Hello from the interop suite.\n"
    ".a line starting with a dot (dot-stuffed on the wire)\n"
    "..two dots\n"
    "Grüße, naïve café: 8-bit UTF-8 in the body\n"
    "trailing spaces stay   \n"
    "\n"
    "From the start of a line (Maildir needs no >From quoting)\n"
)


def make_message(
    to: list[str], *, cc: list[str] | None = None, bcc: list[str] | None = None, subject: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Interop App <{FROM}>"
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if bcc:
        msg["Bcc"] = ", ".join(bcc)
    msg["Subject"] = subject
    msg["Date"] = "Tue, 28 Nov 2023 16:00:00 +0000"
    msg.set_content(BODY, cte="8bit")
    return msg


def expected_bytes(msg: EmailMessage, message_id: str, *, utf8: bool = False) -> bytes:
    """What Postfix stores after its own trace headers: the message as Python writes it,
    Bcc removed, the Message-ID the Sender added on top, LF line endings (Postfix keeps
    mail with LF internally; the CRLF of the wire is gone)."""
    copy_ = copy.deepcopy(msg)
    del copy_["Bcc"]
    text = copy_.as_bytes(policy=SMTP.clone(linesep="\n", utf8=utf8))
    return f"Message-ID: {message_id}\n".encode() + text


#: Headers Postfix prepends: virtual(8) adds Return-Path, X-Original-To and
#: Delivered-To, cleanup Received.
_TRACE = re.compile(
    rb"(?:(?:Return-Path|X-Original-To|Delivered-To|Received):[^\n]*\n(?:[ \t][^\n]*\n)*)+"
)


def assert_intact(stored: bytes, msg: EmailMessage, report: DeliveryReport, **kw: bool) -> None:
    expected = expected_bytes(msg, report.message_id, **kw)
    assert stored.endswith(expected), (stored, expected)
    prefix = stored[: len(stored) - len(expected)]
    assert _TRACE.fullmatch(prefix), prefix  # nothing but Postfix's trace headers added
    assert b"\r" not in stored
    assert not re.search(rb"(?im)^bcc:", stored)
    assert re.search(rb"(?m)^Return-Path: <" + FROM.encode() + rb">$", prefix)
    assert stored.count(b"\nMessage-ID: ") == 1


def one(report: DeliveryReport, recipient: str) -> RecipientOutcome:
    [outcome] = [o for o in report.outcomes if o.recipient == recipient]
    return outcome


def delivered_ok(outcome: RecipientOutcome) -> None:
    assert outcome.state == "delivered", outcome
    assert outcome.code == 250
    assert outcome.status == "2.0.0"
    assert re.fullmatch(r"250 2\.0\.0 Ok: queued as [0-9A-Z]+", outcome.text), outcome.text
    assert outcome.attempts == 1
    assert outcome.action == "deliver"
    assert not outcome.ambiguous
    assert outcome.next_attempt_at is None


def queued_as(outcome: RecipientOutcome) -> str:
    return outcome.text.rsplit(" ", 1)[1]


# --- 1. delivery ---------------------------------------------------------------------


def test_delivered_to_a_virtual_mailbox_intact(pf: PostfixInstance, clock: FakeClock) -> None:
    alice, bob = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    msg = make_message([alice], bcc=[bob], subject="1. delivery")
    with sender(pf, clock) as s:
        report = s.send(msg)

    assert [o.recipient for o in report.outcomes] == [alice, bob]
    for o in report.outcomes:
        delivered_ok(o)
    delivery = pf.wait_delivered(report.message_id)
    assert queued_as(report.outcomes[0]) == delivery.queue_id  # one transaction for both
    assert delivery.statuses(alice) == ["sent"]
    assert delivery.statuses(bob) == ["sent"]
    for user in ("alice", "bob"):
        [stored] = pf.messages_with_id(user, report.message_id)
        assert_intact(stored, msg, report)
        assert f"Delivered-To: {user}@{DOMAIN}\n".encode() in stored
    assert clock.sleeps == []


# --- 2. unknown user (recipient maps) ------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        (f"alice@{DOMAIN}", "alice", f"nobody@{DOMAIN}", "virtual mailbox table"),
        (f"carol@{LOCAL_DOMAIN}", "carol", f"dave@{LOCAL_DOMAIN}", "local recipient table"),
    ],
    ids=["virtual_mailbox_maps", "local_recipient_maps"],
)
def test_unknown_user_bounced_while_the_other_recipient_is_delivered_once(
    pf: PostfixInstance, clock: FakeClock, case: tuple[str, str, str, str]
) -> None:
    known, user, unknown, table = case
    msg = make_message([unknown, known], subject=f"2. unknown user ({table})")
    with sender(pf, clock) as s:
        report = s.send(msg)

    gone, ok = report.outcomes
    assert gone.recipient == unknown
    assert gone.state == "bounced"
    assert gone.reason == "mailbox_unknown"
    assert (gone.code, gone.status) == (550, "5.1.1")
    rejected = f"550 5.1.1 <{unknown}>: Recipient address rejected"
    assert gone.text == f"{rejected}: User unknown in {table}"
    assert gone.action == "suppress"
    assert gone.attempts == 1
    assert gone.next_attempt_at is None
    delivered_ok(ok)

    delivery = pf.wait_delivered(report.message_id)
    assert [r for r, _, _ in delivery.results] == [f"{user}@{DOMAIN}"]
    assert delivery.statuses(f"{user}@{DOMAIN}") == ["sent"]
    [stored] = pf.messages_with_id(user, report.message_id)  # exactly once
    assert_intact(stored, msg, report)
    pf.wait_for_log(rf"reject: RCPT from .*: {re.escape(gone.text)};.* to=<{re.escape(unknown)}>")


# --- 3. relay denied -----------------------------------------------------------------


def test_relay_denied_is_held_and_not_delivered(pf: PostfixInstance, clock: FakeClock) -> None:
    alice, foreign = f"alice@{DOMAIN}", "someone@example.net"
    msg = make_message([foreign, alice], subject="3. relay denied")
    with sender(pf, clock) as s:
        report = s.send(msg)

    held, ok = report.outcomes
    assert held.state == "held"
    assert held.reason == "relay_denied"
    assert (held.code, held.status) == (554, "5.7.1")
    assert held.text == f"554 5.7.1 <{foreign}>: Relay access denied"
    assert held.action == "hold"
    assert held.attempts == 1
    assert held.next_attempt_at == utc(clock.time()) + timedelta(hours=1)  # hold_for
    delivered_ok(ok)

    delivery = pf.wait_delivered(report.message_id)
    assert [r for r, _, _ in delivery.results] == [alice]  # nothing queued for foreign
    assert len(pf.messages_with_id("alice", report.message_id)) == 1
    pf.wait_for_log(rf"reject: RCPT from .*: 554 5\.7\.1 .* to=<{re.escape(foreign)}>")


def test_relay_denied_alone_sends_no_data(pf: PostfixInstance, clock: FakeClock) -> None:
    foreign = "someone@example.net"
    msg = make_message([foreign], subject="3b. relay denied, sole recipient")
    with sender(pf, clock) as s:
        report = s.send(msg)
    [held] = report.outcomes
    assert (held.state, held.reason, held.code) == ("held", "relay_denied", 554)
    pf.wait_for_log(rf"NOQUEUE: reject: RCPT from .*: 554 5\.7\.1 .* to=<{re.escape(foreign)}>")
    assert not pf.logged_message_id(report.message_id)  # DATA never sent


# --- 4. access map 4xx / 5xx ---------------------------------------------------------


def test_access_map_4xx_retried_inline_then_deferred(pf: PostfixInstance, clock: FakeClock) -> None:
    busy = f"busy@{DOMAIN}"
    msg = make_message([busy], subject="4. access map 451")
    start = pf.log_size()
    with sender(pf, clock) as s:
        report = s.send(msg)
        max_attempts = s.policy.inline.max_attempts

    [o] = report.outcomes
    assert max_attempts == 3
    assert o.state == "deferred"
    assert o.attempts == max_attempts
    assert (o.code, o.status) == (451, "4.3.0")
    assert o.text == f"451 4.3.0 <{busy}>: Recipient address rejected: scripted temporary failure"
    assert o.reason == "system_error"
    assert o.action == "retry"
    assert o.next_attempt_at is not None
    assert o.next_attempt_at > utc(clock.time())
    assert len(clock.sleeps) == max_attempts - 1  # inline backoff, on the fake clock
    rejects = pf.wait_for_count(rf"reject: RCPT from .* to=<{re.escape(busy)}>", 3, since=start)
    assert rejects == max_attempts  # Postfix saw exactly three RCPTs for it
    assert not pf.logged_message_id(report.message_id)


def test_access_map_greylisting_text_deferred_without_inline_retry(
    pf: PostfixInstance, clock: FakeClock
) -> None:
    later = f"later@{DOMAIN}"
    msg = make_message([later], subject="4. access map 450 try again later")
    with sender(pf, clock) as s:
        report = s.send(msg)

    [o] = report.outcomes
    assert o.text == f"450 4.7.1 <{later}>: Recipient address rejected: try again later"
    assert (o.state, o.reason, o.code, o.status) == ("deferred", "greylisted", 450, "4.7.1")
    assert o.action == "defer"
    assert o.attempts == 1  # the default policy sends greylisting to the queue at once
    assert o.next_attempt_at is not None
    assert o.next_attempt_at >= utc(clock.time()) + timedelta(minutes=1)  # min_delay
    assert clock.sleeps == []


def test_access_map_5xx_bounced_with_the_map_text(pf: PostfixInstance, clock: FakeClock) -> None:
    blocked, alice = f"blocked@{DOMAIN}", f"alice@{DOMAIN}"
    msg = make_message([blocked], cc=[alice], subject="4. access map 550")
    with sender(pf, clock) as s:
        report = s.send(msg)

    bounced, ok = report.outcomes
    assert bounced.state == "bounced"
    assert (bounced.code, bounced.status) == (550, "5.7.1")
    assert bounced.text == (
        f"550 5.7.1 <{blocked}>: Recipient address rejected: blocked by local policy"
    )
    assert bounced.reason == "policy_blocked"
    assert bounced.action == "bounce"
    assert bounced.attempts == 1
    delivered_ok(ok)
    delivery = pf.wait_delivered(report.message_id)
    assert [r for r, _, _ in delivery.results] == [alice]
    [stored] = pf.messages_with_id("alice", report.message_id)
    assert_intact(stored, msg, report)


def test_sender_access_5xx_bounces_every_recipient(pf: PostfixInstance, clock: FakeClock) -> None:
    spammer, alice = "spammer@blocked.example.com", f"alice@{DOMAIN}"
    msg = make_message([alice], subject="4. sender access 554")
    with sender(pf, clock) as s:
        report = s.send(msg, envelope_from=spammer)

    [o] = report.outcomes
    assert o.text == (
        f"554 5.7.1 <{spammer}>: Sender address rejected: sender blocked by local policy"
    )
    assert (o.state, o.reason, o.code, o.status) == ("bounced", "sender_rejected", 554, "5.7.1")
    assert o.attempts == 1
    assert not pf.logged_message_id(report.message_id)


# --- 5. SMTPUTF8 ---------------------------------------------------------------------

JOERG = f"jörg@{DOMAIN}"


def test_smtputf8_local_part_delivered(pf: PostfixInstance, clock: FakeClock) -> None:
    msg = make_message([JOERG], subject="5. SMTPUTF8 Grüße")
    with sender(pf, clock) as s:
        report = s.send(msg)

    [o] = report.outcomes
    delivered_ok(o)
    delivery = pf.wait_delivered(report.message_id)
    assert delivery.statuses(JOERG) == ["sent"]
    [stored] = pf.messages_with_id("jörg", report.message_id)
    assert f"Delivered-To: {JOERG}\n".encode() in stored  # the UTF-8 envelope, as is
    # Byte for byte what the Sender wrote: the headers as raw UTF-8 (RFC 6532).
    assert_intact(stored, msg, report, utf8=True)


def test_smtputf8_header_address_is_utf8(pf: PostfixInstance, clock: FakeClock) -> None:
    msg = make_message([JOERG], subject="5. SMTPUTF8 header")
    with sender(pf, clock) as s:
        report = s.send(msg)
    pf.wait_delivered(report.message_id)
    [stored] = pf.messages_with_id("jörg", report.message_id)
    assert f"\nTo: {JOERG}\n".encode() in stored
    assert_intact(stored, msg, report, utf8=True)


def _assert_not_sent_for_want_of_smtputf8(
    pf: PostfixInstance, report: DeliveryReport, start: int
) -> None:
    [o] = report.outcomes
    assert o.state == "bounced"
    assert o.reason == "protocol_error"
    assert o.rule == "local.smtputf8-not-offered"
    assert (o.code, o.status) == (None, None)
    assert "does not offer SMTPUTF8" in o.text
    assert o.attempts == 1
    assert o.action == "bounce"
    # Postfix saw a connection without any MAIL command.
    line = pf.wait_for_log(r"disconnect from \S+ (.*)", since=start).group(1)
    assert "mail=" not in line
    assert "rcpt=" not in line
    assert not pf.logged_message_id(report.message_id)


def test_smtputf8_not_offered_fails_locally_on_an_open_connection(
    pf: PostfixInstance, clock: FakeClock
) -> None:
    msg = make_message([JOERG], subject="5. no SMTPUTF8")
    start = pf.log_size()
    with sender(pf, clock, "noutf8") as s:
        s.open()  # connected (EHLO seen) before send(): the sender checks the extension
        report = s.send(msg)
    _assert_not_sent_for_want_of_smtputf8(pf, report, start)


def test_smtputf8_not_offered_fails_locally_on_first_send(
    pf: PostfixInstance, clock: FakeClock
) -> None:
    msg = make_message([JOERG], subject="5. no SMTPUTF8, first send")
    start = pf.log_size()
    with sender(pf, clock, "noutf8") as s:
        report = s.send(msg)
    _assert_not_sent_for_want_of_smtputf8(pf, report, start)


# --- 6. STARTTLS ---------------------------------------------------------------------


def test_starttls_verified_with_the_test_ca(interop: Interop, clock: FakeClock) -> None:
    pf = interop.pf
    alice = f"alice@{DOMAIN}"
    msg = make_message([alice], subject="6. STARTTLS")
    start = pf.log_size()
    with sender(pf, clock, "tls", security="starttls", ssl_context=interop.trusting_context()) as s:
        report = s.send(msg)
        conn = s.connection
        assert conn is not None
        assert isinstance(conn.sock, ssl.SSLSocket)

    [o] = report.outcomes
    delivered_ok(o)
    pf.wait_for_log(r"TLS connection established from \S+: TLSv1\.[23]", since=start)
    delivery = pf.wait_delivered(report.message_id)
    assert delivery.statuses(alice) == ["sent"]
    [stored] = pf.messages_with_id("alice", report.message_id)
    assert_intact(stored, msg, report)
    assert re.search(rb"with ESMTPS id ", stored)  # Received: says it came over TLS


def test_starttls_with_an_untrusted_certificate_is_held(
    pf: PostfixInstance, clock: FakeClock
) -> None:
    alice = f"alice@{DOMAIN}"
    msg = make_message([alice], subject="6. STARTTLS, untrusted")
    start = pf.log_size()
    with sender(pf, clock, "tls", security="starttls") as s:  # the default context
        report = s.send(msg)

    [o] = report.outcomes
    assert o.state == "held"
    assert o.reason == "tls_failed"
    assert o.action == "hold"
    assert o.code is None
    assert "CERTIFICATE_VERIFY_FAILED" in o.text or "certificate verify failed" in o.text
    assert o.attempts == 1
    assert o.next_attempt_at is not None
    pf.wait_for_log(r"disconnect from \S+ ehlo=1 starttls=0/1 commands=1/2", since=start)
    assert "mail=" not in pf.log_since(start)
    assert not pf.logged_message_id(report.message_id)
