"""The Sender end to end against mailpolicy.testing's real SMTP server on loopback.

Each test asserts the outcomes AND what reached the wire: no duplicate delivery to an
accepted recipient, no RCPT for an invalid address, the exact bytes received. Time is a
FakeClock, so inline retries are checked without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import structlog

from mailpolicy._relaystate import RelayRegistry
from mailpolicy._sender import Sender
from mailpolicy.testing import DROP, FakeClock, SMTPTestServer, unused_port

Factory = Callable[..., SMTPTestServer]


def message(*to: str, frm: str = "app@example.com", body: str = "Hello.\n") -> EmailMessage:
    m = EmailMessage()
    m["From"] = frm
    m["To"] = ", ".join(to)
    m["Subject"] = "Test"
    m.set_content(body)
    return m


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sender_for(clock: FakeClock) -> Iterator[Callable[..., Sender]]:
    """Senders bound to a server, a fake clock, deterministic jitter (the full delay) and
    their own relay registry; closed at the end."""
    made: list[Sender] = []
    relays = RelayRegistry()

    def make(server: SMTPTestServer | None = None, **kw: Any) -> Sender:
        kw.setdefault("security", "none")
        host, port = (server.host, server.port) if server else ("127.0.0.1", unused_port())
        s = Sender(
            kw.pop("host", host),
            kw.pop("port", port),
            clock=clock.time,
            monotonic=clock.now,
            sleep=clock.sleep,
            rng=lambda: 1.0,
            relays=kw.pop("relays", relays),
            local_hostname="client.test",
            **kw,
        )
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def states(report: Any) -> dict[str, tuple[str, str]]:
    return {o.recipient: (o.state, o.reason) for o in report.outcomes}


# --- the happy path and what goes on the wire -------------------------------------------


def test_delivers_and_the_bytes_arrive_intact(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    m = message("ann@example.org", body="line one\n.starts with a dot\nlast\n")
    m["Bcc"] = "hidden@example.org"
    report = sender_for(smtp_server).send(m)
    assert states(report) == {
        "ann@example.org": ("delivered", "delivered"),
        "hidden@example.org": ("delivered", "delivered"),
    }
    assert [o.attempts for o in report.outcomes] == [1, 1]
    (received,) = smtp_server.messages
    assert received.mail_from == "app@example.com"
    assert received.rcpt_tos == ("ann@example.org", "hidden@example.org")
    assert b"Bcc" not in received.data
    assert b"hidden@" not in received.data
    assert b"\r\n..starts with a dot\r\n" in received.wire_data
    assert received.parsed()["Message-ID"] == report.message_id
    assert b"\n" not in received.data.replace(b"\r\n", b"")


def test_connection_reused_across_sends_and_opened_lazily(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    with sender_for(smtp_server) as s:
        assert smtp_server.connections == 0  # entering opens nothing
        for i in range(3):
            s.send(message(f"u{i}@example.org"))
    assert smtp_server.connections == 1
    assert len(smtp_server.messages) == 3


def test_all_invalid_means_no_connection(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    report = sender_for(smtp_server).send(message("two@@example.org", "no-at-sign"))
    assert [o.state for o in report.outcomes] == ["invalid", "invalid"]
    assert [o.reason for o in report.outcomes] == ["mailbox_name_invalid"] * 2
    assert smtp_server.connections == 0


def test_invalid_recipient_never_named_in_a_command(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    evil = "a@x.org\r\nRCPT TO:<evil@example.org>"
    report = sender_for(smtp_server).send(
        message("ann@example.org"), recipients=["ann@example.org", evil, "b@@x.org"]
    )
    assert states(report)["ann@example.org"] == ("delivered", "delivered")
    assert states(report)[evil][0] == "invalid"
    assert smtp_server.rcpt_addresses() == ["ann@example.org"]


# --- 421 and drops at every stage: retried inline on a fresh connection --------------------


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "mail", "rcpt", "data"])
@pytest.mark.parametrize("fault", ["421 4.3.2 Service shutting down", DROP])
def test_421_or_drop_before_the_final_dot_is_retried_inline(
    stage: str,
    fault: object,
    smtp_server: SMTPTestServer,
    sender_for: Callable[..., Sender],
    clock: FakeClock,
) -> None:
    """The connection is discarded, a new one opened after the policy's backoff (1 s
    with the default policy), and the message delivered exactly once."""
    smtp_server.script.on(stage, fault)  # type: ignore[arg-type]
    report = sender_for(smtp_server).send(message("ann@example.org"))
    (o,) = report.outcomes
    assert (o.state, o.attempts) == ("delivered", 2)
    assert clock.sleeps == [1.0]
    assert smtp_server.connections == 2
    assert smtp_server.delivered_to("ann@example.org") == 1


def test_421_after_the_final_dot_is_retried(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    """A 421 reply after the dot is an answer: the server did not take the message."""
    smtp_server.script.end_of_data("421 4.3.2 Shutting down")
    report = sender_for(smtp_server).send(message("ann@example.org"))
    assert report.outcomes[0].state == "delivered"
    assert smtp_server.delivered_to("ann@example.org") == 1


def test_drop_after_the_final_dot_is_ambiguous_and_not_retried_inline(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    smtp_server.script.end_of_data(DROP)
    report = sender_for(smtp_server).send(message("ann@example.org", "bob@example.org"))
    for o in report.outcomes:
        assert (o.state, o.ambiguous, o.attempts, o.persisted) == ("deferred", True, 1, False)
        assert o.next_attempt_at is not None
    assert clock.sleeps == []
    assert smtp_server.connections == 1
    (received,) = smtp_server.messages
    assert received.dropped


def test_421_storm_defers_after_the_inline_budget(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    """Three attempts (the default policy's max_attempts), backoff 1 s then 2 s, then
    deferred - never bounced - with a next attempt from the queue schedule."""
    smtp_server.script.greeting(*["421 4.7.0 Too many connections"] * 5)
    report = sender_for(smtp_server).send(message("ann@example.org"))
    (o,) = report.outcomes
    assert (o.state, o.reason, o.attempts, o.code) == ("deferred", "rate_limited", 3, 421)
    assert clock.sleeps == [1.0, 2.0]
    assert o.next_attempt_at is not None
    assert smtp_server.messages == []


# --- per-recipient truth ---------------------------------------------------------------------


def test_partial_acceptance(smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]) -> None:
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 <bob@example.org>: User unknown")
    report = sender_for(smtp_server).send(message("ann@example.org", "bob@example.org"))
    assert states(report) == {
        "ann@example.org": ("delivered", "delivered"),
        "bob@example.org": ("bounced", "mailbox_unknown"),
    }
    bob = report.outcomes[1]
    assert (bob.code, bob.status, bob.action) == (550, "5.1.1", "suppress")
    assert "User unknown" in bob.text
    assert smtp_server.messages[0].rcpt_tos == ("ann@example.org",)


def test_greylisting_defers_past_the_announced_delay(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    smtp_server.script.rcpt("ann@example.org", "450 4.2.0 Greylisted, try again in 300 seconds")
    report = sender_for(smtp_server).send(message("ann@example.org", "bob@example.org"))
    ann = report.outcomes[0]
    assert (ann.state, ann.reason, ann.attempts) == ("deferred", "greylisted", 1)
    assert ann.next_attempt_at is not None
    assert ann.next_attempt_at.timestamp() >= clock.time() + 300
    assert clock.sleeps == []  # greylisting is not retried inline
    assert smtp_server.delivered_to("bob@example.org") == 1


def test_transient_rcpt_failure_retries_only_that_recipient(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    smtp_server.script.rcpt("bob@example.org", "451 4.3.0 Temporary lookup failure", "250 OK")
    report = sender_for(smtp_server).send(message("ann@example.org", "bob@example.org"))
    assert [o.state for o in report.outcomes] == ["delivered", "delivered"]
    assert [o.attempts for o in report.outcomes] == [1, 2]
    assert smtp_server.delivered_to("ann@example.org") == 1
    assert smtp_server.delivered_to("bob@example.org") == 1


def test_too_many_recipients_sends_the_rest_in_new_transactions(
    smtp_server_factory: Factory, sender_for: Callable[..., Sender]
) -> None:
    server = smtp_server_factory(max_recipients=2)
    rcpts = [f"u{i}@example.org" for i in range(5)]
    report = sender_for(server).send(message(*rcpts))
    assert [o.state for o in report.outcomes] == ["delivered"] * 5
    assert [m.rcpt_tos for m in server.messages] == [
        ("u0@example.org", "u1@example.org"),
        ("u2@example.org", "u3@example.org"),
        ("u4@example.org",),
    ]
    assert server.connections == 1


def test_mail_from_refused_names_no_recipient(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    smtp_server.script.mail("553 5.1.8 <app@example.com>: Sender address rejected")
    report = sender_for(smtp_server).send(message("ann@example.org", "bob@example.org"))
    assert [(o.state, o.reason) for o in report.outcomes] == [("bounced", "sender_rejected")] * 2
    assert [o.action for o in report.outcomes] == ["bounce", "bounce"]  # never suppress
    assert smtp_server.rcpt_addresses() == []


@pytest.mark.parametrize(
    ("stage", "reply", "reason"),
    [
        ("data", "554 5.5.1 Error: no valid recipients", "protocol_error"),
        ("end_of_data", "554 5.7.1 Message rejected as spam", "content_rejected"),
        ("end_of_data", "552 5.3.4 Message size exceeds fixed limit", "message_too_large"),
    ],
)
def test_permanent_failure_at_data_bounces_the_message(
    stage: str,
    reply: str,
    reason: str,
    smtp_server: SMTPTestServer,
    sender_for: Callable[..., Sender],
) -> None:
    smtp_server.script.on(stage, reply)  # type: ignore[arg-type]
    report = sender_for(smtp_server).send(message("ann@example.org"))
    (o,) = report.outcomes
    assert (o.state, o.reason, o.action) == ("bounced", reason, "bounce")
    assert smtp_server.delivered_to("ann@example.org") == 0


def test_an_accepted_recipient_is_never_sent_the_message_again(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    """ann is accepted after the dot; bob's RCPT fails transiently; the retry names only
    bob."""
    smtp_server.script.rcpt("bob@example.org", "451 4.3.0 Local error, try later", "250 OK")
    sender_for(smtp_server).send(message("ann@example.org", "bob@example.org"))
    assert [m.rcpt_tos for m in smtp_server.messages] == [
        ("ann@example.org",),
        ("bob@example.org",),
    ]


# --- SMTPUTF8 --------------------------------------------------------------------------------


def test_smtputf8_address_goes_out_when_offered(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    report = sender_for(smtp_server).send(
        message("ann@example.org"), recipients=["用户@example.org"]
    )
    assert report.outcomes[0].state == "delivered"
    (received,) = smtp_server.messages
    assert "SMTPUTF8" in [o.upper() for o in received.mail_options]
    assert received.rcpt_tos == ("用户@example.org",)


def test_smtputf8_address_fails_locally_when_not_offered(
    smtp_server_factory: Factory, sender_for: Callable[..., Sender]
) -> None:
    server = smtp_server_factory(smtputf8=False)
    report = sender_for(server).send(message("ann@example.org"), recipients=["用户@example.org"])
    (o,) = report.outcomes
    assert (o.state, o.reason) == ("bounced", "protocol_error")
    assert "SMTPUTF8" in o.text
    assert not [e for e in server.transcript if e.stage == "mail"]


# --- the relay is down: refused connections, the circuit ---------------------------------


def test_connection_refused_defers_then_opens_the_circuit(
    sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    s = sender_for(None)
    report = s.send(message("ann@example.org"))
    (o,) = report.outcomes
    assert (o.state, o.reason, o.attempts) == ("deferred", "network_error", 3)
    assert clock.sleeps == [1.0, 2.0]
    # Three consecutive connection failures opened the circuit: the next send defers at
    # once, without connecting or sleeping.
    again = s.send(message("bob@example.org")).outcomes[0]
    assert (again.state, again.rule, again.attempts) == ("deferred", "circuit.open", 0)
    assert clock.sleeps == [1.0, 2.0]
    # ... and it stays open for later sends too, until a probe after probe_every (1m).
    third = s.send(message("carl@example.org")).outcomes[0]
    assert (third.rule, third.attempts) == ("circuit.open", 0)
    clock.advance(61)
    probe = s.send(message("dave@example.org")).outcomes[0]
    assert probe.attempts == 1  # one probe (refused: still down), then deferred at once
    assert probe.state == "deferred"


# --- failures of our own configuration are held, never bounced ----------------------------


def test_relay_denied_is_held_with_an_error_event(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    smtp_server.script.rcpt("554 5.7.1 <ann@example.org>: Relay access denied")
    with structlog.testing.capture_logs() as logs:
        report = sender_for(smtp_server).send(message("ann@example.org"))
    (o,) = report.outcomes
    assert (o.state, o.reason, o.action) == ("held", "relay_denied", "hold")
    assert o.next_attempt_at is not None
    (event,) = [e for e in logs if e["event"] == "mail.delivery"]
    assert event["log_level"] == "error"


# --- events ----------------------------------------------------------------------------------


def test_one_delivery_event_per_recipient_masked(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 User unknown")
    with structlog.testing.capture_logs() as logs:
        report = sender_for(smtp_server).send(
            message("ann@example.org", "bob@example.org", "bad@@x")
        )
    events = [e for e in logs if e["event"] == "mail.delivery"]
    assert [e["recipient"] for e in events] == ["a***@example.org", "b***@example.org", "b***@x"]
    assert [e["state"] for e in events] == ["delivered", "bounced", "invalid"]
    for e in events:
        assert e["message_id"] == report.message_id
        assert e["policy"] == "default"
        assert e["server"] == smtp_server.address
        for key in ("domain", "reason", "code", "status", "attempts", "elapsed_ms",
                    "ambiguous", "next_attempt_at"):  # fmt: skip
            assert key in e
    assert "ann@example.org" not in repr(logs)


def test_full_and_hash_recipient_styles(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    with structlog.testing.capture_logs() as logs:
        sender_for(smtp_server, recipient_style="full").send(message("ann@example.org"))
        sender_for(smtp_server, recipient_style="hash").send(message("ann@example.org"))
    full, hashed = [e["recipient"] for e in logs if e["event"] == "mail.delivery"]
    assert full == "ann@example.org"
    assert hashed.startswith("sha256:")
    assert hashed.endswith("@example.org")
    assert "ann" not in hashed


def test_one_attempt_event_per_attempt_at_debug(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    smtp_server.script.greeting("421 4.3.2 busy")
    with structlog.testing.capture_logs() as logs:
        sender_for(smtp_server).send(message("ann@example.org", "bob@example.org"))
    attempts = [e for e in logs if e["event"] == "mail.attempt"]
    assert [(e["attempt"], e["log_level"]) for e in attempts] == [(1, "debug"), (2, "debug")]
    assert attempts[0]["code"] == 421
    assert attempts[0]["stage"] == "greeting"
    assert attempts[0]["actions"] == {"retry": 2}
    assert attempts[1]["actions"] == {"deliver": 2}


def test_a_refusing_greeting_is_the_greeting_stage(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], tmp_path: Any
) -> None:
    """The server answered the connection with 554: that is its greeting, not a failure
    to connect, so a policy rule on stage "greeting" applies (DESIGN.md §2 stages)."""
    from mailpolicy import load_policy

    (tmp_path / "greet.toml").write_text(
        'schema = 1\nname = "greet"\nextends = "default"\n'
        '[[rules]]\nname = "greeting-refusal"\nwhen = { stage = "greeting" }\naction = "hold"\n'
    )
    smtp_server.script.greeting("554 5.7.1 Your IP is not welcome")
    sender = sender_for(smtp_server, policy=load_policy(tmp_path / "greet.toml"))
    (o,) = sender.send(message("ann@example.org")).outcomes
    assert (o.state, o.action, o.code) == ("held", "hold", 554)


def test_wait_after_the_final_dot_is_cut_by_the_in_request_deadline(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], tmp_path: Any
) -> None:
    """DESIGN.md §4: inside send() the end-of-data wait is cut at the deadline, and the
    cut is ambiguous (deferred, not retried inline), not a failure."""
    from mailpolicy import load_policy
    from mailpolicy.testing import Delay

    policy_file = tmp_path / "fast.toml"
    policy_file.write_text(
        'schema = 1\nname = "fast"\nextends = "default"\ndescription = "short deadline"\n'
        '[inline]\ndeadline = "1s"\nattempt_timeout = "500ms"\n'
    )
    smtp_server.script.end_of_data(Delay(5, "250 OK"))
    report = sender_for(smtp_server, policy=load_policy(policy_file)).send(
        message("ann@example.org")
    )
    (o,) = report.outcomes
    assert (o.state, o.ambiguous, o.reason, o.attempts) == ("deferred", True, "timeout", 1)


def test_too_many_recipients_on_the_first_rcpt_is_deferred_not_looped(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    """A 452 4.5.3 to the very first RCPT: the server takes nobody, so a new transaction
    now would fail the same way; deferred on the queue schedule, not due at once."""
    smtp_server.script.rcpt("452 4.5.3 Too many recipients")
    (o,) = sender_for(smtp_server).send(message("ann@example.org")).outcomes
    assert (o.state, o.reason, o.action) == ("deferred", "too_many_recipients", "defer")
    assert o.next_attempt_at is not None
    assert o.next_attempt_at.timestamp() >= clock.time() + 60


def test_only_the_internationalised_recipient_fails_without_smtputf8(
    smtp_server_factory: Factory, sender_for: Callable[..., Sender]
) -> None:
    server = smtp_server_factory(smtputf8=False)
    report = sender_for(server).send(
        message("ann@example.org"), recipients=["ann@example.org", "用户@example.org"]
    )
    assert [(o.state, o.reason) for o in report.outcomes] == [
        ("delivered", "delivered"),
        ("bounced", "protocol_error"),
    ]
    assert server.messages[0].rcpt_tos == ("ann@example.org",)
    assert "SMTPUTF8" not in [o.upper() for o in server.messages[0].mail_options]


def test_421_to_ehlo_keeps_its_reply(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    """A 421 to EHLO is the server's answer (and its announced delay), not a "drop"
    caused by falling back to HELO on a closed connection."""
    smtp_server.script.ehlo(*["421 4.3.2 Service shutting down, try again in 120 seconds"] * 3)
    (o,) = sender_for(smtp_server).send(message("ann@example.org")).outcomes
    assert (o.state, o.code, o.status) == ("deferred", 421, "4.3.2")


def test_throttle_pauses_the_relay(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    """A rate limit (the default policy's throttle, pause 5m): the next sends through
    that relay defer at once, without connecting, until the pause is over."""
    smtp_server.script.rcpt("450 4.2.1 You are sending too quickly, slow down")
    s = sender_for(smtp_server)
    first = s.send(message("ann@example.org")).outcomes[0]
    assert (first.reason, first.action) == ("rate_limited", "throttle")
    connections = smtp_server.connections
    paused = s.send(message("bob@example.org")).outcomes[0]
    assert (paused.state, paused.rule, paused.attempts) == ("deferred", "relay.paused", 0)
    assert paused.reason == "rate_limited"  # not the circuit's network_error: it is closed
    assert "paused" in paused.text
    assert paused.next_attempt_at is not None
    assert paused.next_attempt_at.timestamp() >= clock.time() + 290
    assert smtp_server.connections == connections
    clock.advance(301)
    assert s.send(message("carl@example.org")).outcomes[0].state == "delivered"


def test_a_421_rate_limit_is_retried_inline_then_pauses_the_relay(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    """Any 421 is retried inline (a fresh connection may get through), and a rate limit
    slows the relay: when the inline retries are used up, the default policy pauses it
    for 5 minutes, so the next send waits instead of adding to the load (it connected at
    once before: conformance review)."""
    smtp_server.script.rcpt(*["421 4.7.0 Too many connections from your IP"] * 3)
    s = sender_for(smtp_server)
    first = s.send(message("ann@example.org")).outcomes[0]
    assert (first.state, first.reason, first.attempts) == ("deferred", "rate_limited", 3)
    assert first.next_attempt_at is not None
    assert first.next_attempt_at.timestamp() >= clock.time() + 290
    connections = smtp_server.connections
    paused = s.send(message("bob@example.org")).outcomes[0]
    assert (paused.state, paused.rule, paused.attempts) == ("deferred", "relay.paused", 0)
    assert smtp_server.connections == connections
    clock.advance(301)
    assert s.send(message("carl@example.org")).outcomes[0].state == "delivered"


def test_one_mailboxs_rate_limit_does_not_pause_the_relay(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    """Gmail's "the user you are trying to contact is receiving mail at a rate..." is one
    mailbox's intake: that recipient is deferred for at least the throttle's pause, and
    the next message, to another destination, goes out at once."""
    smtp_server.script.rcpt(
        "ann@gmail.example",
        "450-4.2.1 The user you are trying to contact is receiving mail at a rate that\r\n"
        "450 4.2.1 prevents additional messages from being delivered. Please resend later.",
    )
    s = sender_for(smtp_server)
    first = s.send(message("ann@gmail.example")).outcomes[0]
    assert (first.state, first.reason, first.action) == ("deferred", "rate_limited", "throttle")
    assert first.next_attempt_at is not None
    assert first.next_attempt_at.timestamp() >= clock.time() + 290
    other = s.send(message("bob@other.example")).outcomes[0]
    assert (other.state, other.attempts) == ("delivered", 1)
    assert smtp_server.delivered_to("bob@other.example") == 1


def test_the_deadline_caps_a_whole_send_not_only_each_command(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], tmp_path: Any
) -> None:
    """DESIGN.md §4: [inline] deadline caps a whole send(). A server that answers each
    RCPT just within the per-command timeout cannot stretch the send past it."""
    import time as real_time

    from mailpolicy import load_policy
    from mailpolicy.testing import Delay

    policy_file = tmp_path / "short.toml"
    policy_file.write_text(
        'schema = 1\nname = "short"\nextends = "default"\ndescription = "a 1 s deadline"\n'
        '[inline]\ndeadline = "1s"\nattempt_timeout = "800ms"\nmax_attempts = 1\n'
    )
    smtp_server.script.rcpt(*[Delay(0.3, "250 OK")] * 10)
    started = real_time.monotonic()
    report = sender_for(smtp_server, policy=load_policy(policy_file)).send(
        message(*[f"u{i}@example.org" for i in range(8)])
    )
    assert real_time.monotonic() - started < 2.0  # 8 x 0.3 s would be 2.4 s
    states = [o.state for o in report.outcomes]
    assert "deferred" in states
    assert smtp_server.messages == []  # cut before the final dot: nothing delivered
    assert {o.reason for o in report.outcomes if o.state == "deferred"} == {"timeout"}


_ONE_SECOND = (
    'schema = 1\nname = "short"\nextends = "default"\ndescription = "a 1 s deadline"\n'
    '[inline]\ndeadline = "1s"\nattempt_timeout = "800ms"\nmax_attempts = 1\n'
)


@pytest.mark.parametrize(
    ("stage", "ambiguous"), [("greeting+ehlo", False), ("rcpt+end_of_data", True)]
)
def test_the_deadline_also_cuts_connecting_and_the_wait_after_the_dot(
    smtp_server: SMTPTestServer,
    sender_for: Callable[..., Sender],
    tmp_path: Any,
    stage: str,
    ambiguous: bool,
) -> None:
    """Found in review: connecting, the greeting, EHLO, STARTTLS and AUTH each got the
    full per-command timeout, and the wait after the final dot was worked out when the
    attempt started, so two replies each within the per-command timeout stretched a send
    past its deadline (18 s and 23 s against 15 s with the default policy). Each wait is
    now cut to what is left of the deadline when it starts; a cut after the dot is
    ambiguous (DESIGN.md §4)."""
    import time as real_time

    from mailpolicy import load_policy
    from mailpolicy.testing import Delay

    policy_file = tmp_path / "short.toml"
    policy_file.write_text(_ONE_SECOND)
    first, second = stage.split("+")
    smtp_server.script.on(first, Delay(0.7))  # type: ignore[arg-type]
    smtp_server.script.on(second, Delay(0.7))  # type: ignore[arg-type]
    started = real_time.monotonic()
    report = sender_for(smtp_server, policy=load_policy(policy_file)).send(
        message("ann@example.org")
    )
    elapsed = real_time.monotonic() - started
    (o,) = report.outcomes
    assert (o.state, o.reason, o.ambiguous) == ("deferred", "timeout", ambiguous)
    assert elapsed < 1.3, elapsed  # both replies in full would take 1.4 s


def test_eight_bit_data_is_re_encoded_for_a_server_without_8bitmime(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    """RFC 6152 §3: 8-bit data only to a server that offers 8BITMIME. Found in review:
    the body went out as raw 8-bit; now its part is re-encoded (the email package's
    7-bit generator) and reads back the same."""
    import email
    import email.policy

    smtp_server.script.ehlo("250-mx.test\n250 SIZE 100000")  # neither 8BITMIME nor SMTPUTF8
    m = message("ann@example.org")
    m.set_content("Grüße aus Köln\n")
    (o,) = sender_for(smtp_server).send(m).outcomes
    assert o.state == "delivered", o
    (received,) = smtp_server.messages
    assert received.data.isascii()
    assert not any("8BITMIME" in opt.upper() for opt in received.mail_options)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed.get_content().replace("\r\n", "\n") == "Grüße aus Köln\n"


def test_eight_bit_data_goes_as_is_with_8bitmime(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    m = message("ann@example.org")
    m.set_content("Grüße aus Köln\n")
    assert sender_for(smtp_server).send(m).outcomes[0].state == "delivered"
    (received,) = smtp_server.messages
    assert "Grüße".encode() in received.data
    assert "BODY=8BITMIME" in [opt.upper() for opt in received.mail_options]


def test_eight_bit_data_without_a_charset_is_not_sent_to_a_server_without_8bitmime(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    """A part with 8-bit bytes and no charset cannot be re-encoded faithfully: bounced
    before MAIL, with the reason, and nothing sent."""
    import email
    import email.policy

    smtp_server.script.ehlo("250-mx.test\n250 SIZE 100000")
    raw = (
        b"From: app@example.com\r\nTo: ann@example.org\r\nSubject: x\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    )
    m = email.message_from_bytes(raw, policy=email.policy.default)
    (o,) = sender_for(smtp_server).send(m).outcomes
    assert (o.state, o.reason, o.rule) == (
        "bounced",
        "protocol_error",
        "local.8bitmime-not-offered",
    )
    assert "does not offer 8BITMIME" in o.text
    assert smtp_server.messages == []
    assert all(not e.command.upper().startswith("MAIL") for e in smtp_server.transcript)


def test_re_encoding_ignores_the_process_wide_charset_registry(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], monkeypatch: Any
) -> None:
    """Flask-Mail registers UTF-8 without a body encoding for the whole process
    (``charset.add_charset("utf-8", SHORTEST, None, "utf-8")``); the email package's own
    7-bit generator then writes 8-bit again. The re-encoding does not depend on it."""
    import email.charset

    monkeypatch.setitem(email.charset.CHARSETS, "utf-8", (email.charset.SHORTEST, None, "utf-8"))
    smtp_server.script.ehlo("250-mx.test\n250 SIZE 100000")
    m = message("ann@example.org")
    m.set_content("Grüße aus Köln\n")
    assert sender_for(smtp_server).send(m).outcomes[0].state == "delivered"
    assert smtp_server.messages[0].data.isascii()


def test_open_after_a_send_is_not_cut_by_that_sends_deadline(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], tmp_path: Any
) -> None:
    """Found in review: the deadline of a send() stayed on the connection settings, so
    an explicit open() after it had passed timed out at once (about 1 ms)."""
    import time as real_time

    from mailpolicy import load_policy
    from mailpolicy.testing import Delay

    policy_file = tmp_path / "short.toml"
    policy_file.write_text(_ONE_SECOND)
    s = sender_for(smtp_server, policy=load_policy(policy_file))
    assert s.send(message("ann@example.org")).outcomes[0].state == "delivered"
    # nor does the open connection bound its replies (a later QUIT) by that deadline
    assert getattr(s.connection, "reply_deadline", "missing") is None
    s.close()
    real_time.sleep(1.1)  # past that send's deadline (real time: socket timeouts are)
    smtp_server.script.greeting(Delay(0.1))
    s.open()  # raised StageError (connect: timeout)
    assert s.connection is not None


def test_smtputf8_implies_8bitmime(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    """RFC 6531 §3.1: a server offering SMTPUTF8 takes 8-bit data even if it does not
    list 8BITMIME (found in review: such a message was bounced locally)."""
    smtp_server.script.ehlo("250-mx.test\n250 SMTPUTF8")
    (o,) = sender_for(smtp_server).send(message("josé@example.org")).outcomes
    assert o.state == "delivered", o
    assert len(smtp_server.messages) == 1


def test_a_reply_fed_one_line_at_a_time_cannot_outlast_the_deadline(tmp_path: Any) -> None:
    """Research T-18 (found in review): smtplib restarts the socket timeout on every line
    of a reply, so a server answering RCPT with "250-" lines 0.3 s apart held a 1 s
    send() for as long as it liked. The whole reply is now bounded by the deadline. (A
    raw socket server: the test server writes a reply at once.)"""
    import socket
    import threading
    import time as real_time

    from mailpolicy import load_policy

    policy_file = tmp_path / "short.toml"
    policy_file.write_text(_ONE_SECOND)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as commands:
            conn.sendall(b"220 drip ESMTP\r\n")
            while line := commands.readline():
                verb = line[:4].upper()
                if verb == b"RCPT":
                    for _ in range(10):  # 3 s in all, unless the client gives up
                        if stop.is_set():
                            return
                        conn.sendall(b"250-still thinking\r\n")
                        real_time.sleep(0.3)
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        sender = Sender(
            "127.0.0.1", listener.getsockname()[1], security="none",
            policy=load_policy(policy_file), relays=RelayRegistry(), local_hostname="c.test",
        )  # fmt: skip
        started = real_time.monotonic()
        (o,) = sender.send(message("ann@example.org")).outcomes
        elapsed = real_time.monotonic() - started
        sender.close()
    finally:
        stop.set()
        listener.close()
        server.join(timeout=5)
    assert (o.state, o.reason) == ("deferred", "timeout"), o
    assert elapsed < 1.5, elapsed


# --- retry engine details (found in a review of the retry semantics) ---------------------

_SLOW_DESTINATION = (
    'schema = 1\nname = "dest"\nextends = "default"\n[[destinations]]\nname = "slowpoke"\n'
    'domains = ["slow.example"]\n[destinations.queue]\nschedule = "slow"\n'
)


def test_a_destinations_queue_schedules_circuit_open_and_rebatch_deferrals(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], clock: FakeClock,
    tmp_path: Any,
) -> None:  # fmt: skip
    """Those deferrals used the policy's [queue] (10 minutes), not the recipient's
    destination's ("slow": 3 hours, x1.2 with the fixed jitter)."""
    from mailpolicy import load_policy

    policy_file = tmp_path / "dest.toml"
    policy_file.write_text(_SLOW_DESTINATION)
    policy = load_policy(policy_file)
    down = sender_for(None, policy=policy)
    for _ in range(2):  # the first opens the circuit, the second finds it open
        (o,) = down.send(message("a@slow.example")).outcomes
        assert o.next_attempt_at is not None
        assert o.next_attempt_at.timestamp() - clock.time() > 3 * 3600
    assert o.rule == "circuit.open"
    smtp_server.script.rcpt("a@slow.example", "452 4.5.3 Too many recipients")
    (o,) = sender_for(smtp_server, policy=policy).send(message("a@slow.example")).outcomes
    assert o.reason == "too_many_recipients"
    assert o.next_attempt_at is not None
    assert o.next_attempt_at.timestamp() - clock.time() > 3 * 3600


def test_a_retry_is_refunded_only_when_it_led_to_a_delivery(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender]
) -> None:
    """ann was delivered at once; bob's inline retry failed (550 after 451). The retry's
    tokens were refunded because ann's delivery made the send a "success"."""
    smtp_server.script.rcpt("bob@example.org", "451 4.3.0 try later", "550 5.1.1 user unknown")
    relays = RelayRegistry()
    s = sender_for(smtp_server, relays=relays)
    ann, bob = s.send(message("ann@example.org", "bob@example.org")).outcomes
    assert (ann.state, bob.state, bob.attempts) == ("delivered", "bounced", 2)
    budget = s.policy.budget
    state = relays.get(s.settings.host, s.settings.port).snapshot()
    assert state.tokens == budget.capacity - budget.retry_cost


def test_a_retry_the_open_circuit_cancels_costs_nothing_and_keeps_the_real_failure(
    sender_for: Callable[..., Sender], clock: FakeClock
) -> None:
    """Three refused sends open the circuit; after the probe interval the probe is
    refused again and its inline retry finds the circuit open. That retry's tokens were
    spent though it never connected, and the outcome said "circuit open" instead of
    the probe's own refusal."""
    relays = RelayRegistry()
    s = sender_for(None, relays=relays)
    for _ in range(3):
        s.send(message("ann@example.org"))
    tokens = relays.get(s.settings.host, s.settings.port).snapshot().tokens
    clock.advance(s.policy.circuit.probe_every + 1)
    (o,) = s.send(message("ann@example.org")).outcomes
    assert (o.state, o.attempts, o.rule) == ("deferred", 1, "error.refused")
    assert relays.get(s.settings.host, s.settings.port).snapshot().tokens == tokens


def test_an_idn_recipient_reaches_a_server_without_smtputf8(
    smtp_server_factory: Factory, sender_for: Callable[..., Sender]
) -> None:
    """RFC 5890: an IDN domain goes on the wire as its A-label, in RCPT TO and in the To
    header alike; only a non-ASCII local part needs SMTPUTF8 (found in review: the whole
    message was bounced locally)."""
    server = smtp_server_factory(smtputf8=False)
    (o,) = sender_for(server).send(message("user@bücher.de")).outcomes
    assert o.state == "delivered", o
    (received,) = server.messages
    assert received.rcpt_tos == ("user@xn--bcher-kva.de",)
    assert received.data.isascii()
    assert b"To: user@xn--bcher-kva.de\r\n" in received.data


def test_one_sender_shared_by_threads_sends_each_message_to_its_own_recipient(
    smtp_server: SMTPTestServer,
) -> None:
    """A module-level Sender in a threaded web app: concurrent send() calls interleaved
    MAIL/RCPT/DATA on the one connection and delivered one thread's message to another's
    recipients (concurrency review). Sends now take turns."""
    import threading

    sender = Sender(
        smtp_server.host, smtp_server.port, security="none", relays=RelayRegistry(),
        local_hostname="client.test",
    )  # fmt: skip
    errors: list[BaseException] = []
    states: list[str] = []

    def run(i: int) -> None:
        for j in range(15):
            m = message(f"user{i}@example.org")
            m.replace_header("Subject", f"thread {i} message {j}")
            try:
                states.extend(o.state for o in sender.send(m).outcomes)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sender.close()
    assert errors == []
    assert states == ["delivered"] * 60
    assert len(smtp_server.messages) == 60
    for m in smtp_server.messages:
        assert list(m.rcpt_tos) == [str(m.parsed()["To"])]


def test_a_policys_own_classification_rule_decides_a_live_reply(
    smtp_server: SMTPTestServer, sender_for: Callable[..., Sender], tmp_path: Any
) -> None:
    """A provider quirk of one's own, in the policy: the reply the server sends is judged
    by it (not only by classify() in a test), and the policy's action follows."""
    from mailpolicy import load_policy

    (tmp_path / "acme.toml").write_text(
        'schema = 1\nname = "acme"\nextends = "default"\n\n[[classification]]\n'
        'id = "acme.quota"\nreason = "rate_limited"\ntext = ["acme quota exceeded"]\n'
    )
    smtp_server.script.rcpt("ann@example.org", "550 5.7.1 ACME quota exceeded, try tomorrow")
    sender = sender_for(smtp_server, policy=load_policy(tmp_path / "acme.toml"))
    (o,) = sender.send(message("ann@example.org")).outcomes
    assert (o.state, o.reason, o.rule, o.action) == (
        "deferred", "rate_limited", "acme.quota", "throttle"
    )  # fmt: skip
