"""Security by default (research/validation-security.md part B): verified TLS, no
silent plaintext fallback, no AUTH over plaintext, no secrets anywhere, no injection."""

from __future__ import annotations

import base64
import ssl
import traceback
from collections.abc import Callable, Iterator
from email.message import EmailMessage, Message
from typing import Any

import pytest
import structlog

from mailpolicy import ConfigurationError, MailPolicyError, MessageError, StageError
from mailpolicy._relaystate import RelayRegistry
from mailpolicy._sender import Sender
from mailpolicy.testing import DROP, FakeClock, SMTPTestServer, TLSFiles

Factory = Callable[..., SMTPTestServer]
PASSWORD = "s3cr3t-Pa55"  # noqa: S105 - a test credential


def message(to: str = "ann@example.org") -> EmailMessage:
    m = EmailMessage()
    m["From"] = "app@example.com"
    m["To"] = to
    m["Subject"] = "Test"
    m.set_content("Hello.\n")
    return m


_OPEN: list[Sender] = []


@pytest.fixture(autouse=True)
def _close_senders() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def sender(server: SMTPTestServer, **kw: object) -> Sender:
    clock = FakeClock()
    s = Sender(
        "localhost",
        server.port,
        clock=clock.time,
        monotonic=clock.now,
        sleep=clock.sleep,
        relays=RelayRegistry(),
        local_hostname="client.test",
        **kw,  # type: ignore[arg-type]
    )
    _OPEN.append(s)
    return s


def mail_commands(server: SMTPTestServer) -> list[str]:
    return [e.command for e in server.transcript if e.stage in {"mail", "rcpt", "data"}]


def test_starttls_with_a_verified_certificate(smtp_server_factory: Factory) -> None:
    server = smtp_server_factory(starttls=True)
    report = sender(server, ssl_context=server.client_ssl_context()).send(message())
    assert report.outcomes[0].state == "delivered"
    assert server.messages[0].tls


@pytest.mark.parametrize(
    "certificate",
    [TLSFiles.self_signed, lambda: TLSFiles.wrong_host("wrong.example")],
    ids=["self-signed", "wrong-host"],
)
def test_untrusted_certificate_is_refused_before_mail(
    smtp_server_factory: Factory, certificate: Callable[[], TLSFiles]
) -> None:
    """Verified by default: the system trust store (which does not know the test CA) or
    the test CA for the wrong host name. Held (our configuration), nothing sent."""
    server = smtp_server_factory(tls=certificate(), starttls=True)
    context = None if certificate is TLSFiles.self_signed else server.client_ssl_context()
    report = sender(server, ssl_context=context).send(message())
    o = report.outcomes[0]
    assert (o.state, o.reason, o.action) == ("held", "tls_failed", "hold")
    assert mail_commands(server) == []
    assert server.messages == []


def test_default_context_does_not_trust_an_unknown_ca(smtp_server_factory: Factory) -> None:
    server = smtp_server_factory(starttls=True)
    report = sender(server).send(message())  # ssl.create_default_context(): system roots
    assert report.outcomes[0].reason == "tls_failed"
    assert mail_commands(server) == []


def test_no_silent_plaintext_fallback(smtp_server: SMTPTestServer) -> None:
    """security="starttls" (the default) and a server without STARTTLS: held."""
    report = sender(smtp_server).send(message())
    o = report.outcomes[0]
    assert (o.state, o.reason) == ("held", "tls_failed")
    assert "STARTTLS" in o.text
    assert mail_commands(smtp_server) == []


def test_implicit_tls_verified(smtp_server_factory: Factory) -> None:
    server = smtp_server_factory(implicit_tls=True)
    ok = sender(server, security="ssl", ssl_context=server.client_ssl_context()).send(message())
    assert ok.outcomes[0].state == "delivered"
    refused = sender(server, security="ssl").send(message())
    assert refused.outcomes[0].reason == "tls_failed"
    assert len(server.messages) == 1


def test_plaintext_auth_refused_when_the_sender_is_built() -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
        Sender("localhost", 25, security="none", username="u", password=PASSWORD)


def test_auth_over_tls_and_no_secret_anywhere(smtp_server_factory: Factory) -> None:
    server = smtp_server_factory(starttls=True, auth={"app": PASSWORD}, auth_required=True)
    s = sender(server, ssl_context=server.client_ssl_context(), username="app", password=PASSWORD)
    with structlog.testing.capture_logs() as logs:
        report = s.send(message())
    assert report.outcomes[0].state == "delivered"
    assert server.messages[0].auth_login == "app"
    assert PASSWORD not in repr(s)
    assert PASSWORD not in repr(s.settings)
    assert PASSWORD not in repr(logs)
    assert PASSWORD not in repr(report)
    assert PASSWORD not in "".join(e.command for e in server.transcript)


@pytest.mark.parametrize("auth_reply", [DROP, "535 5.7.8 Authentication credentials invalid"])
def test_an_auth_failure_traceback_holds_no_password(
    smtp_server_factory: Factory, auth_reply: object
) -> None:
    """Error trackers record the local variables of every frame of a traceback (Sentry
    does by default, and scrubs ``password`` but not smtplib's ``initial_response`` or
    ``args``). A failure at AUTH must reach the caller without smtplib's login frames;
    and the connection kept open after a login must not keep the credentials."""
    server = smtp_server_factory(starttls=True, auth={"app": PASSWORD})
    s = sender(server, ssl_context=server.client_ssl_context(), username="app", password=PASSWORD)
    assert s.send(message()).outcomes[0].state == "delivered"
    connection: Any = s.connection
    assert (connection.user, connection.password) == (None, None)
    s.close()
    server.script.auth(*[auth_reply] * 3)  # type: ignore[arg-type]  # smtplib tries each mechanism
    with pytest.raises(StageError) as info:
        s.open()
    assert isinstance(info.value, MailPolicyError)
    assert info.value.verdict.stage == "auth"
    rendered = "".join(
        traceback.TracebackException.from_exception(info.value, capture_locals=True).format()
    )
    secret_forms = [PASSWORD, base64.b64encode(f"\0app\0{PASSWORD}".encode()).decode()]
    assert not [form for form in secret_forms if form in rendered], rendered


def test_wrong_password_is_held_and_not_leaked(smtp_server_factory: Factory) -> None:
    server = smtp_server_factory(starttls=True, auth={"app": "right-one"})
    s = sender(server, ssl_context=server.client_ssl_context(), username="app", password=PASSWORD)
    with structlog.testing.capture_logs() as logs:
        report = s.send(message())
    o = report.outcomes[0]
    assert (o.state, o.reason) == ("held", "auth_failed")
    assert PASSWORD not in repr(logs) + repr(report) + o.text
    assert mail_commands(server) == []
    # One AUTH per connection: smtplib's login() tried LOGIN after PLAIN was refused, so
    # a wrong password counted double against account-lockout limits.
    assert [(a.mechanism, a.success) for a in server.auth_attempts] == [("PLAIN", False)]


def test_insecure_auth_only_when_explicitly_allowed(smtp_server_factory: Factory) -> None:
    server = smtp_server_factory(auth={"app": PASSWORD}, auth_require_tls=False)
    s = sender(server, security="none", username="app", password=PASSWORD, allow_insecure_auth=True)
    assert s.send(message()).outcomes[0].state == "delivered"


def test_header_injection_is_a_programming_error(smtp_server: SMTPTestServer) -> None:
    m = Message()
    m["From"] = "app@example.com"
    m["To"] = "ann@example.org"
    m["Subject"] = "hi\r\nBcc: everyone@example.org"
    m.set_payload("x")
    with pytest.raises(MessageError):
        sender(smtp_server, security="none").send(m)
    assert smtp_server.connections == 0


def test_smuggling_sequences_are_normalised(smtp_server: SMTPTestServer) -> None:
    """A body carrying "\\n.\\r\\n" + a second SMTP transaction stays one message."""
    m = Message()
    m["From"] = "app@example.com"
    m["To"] = "ann@example.org"
    m.set_payload(
        "hi\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.org>\r\n"
        "DATA\r\nx\r\n.\r\n"
    )
    report = sender(smtp_server, security="none").send(m)
    assert report.outcomes[0].state == "delivered"
    assert len(smtp_server.messages) == 1
    assert smtp_server.rcpt_addresses() == ["ann@example.org"]
    assert b"\r\n..\r\n" in smtp_server.messages[0].wire_data


def test_errors_and_tracebacks_carry_no_password(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(ConfigurationError) as info:
        Sender("localhost", 25, security="none", username="u", password=PASSWORD)
    assert PASSWORD not in "".join(traceback.format_exception(info.value))


def test_timeouts_are_finite() -> None:
    s = Sender("localhost", 25, security="none")
    assert 0 < s.settings.timeout < 60
    assert 0 < s.settings.end_of_data_timeout <= 600
    assert isinstance(ssl.create_default_context(), ssl.SSLContext)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"timeout": float("inf")}, "timeout must be a finite number of seconds above 0"),
        ({"timeout": 0}, "timeout must be a finite number"),
        ({"timeout": True}, "timeout must be a finite number"),
        ({"end_of_data_timeout": -1}, "end_of_data_timeout must be a finite number"),
        ({"end_of_data_timeout": "600"}, "end_of_data_timeout must be a finite number"),
        ({"end_of_data_timeout": float("nan")}, "end_of_data_timeout must be a finite number"),
        ({"port": 0}, "port must be an int from 1 to 65535"),
        ({"port": "25"}, "port must be an int from 1 to 65535"),
        (
            {"username": "app", "password": 12345, "allow_insecure_auth": True},
            "password must be a str",
        ),
        ({"ssl_context": "verify"}, "ssl_context must be an ssl.SSLContext"),
        ({"allow_insecure_auth": "false"}, "allow_insecure_auth must be True or False"),
        ({"local_hostname": "a\r\nRSET"}, "local_hostname must be one host name"),
        ({"local_hostname": ""}, "local_hostname must be one host name"),
    ],
)
def test_bad_options_fail_when_the_sender_is_built(options: dict[str, Any], expected: str) -> None:
    """A bad timeout used to surface after the final dot (the message already accepted),
    a non-str password or context as an AttributeError mid-send, and the string "false"
    for allow_insecure_auth sent the password in the clear."""
    with pytest.raises(ConfigurationError) as info:
        Sender("localhost", **{"security": "none", **options})
    assert expected in str(info.value)
    assert "12345" not in str(info.value)


def test_non_ascii_password_is_held_without_leaking_a_character(
    smtp_server_factory: Factory,
) -> None:
    """smtplib cannot send a non-ASCII password; its own error would quote a character
    of it and its position. Held (our configuration), with a fixed text."""
    server = smtp_server_factory(starttls=True, auth={"app": "pässwort"})
    secret = "pässwort"  # noqa: S105 - a test credential
    s = sender(server, ssl_context=server.client_ssl_context(), username="app", password=secret)
    o = s.send(message()).outcomes[0]
    assert (o.state, o.reason) == ("held", "auth_failed")
    assert "ä" not in o.text
    assert "\\xe4" not in o.text
    assert "position" not in o.text


# --- replies bounded in size and time ------------------------------------------------------


@pytest.mark.parametrize(
    "ehlo",
    [
        "250-mx\n" + "250-X-PADDING\n" * 300 + "250 SIZE 1000",  # more than 200 lines
        "250-mx\n" + ("250-" + "P" * 1000 + "\n") * 70 + "250 SIZE 1000",  # more than 64 KiB
    ],
)
def test_an_endless_reply_ends_the_connection(smtp_server: SMTPTestServer, ehlo: str) -> None:
    """smtplib keeps every line of a multi-line reply: a server (or, before STARTTLS,
    anyone on the path) sending "250-" lines forever made the process grow until it was
    killed (security review: 3.8 GB in 15 s). A reply past 200 lines or 64 KiB ends the
    connection as a network error; the next connection is a fresh start."""
    smtp_server.script.ehlo(ehlo)
    s = sender(smtp_server, security="none")
    with pytest.raises(StageError) as info:
        s.open()
    assert info.value.verdict.reason == "network_error"
    assert "reply too long" in str(info.value)
    assert not smtp_server.messages  # nothing was sent on it
    assert s.send(message()).outcomes[0].state == "delivered"  # a new connection works


def test_a_reply_fed_line_by_line_is_bounded_by_the_command_timeout() -> None:
    """Every line restarts the socket timeout: a server sending one "250-" line every
    0.2 s held open() for as long as it liked (25 s with timeout=3: security review).
    Without a send() deadline, the whole reply must come within the command's timeout.
    A real server on loopback, raw: the scripted test server answers at once."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 drip.test ESMTP\r\n")
            conn.recv(1024)  # EHLO
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"250-still here\r\n")
                except OSError:
                    return

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    s = Sender("127.0.0.1", port, security="none", timeout=1.0, relays=RelayRegistry(),
               local_hostname="client.test")  # fmt: skip
    _OPEN.append(s)
    started = time.monotonic()
    try:
        with pytest.raises(StageError) as info:
            s.open()
    finally:
        stop.set()
        listener.close()
        serving.join(timeout=5)
    assert time.monotonic() - started < 5  # 1 s and the line in flight, not unbounded
    assert info.value.verdict.reason in ("timeout", "network_error")


@pytest.mark.parametrize("stage", ["rcpt", "end_of_data"])
def test_a_reply_line_past_smtplibs_limit_is_unreadable_not_a_made_up_500(
    smtp_server: SMTPTestServer, stage: str
) -> None:
    """smtplib turns a reply line over 8,192 bytes into SMTPResponseException(500, "Line
    too long."): a permanent refusal the server never sent. After the final dot, that
    bounced a message the server had accepted with a long "250" (fuzz review). It is an
    unreadable reply: deferred, and ambiguous after the dot (never retried inline)."""
    long_reply = ("550 5.1.1 " if stage == "rcpt" else "250 2.0.0 Ok ") + "x" * 9000
    smtp_server.script.on(stage, long_reply)  # type: ignore[arg-type]
    (o,) = sender(smtp_server, security="none").send(message()).outcomes
    if stage == "rcpt":  # transient: retried inline on a new connection, which works
        assert (o.state, o.attempts) == ("delivered", 2)
    else:
        assert (o.state, o.reason, o.ambiguous) == ("deferred", "network_error", True)


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("mail", "250-ok\n" + "250-X-PADDING\n" * 300 + "250 ok"),
        ("end_of_data", "250 2.0.0 Ok " + "x" * 9000),
    ],
)
def test_a_connection_handed_over_is_bounded_too(
    smtp_server: SMTPTestServer, stage: str, reply: str
) -> None:
    """The caps and the long-line rule held only for connections the Sender opened; the
    Django backend hands over its own smtplib.SMTP, so a flood grew it by gigabytes and
    a long "250" after the final dot was a permanent 500 bounce (tenth review)."""
    import smtplib

    smtp_server.script.on(stage, reply)  # type: ignore[arg-type]
    conn = smtplib.SMTP(smtp_server.host, smtp_server.port, local_hostname="client.test")
    conn.ehlo()
    s = sender(smtp_server, security="none", connection=conn)
    (o,) = s.send(message()).outcomes
    if stage == "end_of_data":  # after the dot: ambiguous, never retried inline
        assert (o.state, o.reason, o.ambiguous) == ("deferred", "network_error", True)
    else:  # the flood abandoned; a reused connection's loss is retried on a new one
        assert o.state == "delivered"
        assert smtp_server.connections == 2


def _one_session_server(
    *replies: bytes, after_dot: bytes | None = None, greeting: bytes = b"220 raw.test ESMTP\r\n"
) -> Any:
    """A raw SMTP server on loopback for one connection (a second one is refused): the
    greeting, then ``replies`` to the commands in order, then (with ``after_dot``) the
    message and that reply."""
    import contextlib
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        listener.close()
        with contextlib.suppress(OSError), conn, conn.makefile("rb") as lines:
            conn.sendall(greeting)
            for reply in replies:
                lines.readline()
                conn.sendall(reply)
            if after_dot is not None:
                while lines.readline() not in (b".\r\n", b""):
                    pass
                conn.sendall(after_dot)
            lines.readline()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _sent_through(server: Any) -> list[Any]:
    """The outcomes of one message to ann@example.org through a raw server."""
    s = Sender("127.0.0.1", server.getsockname()[1], security="none",
               relays=RelayRegistry(), local_hostname="client.test")  # fmt: skip
    _OPEN.append(s)
    return list(s.send(message()).outcomes)


def test_a_positive_reply_to_data_other_than_354_is_no_delivery() -> None:
    """A "250" to DATA (a stale reply, a broken server) was taken for success: the
    message reported delivered, its body never sent (eleventh review)."""
    server = _one_session_server(b"250 raw.test\r\n", b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n")
    (o,) = _sent_through(server)
    assert o.state == "deferred"
    assert o.reason == "network_error"


def test_a_reply_line_without_a_code_is_unreadable_not_a_desync() -> None:
    """smtplib stops at a line without a code and leaves the rest in its buffer: every
    later command read the reply before its own (eleventh review). After the final dot
    such a reply is unreadable: deferred, ambiguous, never retried inline. A raw server:
    the scripted one frames every line with its code."""
    server = _one_session_server(
        b"250 raw.test\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
        after_dot=b"250-2.0.0 Ok: queued as\r\n    4AB12CD\r\n250 2.0.0 Ok\r\n",
    )  # fmt: skip
    (o,) = _sent_through(server)
    assert (o.state, o.reason, o.ambiguous) == ("deferred", "network_error", True)


@pytest.mark.parametrize(
    ("replies", "after_dot", "ambiguous"),
    [
        ((b"250 raw.test\r\n", b"334 eA==\r\n"), None, False),  # to MAIL
        ((b"250 raw.test\r\n", b"250 ok\r\n", b"354 ok\r\n"), None, False),  # to RCPT
        (
            (b"250 raw.test\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"),
            b"354 go on\r\n",
            True,
        ),
    ],
)
def test_a_3xx_reply_to_mail_rcpt_or_the_dot_is_no_delivery(
    replies: tuple[bytes, ...], after_dot: bytes | None, ambiguous: bool
) -> None:
    """Class 3 was read as success: "354" to RCPT reported delivered a message never
    sent (twelfth review). An answer of the wrong class is an unreadable reply."""
    server = _one_session_server(*replies, after_dot=after_dot)
    (o,) = _sent_through(server)
    assert (o.state, o.reason, o.ambiguous) == ("deferred", "network_error", ambiguous)


@pytest.mark.parametrize(
    ("greeting_extra", "replies", "after_dot"),
    [
        # a second greeting: every later command read the reply before its own, and
        # ann's 550 bounced (and suppressed) bob (thirteenth review)
        (b"220 second\r\n", (b"250 raw.test\r\n", b"250 ok\r\n", b"550 5.1.1 no\r\n"), None),
        # a stray reply after 354: the dot's 554 was never read, "delivered"
        (b"", (b"250 raw.test\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n250 stray\r\n"),
         b"554 5.7.1 rejected\r\n"),
    ],
)  # fmt: skip
def test_a_reply_nobody_asked_for_abandons_the_connection(
    greeting_extra: bytes, replies: tuple[bytes, ...], after_dot: bytes | None
) -> None:
    greeting = b"220 raw.test ESMTP\r\n" + greeting_extra
    outcomes = _sent_through(_one_session_server(*replies, after_dot=after_dot, greeting=greeting))
    assert [o.state for o in outcomes] == ["deferred"]  # never bounced, never delivered
    assert outcomes[0].reason == "network_error"


def test_a_stray_reply_while_idle_is_not_taken_for_the_next_commands_reply() -> None:
    """A reply written on its own after the last one (a stray "250" 50 ms after the
    dot) answered the next message's MAIL, and every later reply went to the command
    before: a good recipient bounced, and was suppressed, with another's 550 (review
    of the reply reader). Before the first command on a reused connection, anything
    the server sent while idle makes it stale: a new connection is opened."""
    import contextlib
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    dots = 0

    def session(conn: socket.socket) -> None:
        nonlocal dots
        with contextlib.suppress(OSError), conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 raw.test ESMTP\r\n")
            for line in iter(lines.readline, b""):
                verb = line[:4].lower()
                time.sleep(0.02)  # each reply in its own read, as over a real network
                if verb == b"rcpt":
                    refused = b"<ann@" in line
                    conn.sendall(b"550 5.1.1 ann: no such user\r\n" if refused else b"250 ok\r\n")
                elif verb == b"data":
                    conn.sendall(b"354 go\r\n")
                    while lines.readline() not in (b".\r\n", b""):
                        pass
                    dots += 1
                    conn.sendall(b"250 2.0.0 queued\r\n")
                    if dots == 1:

                        def late(conn: socket.socket = conn) -> None:
                            with contextlib.suppress(OSError):
                                conn.sendall(b"250 2.0.0 stray\r\n")

                        threading.Timer(0.05, late).start()
                elif verb == b"quit":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=session, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    s = Sender("127.0.0.1", listener.getsockname()[1], security="none",
               relays=RelayRegistry(), local_hostname="client.test")  # fmt: skip
    _OPEN.append(s)
    try:
        assert s.send(message("x@example.org")).outcomes[0].state == "delivered"
        time.sleep(0.3)
        second = EmailMessage()
        second["From"], second["To"], second["Subject"] = (
            "app@example.com",
            "ann@example.org, bob@example.org",
            "x",
        )
        second.set_content("y")
        states = {o.recipient: o.state for o in s.send(second).outcomes}
    finally:
        listener.close()
    assert states == {"ann@example.org": "bounced", "bob@example.org": "delivered"}


def test_a_line_fed_a_byte_at_a_time_is_bounded_by_the_command_timeout() -> None:
    """The deadline was checked per line, and each read restarted the timeout: one
    line fed a byte every 0.4 s held EHLO for 10 s with timeout=1 (review)."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 drip.test ESMTP\r\n")
            conn.recv(1024)
            for byte in b"250-" + b"x" * 100:
                if stop.wait(0.4):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    s = Sender("127.0.0.1", listener.getsockname()[1], security="none", timeout=1.0,
               relays=RelayRegistry(), local_hostname="client.test")  # fmt: skip
    _OPEN.append(s)
    started = time.monotonic()
    try:
        with pytest.raises(StageError):
            s.open()
    finally:
        stop.set()
        listener.close()
        serving.join(timeout=5)
    assert time.monotonic() - started < 4  # about the 1 s timeout, not 10 s or more
