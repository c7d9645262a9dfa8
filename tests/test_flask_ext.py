"""mailpolicy.flask through Flask's public APIs against mailpolicy.testing's SMTP server.

The extension (``MailPolicy``), Flask-Mail ``Message`` objects, the Flask-Mailman backend
(``MAIL_BACKEND = "mailpolicy.flask.EmailBackend"``), ``MAIL_SUPPRESS_SEND`` recording,
misconfiguration at ``init_app``, and the two examples (``examples/flask_app`` and
``examples/plain_script.py``), each checked on the outcomes and on what reached the wire.
Inline retries use a policy file with a 10 ms backoff, so nothing sleeps for long.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any

import flask_mail
import flask_mailman  # type: ignore[import-untyped]  # Flask-Mailman ships no type hints
import pytest
import structlog
from flask import Flask

import mailpolicy
from mailpolicy import ConfigurationError, DeliveryReport, MessageError
from mailpolicy._relaystate import RELAYS
from mailpolicy._store import Store, open_store
from mailpolicy.flask import DeliveryIncomplete, MailPolicy, MailSettings, message_dispatched
from mailpolicy.testing import SMTPTestServer, unused_port

Factory = Callable[..., SMTPTestServer]
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-Pa55"  # noqa: S105 - a test credential, checked for leaks
WRONG_PASSWORD = "wr0ng-Pa55"  # noqa: S105 - a test credential, checked for leaks

FAST_POLICY = """\
schema = 1
name = "flask-tests"
extends = "default"

[inline]
backoff = { initial = "10ms", multiplier = 1.0, max = "10ms", jitter = "none" }
"""


@pytest.fixture(autouse=True)
def fresh_relays() -> Iterator[None]:
    """The extension's Senders share the process-wide relay registry (as in production):
    forget its circuits around each test, so a port a refused-connection test opened a
    circuit for cannot defer a later test whose server got the same port number."""
    RELAYS.clear()
    yield
    RELAYS.clear()


@pytest.fixture
def fast_policy(tmp_path: Path) -> Path:
    """The default policy with a 10 ms inline backoff (the shipped one waits 1 s)."""
    path = tmp_path / "flask-tests.toml"
    path.write_text(FAST_POLICY, encoding="utf-8")
    return path


@pytest.fixture
def make_app(fast_policy: Path) -> Callable[..., Flask]:
    """A Flask app configured for a test server (None: a port nobody listens on)."""

    def make(server: SMTPTestServer | None = None, /, **config: Any) -> Flask:
        app = Flask(__name__)
        host, port = (server.host, server.port) if server else ("127.0.0.1", unused_port())
        app.config.update(
            MAIL_SERVER=host,
            MAIL_PORT=port,
            MAIL_DEFAULT_SENDER="Shop <shop@example.com>",
            MAILPOLICY_POLICY=str(fast_policy),
            MAILPOLICY_LOCAL_HOSTNAME="client.test",
        )
        app.config.update(config)
        return app

    return make


def message(*to: str, subject: str = "Your order", sender: str | None = None) -> EmailMessage:
    m = EmailMessage()
    if sender is not None:
        m["From"] = sender
    m["To"] = ", ".join(to)
    m["Subject"] = subject
    m.set_content("Thank you.\n")
    return m


def states(report: DeliveryReport) -> dict[str, tuple[str, str]]:
    return {o.recipient: (o.state, o.reason) for o in report.outcomes}


# --- sending an EmailMessage -------------------------------------------------------------


def test_from_is_filled_from_mail_default_sender(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server)
    mail = MailPolicy(app)
    original = message("ann@example.org")
    report = mail.send(original)
    assert states(report) == {"ann@example.org": ("delivered", "delivered")}
    assert report.envelope_from == "shop@example.com"
    (received,) = smtp_server.messages
    assert received.mail_from == "shop@example.com"
    assert received.parsed()["From"] == "Shop <shop@example.com>"
    assert received.parsed()["Message-ID"] == report.message_id
    assert "From" not in original  # the caller's message is left alone


def test_an_explicit_from_and_envelope_win(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    mail = MailPolicy(make_app(smtp_server))
    report = mail.send(
        message("ann@example.org", sender="Desk <desk@example.com>"),
        envelope_from="bounces@example.com",
        recipients=["ann@example.org", "audit@example.org"],
    )
    assert [o.state for o in report.outcomes] == ["delivered", "delivered"]
    (received,) = smtp_server.messages
    assert received.mail_from == "bounces@example.com"
    assert received.rcpt_tos == ("ann@example.org", "audit@example.org")
    assert received.parsed()["From"] == "Desk <desk@example.com>"


def test_from_is_filled_with_an_explicit_envelope_too(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    MailPolicy(make_app(smtp_server)).send(
        message("ann@example.org"), envelope_from="bounces@example.com"
    )
    (received,) = smtp_server.messages
    assert (received.mail_from, received.parsed()["From"]) == (
        "bounces@example.com",
        "Shop <shop@example.com>",
    )


def test_421_is_retried_inline_on_a_fresh_connection(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    smtp_server.script.greeting("421 4.3.2 Service shutting down")
    report = MailPolicy(make_app(smtp_server)).send(message("ann@example.org"))
    (o,) = report.outcomes
    assert (o.state, o.attempts) == ("delivered", 2)
    assert smtp_server.connections == 2
    assert smtp_server.delivered_to("ann@example.org") == 1


def test_a_550_recipient_is_in_the_report_and_the_others_are_delivered(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 <bob@example.org>: User unknown")
    report = MailPolicy(make_app(smtp_server)).send(
        message("ann@example.org", "bob@example.org", "not-an-address")
    )
    assert states(report) == {
        "ann@example.org": ("delivered", "delivered"),
        "bob@example.org": ("bounced", "mailbox_unknown"),
        "not-an-address": ("invalid", "mailbox_name_invalid"),
    }
    assert report.by_state("bounced")[0].code == 550
    (received,) = smtp_server.messages
    assert received.rcpt_tos == ("ann@example.org",)
    assert "not-an-address" not in smtp_server.rcpt_addresses()


def test_a_deferred_recipient_raises_delivery_incomplete_with_the_report(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    smtp_server.script.rcpt("bob@example.org", "450 4.2.0 Greylisted, try again in 300 seconds")
    mail = MailPolicy(make_app(smtp_server))
    with pytest.raises(DeliveryIncomplete) as caught:
        mail.send(message("ann@example.org", "bob@example.org"))
    exc = caught.value
    assert isinstance(exc, smtplib.SMTPException)  # what Flask/Django callers already catch
    assert states(exc.report) == {
        "ann@example.org": ("delivered", "delivered"),
        "bob@example.org": ("deferred", "greylisted"),
    }
    assert exc.report.outcomes[1].persisted is False
    assert (exc.sent, exc.reports) == (1, [exc.report])
    (sent,) = exc.messages
    assert isinstance(sent, EmailMessage)
    assert sent["From"] == "Shop <shop@example.com>"  # the message as sent
    assert "1 message has recipients neither delivered nor refused" in str(exc)
    assert "1 of 2 recipients pending" in str(exc)
    assert "b***@example.org deferred (greylisted, 450 4.2.0)" in str(exc)
    assert "no MAILPOLICY_STORE keeps them" in str(exc)
    assert "bob@example.org" not in str(exc)  # masked, as in the events
    assert DeliveryIncomplete is mailpolicy.DeliveryIncomplete  # one class everywhere
    again = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes (as a task queue does)
    assert (again.report, str(again)) == (exc.report, str(exc))
    assert smtp_server.delivered_to("ann@example.org") == 1


def test_fail_silently_returns_the_report_instead(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    smtp_server.script.rcpt("bob@example.org", "452 4.2.2 Mailbox full")
    report = MailPolicy(make_app(smtp_server)).send(message("bob@example.org"), fail_silently=True)
    assert states(report) == {"bob@example.org": ("deferred", "mailbox_full")}
    assert report.outcomes[0].next_attempt_at is not None


def test_an_unreachable_relay_raises_after_the_inline_retries(
    make_app: Callable[..., Flask],
) -> None:
    mail = MailPolicy(make_app(None))
    with pytest.raises(DeliveryIncomplete) as caught:
        mail.send(message("ann@example.org"))
    (o,) = caught.value.report.outcomes
    assert (o.state, o.reason, o.attempts) == ("deferred", "network_error", 3)


def test_held_raises_too(smtp_server_factory: Factory, make_app: Callable[..., Flask]) -> None:
    server = smtp_server_factory(auth_required=True)  # 530 at MAIL: our configuration's fault
    mail = MailPolicy(make_app(server))
    with pytest.raises(DeliveryIncomplete) as caught:
        mail.send(message("ann@example.org"))
    assert states(caught.value.report) == {"ann@example.org": ("held", "auth_required")}
    report = mail.send(message("ann@example.org"), fail_silently=True)
    assert report.outcomes[0].state == "held"
    assert server.messages == []


def test_a_message_that_cannot_be_sent_raises_message_error_even_silently(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    mail = MailPolicy(make_app(smtp_server, MAIL_DEFAULT_SENDER=None))
    with pytest.raises(MessageError, match="no From"):
        mail.send(message("ann@example.org"), fail_silently=True)
    with pytest.raises(MessageError, match="not str"):
        mail.send("Subject: hi\n\nbody")
    assert smtp_server.connections == 0


def test_events_are_emitted_with_masked_recipients(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    mail = MailPolicy(make_app(smtp_server))
    with structlog.testing.capture_logs() as logs:
        mail.send(message("ann@example.org"))
    (event,) = [e for e in logs if e["event"] == "mail.delivery"]
    assert (event["recipient"], event["state"]) == ("a***@example.org", "delivered")


# --- connections ------------------------------------------------------------------------


def test_connect_reuses_one_connection_for_several_messages(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    mail = MailPolicy(make_app(smtp_server))
    with mail.connect() as connection:
        assert smtp_server.connections == 0  # opened on first need
        for i in range(3):
            connection.send(message(f"u{i}@example.org"))
    assert smtp_server.connections == 1
    assert len(smtp_server.messages) == 3
    assert [e.stage for e in smtp_server.transcript][-1] == "quit"  # closed at the end


def test_each_send_outside_connect_has_its_own_connection(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    mail = MailPolicy(make_app(smtp_server))
    mail.send(message("a@example.org"))
    mail.send(message("b@example.org"))
    assert smtp_server.connections == 2


def test_mail_max_emails_reconnects(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    mail = MailPolicy(make_app(smtp_server, MAIL_MAX_EMAILS=2))
    with mail.connect() as connection:
        for i in range(5):
            connection.send(message(f"u{i}@example.org"))
    assert smtp_server.connections == 3


def test_app_factory_pattern_uses_current_app(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    mail = MailPolicy()
    app = make_app(smtp_server)
    settings = mail.init_app(app)
    assert isinstance(settings, MailSettings)
    assert app.extensions["mailpolicy"] is settings
    assert "password" not in repr(settings).lower().replace("password=", "")
    with app.app_context():
        assert mail.send(message("ann@example.org")).all_delivered
    with pytest.raises(RuntimeError, match="application context"):
        mail.send(message("ann@example.org"))
    other = Flask("other")
    with other.app_context(), pytest.raises(RuntimeError, match="not set up"):
        mail.send(message("ann@example.org"))


# --- TLS and AUTH -----------------------------------------------------------------------


def test_starttls_and_auth_with_a_verifying_context(
    smtp_server_factory: Factory, make_app: Callable[..., Flask]
) -> None:
    server = smtp_server_factory(starttls=True, auth={"shop": PASSWORD})
    app = make_app(
        server,
        MAIL_USE_TLS=True,
        MAIL_USERNAME="shop",
        MAIL_PASSWORD=PASSWORD,
        MAILPOLICY_SSL_CONTEXT=server.client_ssl_context(),
    )
    assert MailPolicy(app).send(message("ann@example.org")).all_delivered
    (received,) = server.messages
    assert (received.tls, received.auth_login) == (True, "shop")


def test_a_wrong_password_is_held(
    smtp_server_factory: Factory, make_app: Callable[..., Flask]
) -> None:
    server = smtp_server_factory(starttls=True, auth={"shop": PASSWORD})
    app = make_app(
        server,
        MAIL_USE_TLS=True,
        MAIL_USERNAME="shop",
        MAIL_PASSWORD=WRONG_PASSWORD,
        MAILPOLICY_SSL_CONTEXT=server.client_ssl_context(),
    )
    with pytest.raises(DeliveryIncomplete) as caught:
        MailPolicy(app).send(message("ann@example.org"))
    assert states(caught.value.report) == {"ann@example.org": ("held", "auth_failed")}
    assert WRONG_PASSWORD not in str(caught.value)


def test_insecure_auth_only_when_allowed(
    smtp_server_factory: Factory, make_app: Callable[..., Flask]
) -> None:
    server = smtp_server_factory(auth={"shop": "pw"}, auth_require_tls=False)
    config: dict[str, Any] = {"MAIL_USERNAME": "shop", "MAIL_PASSWORD": "pw"}
    with pytest.raises(ConfigurationError, match="MAILPOLICY_ALLOW_INSECURE_AUTH"):
        MailPolicy(make_app(server, **config))
    app = make_app(server, MAILPOLICY_ALLOW_INSECURE_AUTH=True, **config)
    assert MailPolicy(app).send(message("ann@example.org")).all_delivered
    (attempt,) = server.auth_attempts
    assert (attempt.login, attempt.success, attempt.tls) == ("shop", True, False)


# --- misconfiguration fails at init_app ----------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"MAILPOLICY_POLCY": "x"},
            "MAILPOLICY_POLCY: unknown setting; did you mean MAILPOLICY_POLICY?",
        ),
        (
            {"MAILPOLICY_POLICY": "missing/x.toml"},
            "MAILPOLICY_POLICY: cannot load 'missing/x.toml'",
        ),
        ({"MAILPOLICY_POLICY": "no-such-policy"}, "MAILPOLICY_POLICY: cannot load"),
        ({"MAILPOLICY_POLICY": 3}, "MAILPOLICY_POLICY: expected a shipped policy name"),
        ({"MAILPOLICY_STORE": "o.db"}, "MAILPOLICY_STORE: cannot open 'o.db': not a store URL"),
        ({"MAILPOLICY_STORE": "mysql://db/mail"}, "MAILPOLICY_STORE: cannot open 'mysql:"),
        ({"MAILPOLICY_STORE": 3}, "MAILPOLICY_STORE: expected the outbox: a store URL"),
        (
            {"MAIL_USERNAME": "shop", "MAIL_PASSWORD": "pw"},
            "MAILPOLICY_ALLOW_INSECURE_AUTH: MAIL_USERNAME is set but neither",
        ),
        (
            {"MAIL_USERNAME": "shop", "MAIL_USE_TLS": True},
            "MAIL_PASSWORD: not set, but MAIL_USERNAME is",
        ),
        ({"MAIL_USE_TLS": True, "MAIL_USE_SSL": True}, "MAIL_USE_SSL (implicit TLS) are both set"),
        ({"MAIL_USE_TLS": "maybe"}, "MAIL_USE_TLS: expected a bool (True or False), got 'maybe'"),
        ({"MAIL_PORT": "smtp"}, "MAIL_PORT: expected a port number from 1 to 65535, got 'smtp'"),
        ({"MAIL_PORT": 70000}, "MAIL_PORT: expected a port number"),
        ({"MAIL_SERVER": ""}, "MAIL_SERVER: expected a host name or address"),
        ({"MAIL_TIMEOUT": 0}, "MAIL_TIMEOUT: expected a finite number of seconds above 0"),
        ({"MAIL_TIMEOUT": float("inf")}, "MAIL_TIMEOUT: expected a finite number of seconds"),
        ({"MAIL_SEND_OPTIONS": 5}, "MAIL_SEND_OPTIONS: expected a list of str"),
        ({"MAILPOLICY_LOCAL_HOSTNAME": "a\r\nb"}, "MAILPOLICY_LOCAL_HOSTNAME: expected"),
        ({"MAILPOLICY_LOCAL_HOSTNAME": "my host"}, "MAILPOLICY_LOCAL_HOSTNAME: expected"),
        ({"MAIL_MAX_EMAILS": 0}, "MAIL_MAX_EMAILS: expected a positive int"),
        ({"MAIL_DEFAULT_SENDER": "shop at example"}, "MAIL_DEFAULT_SENDER: expected a valid"),
        ({"MAIL_DEFAULT_SENDER": "a@x.org, b@x.org"}, "MAIL_DEFAULT_SENDER: expected exactly one"),
        (
            {"MAIL_DEFAULT_SENDER": ("n\r\nBcc: evil@x.org", "a@x.org")},
            "MAIL_DEFAULT_SENDER: expected",
        ),
        (
            {"MAIL_DEFAULT_SENDER": "Shop <a@x.org>\r\nBcc: evil@x.org"},
            "MAIL_DEFAULT_SENDER: expected",
        ),
        ({"MAIL_DEFAULT_SENDER": ("Shop", "a@b@c")}, "MAIL_DEFAULT_SENDER: expected"),
        ({"MAIL_SEND_OPTIONS": ["RET=HDRS"]}, "MAIL_SEND_OPTIONS: ['RET=HDRS'] are not supported"),
        ({"MAIL_SSL_CERTFILE": "c.pem"}, "MAIL_SSL_CERTFILE: not supported"),
        ({"MAILPOLICY_SSL_CONTEXT": "verify"}, "MAILPOLICY_SSL_CONTEXT: expected an ssl"),
        ({"MAILPOLICY_RECIPIENT_STYLE": "plain"}, "MAILPOLICY_RECIPIENT_STYLE: expected"),
    ],
)
def test_misconfiguration_fails_at_init_app_naming_the_setting(
    config: dict[str, Any],
    expected: str,
    smtp_server: SMTPTestServer,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(smtp_server, **config)
    with pytest.raises(ConfigurationError) as caught:
        MailPolicy(app)
    assert str(caught.value).startswith(f"mailpolicy.flask (app {app.name!r}): ")
    assert expected in str(caught.value)
    assert "mailpolicy" not in app.extensions
    assert smtp_server.connections == 0


def test_a_policy_file_error_names_the_file_and_key(
    tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = 1\nname = "bad"\nextends = "default"\n[inline]\ndeadline = 15\n')
    with pytest.raises(ConfigurationError, match=r"MAILPOLICY_POLICY: .*inline\.deadline"):
        MailPolicy(make_app(None, MAILPOLICY_POLICY=str(bad)))


def test_a_password_never_appears_in_a_configuration_error(
    make_app: Callable[..., Flask],
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MailPolicy(make_app(None, MAIL_USERNAME="shop", MAIL_PASSWORD=123456789))
    assert "MAIL_PASSWORD: expected a str" in str(caught.value)
    assert "123456789" not in str(caught.value)


def test_settings_accept_the_usual_spellings(make_app: Callable[..., Flask]) -> None:
    app = make_app(
        None,
        MAIL_PORT="2525",
        MAIL_USE_SSL="true",
        MAIL_TIMEOUT=5,
        MAIL_DEFAULT_SENDER=("Shop", "shop@example.com"),
        MAIL_SEND_OPTIONS=["SMTPUTF8"],
        MAILPOLICY_POLICY="transactional",
    )
    settings = MailPolicy(app).init_app(app)
    assert (settings.port, settings.security, settings.timeout) == (2525, "ssl", 5.0)
    assert settings.default_sender == "Shop <shop@example.com>"
    assert settings.policy.name == "transactional"


def test_a_flask_mail_message_with_one_str_of_recipients_is_refused(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    """Flask-Mail iterates recipients: "b@example.org" became 13 one-character
    recipients, each "invalid" (fuzz review). Refused as Sender.send refuses it."""
    app = make_app(smtp_server)
    mail = MailPolicy(app)
    with app.app_context(), pytest.raises(MessageError, match="recipients must be a list"):
        mail.send(flask_mail.Message("hi", recipients="b@example.org", body="x"))  # type: ignore[arg-type]
    assert smtp_server.connections == 0


def test_a_default_sender_tuple_with_a_unicode_domain_is_sent_as_its_a_label(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    """formataddr raised UnicodeEncodeError for it at start-up; the string form of the
    same sender worked (fuzz review)."""
    app = make_app(smtp_server, MAIL_DEFAULT_SENDER=("Bücher", "orders@bücher.de"))
    mail = MailPolicy(app)
    with app.app_context():
        mail.send(flask_mail.Message("hi", recipients=["ann@example.org"], body="x"))
    (received,) = smtp_server.messages
    assert received.mail_from == "orders@xn--bcher-kva.de"


# --- with a store (MAILPOLICY_STORE) ------------------------------------------------------


@pytest.fixture
def store_app(
    tmp_path: Path, smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> Iterator[tuple[Flask, MailPolicy, Store]]:
    """An app with ``MAILPOLICY_STORE``; its store is closed afterwards (an app keeps it
    open for its life)."""
    app = make_app(smtp_server, MAILPOLICY_STORE=f"sqlite:///{tmp_path / 'outbox.db'}")
    mail = MailPolicy(app)
    store = mail.store
    assert store is not None
    yield app, mail, store
    store.close()


def test_with_a_store_deferred_recipients_are_saved_not_raised(
    smtp_server: SMTPTestServer, store_app: tuple[Flask, MailPolicy, Store]
) -> None:
    _, mail, store = store_app
    smtp_server.script.rcpt("bob@example.org", "450 4.2.0 Greylisted, try again in 300 seconds")
    report = mail.send(message("ann@example.org", "bob@example.org"))
    assert states(report) == {
        "ann@example.org": ("delivered", "delivered"),
        "bob@example.org": ("deferred", "greylisted"),
    }
    assert report.outcomes[1].persisted is True
    counts = store.counts(now=time.time())
    assert (counts["messages"], counts["deferred"], counts["delivered"]) == (1, 1, 1)
    smtp_server.script.mail("530 5.7.0 Authentication required")
    held = mail.send(message("cy@example.org"))  # held: kept for the operator
    assert (held.outcomes[0].state, held.outcomes[0].persisted) == ("held", True)
    assert store.counts(now=time.time())["held"] == 1


def test_with_a_store_a_dead_address_is_suppressed_before_any_smtp(
    smtp_server: SMTPTestServer, store_app: tuple[Flask, MailPolicy, Store]
) -> None:
    _, mail, store = store_app
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 <bob@example.org>: User unknown")
    first = mail.send(message("bob@example.org", "ann@example.org"))
    second = mail.send(message("bob@example.org", "ann@example.org"))
    assert states(first)["bob@example.org"] == ("bounced", "mailbox_unknown")
    assert states(second)["bob@example.org"] == ("suppressed", "mailbox_unknown")
    assert smtp_server.rcpt_addresses().count("bob@example.org") == 1
    assert [e.address for e in store.suppressions(now=time.time())] == ["bob@example.org"]


def test_with_a_store_flask_mailman_counts_a_deferred_message_as_sent(
    smtp_server: SMTPTestServer, store_app: tuple[Flask, MailPolicy, Store]
) -> None:
    app, _, store = store_app
    app.config["MAIL_BACKEND"] = "mailpolicy.flask.EmailBackend"
    mailman = flask_mailman.Mail(app)
    smtp_server.script.rcpt("cy@example.org", "452 4.2.2 Mailbox full")
    with app.app_context():
        connection = mailman.get_connection(timeout=5)  # overrides: the store is reused
        assert connection.settings.store is store
        assert mailman.send_mail("Hi", "Body", None, ["cy@example.org"]) == 1
    assert store.counts(now=time.time())["deferred"] == 1


def test_init_app_again_reuses_the_store(store_app: tuple[Flask, MailPolicy, Store]) -> None:
    app, mail, store = store_app
    assert mail.init_app(app).store is store


def test_a_store_object_is_used_as_given(
    tmp_path: Path, smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    with open_store(f"sqlite:///{tmp_path / 'given.db'}") as store:
        mail = MailPolicy(make_app(smtp_server, MAILPOLICY_STORE=store))
        assert (mail.store, mail.settings.store_url) == (store, None)
        smtp_server.script.rcpt("ann@example.org", "452 4.2.2 Mailbox full")
        assert mail.send(message("ann@example.org")).outcomes[0].persisted


def test_the_cli_worker_delivers_what_was_deferred(
    smtp_server: SMTPTestServer, store_app: tuple[Flask, MailPolicy, Store]
) -> None:
    app, mail, store = store_app
    smtp_server.script.rcpt("bob@example.org", "450 4.2.0 Greylisted, try again in 300 seconds")
    report = mail.send(message("ann@example.org", "bob@example.org"))
    runner = app.test_cli_runner()
    status = runner.invoke(args=["mailpolicy", "outbox-status", "--json"])
    assert status.exit_code == 0, status.output
    counts = json.loads(status.output)
    assert (counts["deferred"], counts["due"]) == (1, 0)
    first = runner.invoke(args=["mailpolicy", "worker", "--once"])
    assert first.exit_code == 0, first.output
    assert " 0 claim(s)" in first.output  # not due before the 300 s the server asked for
    assert store.retry_now(now=time.time()) == 1
    with structlog.testing.capture_logs() as logs:
        done = runner.invoke(args=["mailpolicy", "worker", "--once", "--lease", "2m"])
    assert done.exit_code == 0, done.output
    assert "1 claim(s), 1 delivered, 0 deferred" in done.output
    assert smtp_server.delivered_to("bob@example.org") == 1
    assert smtp_server.delivered_to("ann@example.org") == 1  # never sent again
    assert {m.parsed()["Message-ID"] for m in smtp_server.messages} == {report.message_id}
    # Saved with the app's policy (a file): the worker knew it by its name.
    assert [(e["state"], e["policy"]) for e in logs if e["event"] == "mail.delivery"] == [
        ("delivered", "flask-tests")
    ]
    status = runner.invoke(args=["mailpolicy", "outbox-status"])
    assert "deferred         0" in status.output
    assert "delivered        2" in status.output


def test_the_cli_needs_a_store_and_durations(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server)
    MailPolicy(app)
    runner = app.test_cli_runner()
    for args in (["worker", "--once"], ["outbox-status"]):
        result = runner.invoke(args=["mailpolicy", *args])
        assert result.exit_code == 1
        assert "no store configured: set MAILPOLICY_STORE" in result.output
    result = runner.invoke(args=["mailpolicy", "worker", "--once", "--poll", "5"])
    assert result.exit_code == 2
    assert "'5' is not a duration" in result.output
    testing = make_app(smtp_server, TESTING=True, MAILPOLICY_STORE="sqlite://")
    store = MailPolicy(testing).store
    assert store is not None
    with store:
        result = testing.test_cli_runner().invoke(args=["mailpolicy", "worker", "--once"])
    assert result.exit_code == 1
    assert "MAIL_SUPPRESS_SEND is on" in result.output
    assert smtp_server.connections == 0


# --- MAIL_SUPPRESS_SEND / TESTING: record, don't send ----------------------------------------


def test_testing_records_instead_of_sending(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server, TESTING=True)
    mail = MailPolicy(app)
    with mail.record_messages() as outbox:
        report = mail.send(message("ann@example.org", "no-at-sign"))
    assert smtp_server.connections == 0
    assert states(report) == {
        "ann@example.org": ("delivered", "delivered"),
        "no-at-sign": ("invalid", "mailbox_name_invalid"),  # pre-validated as for real
    }
    assert (report.relay, report.outcomes[0].action) == ("suppressed", "record")
    (recorded,) = outbox
    assert isinstance(recorded, EmailMessage)
    assert (recorded["Subject"], recorded["From"]) == ("Your order", "Shop <shop@example.com>")


def test_record_messages_with_an_app_factory_needs_no_app_context(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    """docs/flask.md's test, with the factory pattern (init_app) and a test client: it
    raised "Working outside of application context" (found in review)."""
    mail = MailPolicy()
    app = make_app(smtp_server, TESTING=True)
    mail.init_app(app)

    @app.post("/orders")
    def order() -> str:
        mail.send(message("ann@example.org"))
        return "ok"

    with mail.record_messages() as outbox:
        app.test_client().post("/orders")
    (recorded,) = outbox
    assert isinstance(recorded, EmailMessage)
    assert recorded["Subject"] == "Your order"
    assert smtp_server.connections == 0


def test_mail_suppress_send_wins_over_testing(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    MailPolicy(make_app(smtp_server, TESTING=False, MAIL_SUPPRESS_SEND=True)).send(
        message("ann@example.org")
    )
    assert smtp_server.connections == 0
    MailPolicy(make_app(smtp_server, TESTING=True, MAIL_SUPPRESS_SEND=False)).send(
        message("ann@example.org")
    )
    assert smtp_server.delivered_to("ann@example.org") == 1


def test_record_messages_and_the_signal_see_real_sends_too(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server)
    mail = MailPolicy(app)
    seen: list[DeliveryReport] = []

    def listener(sender: Flask, *, message: object, report: DeliveryReport) -> None:
        seen.append(report)

    with message_dispatched.connected_to(listener, sender=app), mail.record_messages() as outbox:
        report = mail.send(message("ann@example.org"))
    assert len(outbox) == 1
    assert seen == [report]


# --- Flask-Mail messages ----------------------------------------------------------------


def test_a_flask_mail_message_goes_out_with_bcc_only_in_the_envelope(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server)
    mail = MailPolicy(app)  # no flask_mail.Mail: MailPolicy provides what Message reads
    with app.app_context():
        msg = flask_mail.Message(
            "Your order",
            recipients=["ann@example.org"],
            cc=[("Bob", "bob@example.org")],
            bcc=["audit@example.org"],
            body="Thank you.",
        )
        assert msg.sender == "Shop <shop@example.com>"  # MAIL_DEFAULT_SENDER
        with flask_mail.email_dispatched.connected_to(lambda app, message: None):
            report = mail.send(msg)
    assert [o.recipient for o in report.outcomes] == [
        "ann@example.org",
        "bob@example.org",
        "audit@example.org",
    ]
    assert report.all_delivered
    (received,) = smtp_server.messages
    assert received.mail_from == "shop@example.com"
    assert received.rcpt_tos == ("ann@example.org", "bob@example.org", "audit@example.org")
    assert b"audit@" not in received.data
    parsed = received.parsed()
    assert (parsed["Subject"], parsed["Message-ID"]) == ("Your order", msg.msgId)
    assert b"\n" not in received.data.replace(b"\r\n", b"")


def test_a_flask_mail_message_without_sender_takes_the_default(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server, MAIL_DEFAULT_SENDER=None)
    flask_mail_ext = flask_mail.Mail(app)  # Flask-Mail's own state: no default sender there
    app.config["MAIL_DEFAULT_SENDER"] = "desk@example.com"
    mail = MailPolicy(app)  # keeps Flask-Mail's app.extensions["mail"]
    with app.app_context(), flask_mail_ext.record_messages() as flask_outbox:
        msg = flask_mail.Message("Hi", recipients=["ann@example.org"], body="x")
        assert msg.sender is None
        mail.send(msg)
    assert msg.sender is None  # not mutated
    assert flask_outbox == [msg]  # Flask-Mail's email_dispatched signal is sent too
    (received,) = smtp_server.messages
    assert received.mail_from == "desk@example.com"
    assert received.parsed()["From"] == "desk@example.com"


def test_flask_mail_options_we_cannot_honour_are_refused(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server)
    mail = MailPolicy(app)
    with app.app_context():
        msg = flask_mail.Message(
            "Hi", recipients=["ann@example.org"], body="x", rcpt_options=["NOTIFY=SUCCESS"]
        )
        with pytest.raises(MessageError, match="rcpt_options"):
            mail.send(msg)
        msg = flask_mail.Message("Hi\r\nBcc: x@evil.example", recipients=["ann@example.org"])
        with pytest.raises(MessageError, match="header injection"):
            mail.send(msg)
    assert smtp_server.connections == 0


# --- Flask-Mailman backend --------------------------------------------------------------


@pytest.fixture
def mailman_app(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> Iterator[tuple[Flask, Any]]:
    app = make_app(smtp_server, MAIL_BACKEND="mailpolicy.flask.EmailBackend")
    mailman = flask_mailman.Mail(app)
    with app.app_context():
        yield app, mailman


def test_flask_mailman_backend_delivers_through_our_sender(
    smtp_server: SMTPTestServer, mailman_app: tuple[Flask, Any]
) -> None:
    msg = flask_mailman.EmailMessage(
        "Your order", "Thank you.", to=["ann@example.org"], bcc=["audit@example.org"]
    )
    with structlog.testing.capture_logs() as logs:
        assert msg.send() == 1
    report: DeliveryReport = msg.mailpolicy_report
    assert report.all_delivered
    assert [e["recipient"] for e in logs if e["event"] == "mail.delivery"] == [
        "a***@example.org",
        "a***@example.org",
    ]
    (received,) = smtp_server.messages
    assert received.mail_from == "shop@example.com"  # MAIL_DEFAULT_SENDER
    assert received.rcpt_tos == ("ann@example.org", "audit@example.org")
    assert b"audit@" not in received.data


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"cc": ["c@example.org, attacker@evil.example"]}, "only c@example.org could be parsed"),
        ({"bcc": ["c@example.org; attacker@evil.example"]}, "Invalid address"),
        ({"to": ["bad@@example.org"]}, "Invalid address"),
        ({"from_email": "shop@example.com, evil@example.net"}, "Invalid address"),
    ],
)
def test_flask_mailman_refuses_an_entry_that_is_not_one_address(
    smtp_server: SMTPTestServer, mailman_app: tuple[Flask, Any], fields: dict[str, Any],
    expected: str,
) -> None:  # fmt: skip
    """As Flask-Mailman's (and Django's) own SMTP backend: ValueError, nothing sent. One
    cc entry "c@x, attacker@y" (a form field) became two recipients (found in review)."""
    kwargs: dict[str, Any] = {"to": ["ann@example.org"], **fields}
    msg = flask_mailman.EmailMessage("Your order", "Thank you.", **kwargs)
    with pytest.raises(ValueError, match=expected):
        msg.send()
    assert smtp_server.connections == 0 or smtp_server.messages == []


def test_flask_mailman_keeps_unicode_addresses_as_the_sender_writes_them(
    smtp_server: SMTPTestServer, mailman_app: tuple[Flask, Any]
) -> None:
    """Flask-Mailman's sanitize_address is only the one-address check: its result wrote
    "jürgen@" as an encoded-word and straße.de as strasse.de (IDNA 2003), another
    domain (found in review of the first fix)."""
    msg = flask_mailman.EmailMessage(
        "Your order", "Thank you.", to=["jürgen@example.org", "ann@straße.de"]
    )
    assert msg.send() == 1
    (received,) = smtp_server.messages
    assert received.rcpt_tos == ("jürgen@example.org", "ann@xn--strae-oqa.de")


def test_a_flask_mail_entry_naming_several_addresses_is_refused(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server)
    mail = MailPolicy(app)
    with app.app_context():
        msg = flask_mail.Message(
            "Your order", recipients=["ann@example.org, attacker@evil.example"], body="x"
        )
        with pytest.raises(ValueError, match="one entry names several addresses"):
            mail.send(msg)
    assert smtp_server.messages == []


def test_flask_mailman_module_path_resolves_to_our_backend(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server, MAIL_BACKEND="mailpolicy.flask")
    mailman = flask_mailman.Mail(app)
    with app.app_context():
        assert mailman.send_mail("Hi", "Body", None, ["ann@example.org"]) == 1
    assert smtp_server.delivered_to("ann@example.org") == 1


def test_flask_mailman_partial_failure_and_deferral(
    smtp_server: SMTPTestServer, mailman_app: tuple[Flask, Any]
) -> None:
    _, mailman = mailman_app
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 User unknown")
    greylisted = "451 4.7.1 Greylisted, try again later"
    smtp_server.script.rcpt("cy@example.org", greylisted, greylisted)
    assert mailman.send_mail("Hi", "Body", None, ["ann@example.org", "bob@example.org"]) == 1
    with pytest.raises(DeliveryIncomplete) as caught:
        mailman.send_mail("Hi", "Body", None, ["cy@example.org"])
    assert states(caught.value.report) == {"cy@example.org": ("deferred", "greylisted")}
    assert mailman.send_mail("Hi", "Body", None, ["cy@example.org"], fail_silently=True) == 0


def test_flask_mailman_batch_is_tried_whole_before_raising(
    smtp_server: SMTPTestServer, mailman_app: tuple[Flask, Any]
) -> None:
    _, mailman = mailman_app
    smtp_server.script.rcpt("cy@example.org", "452 4.2.2 Mailbox full")
    messages = [
        flask_mailman.EmailMessage("Hi", "Body", to=[to])
        for to in ("cy@example.org", "ann@example.org")
    ]
    with pytest.raises(DeliveryIncomplete) as caught:
        mailman.get_connection().send_messages(messages)
    assert (caught.value.sent, caught.value.messages) == (1, [messages[0]])
    assert caught.value.report is messages[0].mailpolicy_report
    assert messages[1].mailpolicy_report.all_delivered
    assert smtp_server.delivered_to("ann@example.org") == 1
    assert smtp_server.connections == 1


def test_flask_mailman_one_connection_for_a_batch(
    smtp_server: SMTPTestServer, mailman_app: tuple[Flask, Any]
) -> None:
    _, mailman = mailman_app
    sent = mailman.send_mass_mail([("Hi", "Body", None, [f"u{i}@example.org"]) for i in range(3)])
    assert sent == 3
    with mailman.get_connection() as connection:
        messages = [
            flask_mailman.EmailMessage("Hi", "Body", to=[f"v{i}@example.org"]) for i in range(2)
        ]
        assert connection.send_messages(messages) == 2
        assert connection.send_messages([flask_mailman.EmailMessage("Hi", "Body")]) == 0
    assert smtp_server.connections == 2
    assert len(smtp_server.messages) == 5


def test_flask_mailman_backend_options_and_misconfiguration(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(None, MAIL_BACKEND="mailpolicy.flask.EmailBackend")
    mailman = flask_mailman.Mail(app)
    with app.app_context():
        connection = mailman.get_connection(host=smtp_server.host, port=smtp_server.port)
        assert connection.send_messages([flask_mailman.EmailMessage("Hi", "B", to=["a@x.org"])])
        with pytest.raises(ConfigurationError, match="MAIL_USERNAME is set but neither"):
            mailman.get_connection(username="shop", password=PASSWORD)
        with pytest.raises(ConfigurationError, match="unknown option"):
            mailman.get_connection(colour="blue")
    broken = make_app(None, MAIL_BACKEND="mailpolicy.flask.EmailBackend", MAILPOLICY_STORE="x")
    broken_mailman = flask_mailman.Mail(broken)
    with broken.app_context(), pytest.raises(ConfigurationError, match="MAILPOLICY_STORE"):
        broken_mailman.get_connection()
    assert smtp_server.connections == 1


def test_flask_mailman_backend_records_when_testing(
    smtp_server: SMTPTestServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(smtp_server, MAIL_BACKEND="mailpolicy.flask.EmailBackend", TESTING=True)
    mailman = flask_mailman.Mail(app)
    mail = MailPolicy(app)
    with app.app_context(), mail.record_messages() as outbox:
        msg = flask_mailman.EmailMessage("Hi", "Body", to=["ann@example.org"])
        assert msg.send() == 1
    assert outbox == [msg]
    assert msg.mailpolicy_report.relay == "suppressed"
    assert smtp_server.connections == 0
    assert mailman is not None


# --- the examples -------------------------------------------------------------------------


def load_example(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flask_app_example(smtp_server: SMTPTestServer, fast_policy: Path) -> None:
    example = load_example(ROOT / "examples" / "flask_app" / "app.py")
    app = example.create_app(
        {
            "MAIL_SERVER": smtp_server.host,
            "MAIL_PORT": smtp_server.port,
            "MAILPOLICY_POLICY": str(fast_policy),
        }
    )
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 User unknown")
    smtp_server.script.rcpt("cy@example.org", "450 4.2.0 Greylisted, try again in 300 seconds")
    client = app.test_client()
    answers = {
        to: client.post("/orders", data={"email": to})
        for to in ("ann@example.org", "bob@example.org", "cy@example.org")
    }
    assert {to: (r.status_code, r.get_json()["status"]) for to, r in answers.items()} == {
        "ann@example.org": (200, "sent"),
        "bob@example.org": (422, "refused"),
        "cy@example.org": (503, "not sent yet"),
    }
    outcome = answers["cy@example.org"].get_json()["report"]["outcomes"][0]
    assert (outcome["state"], outcome["reason"]) == ("deferred", "greylisted")
    assert smtp_server.delivered_to("ann@example.org") == 1
    assert smtp_server.messages[0].parsed()["From"] == "Shop <orders@shop.example>"
    for bad in ("", "a@b\r\nBcc: x@y"):  # an HTTP 422, not a 500
        answer = client.post("/orders", data={"email": bad})
        assert (answer.status_code, answer.get_json()["status"]) == (422, "invalid")


def test_the_plain_script_example(smtp_server: SMTPTestServer) -> None:
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 User unknown")
    script = ROOT / "examples" / "plain_script.py"
    args = ["--host", smtp_server.host, "--port", str(smtp_server.port), "--security", "none"]
    done = subprocess.run(
        [sys.executable, str(script), *args, "--to", "ann@example.org", "--to", "bob@example.org"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "ann@example.org: delivered (delivered, 250; 1 attempt(s))" in done.stdout
    assert "bob@example.org: bounced (mailbox_unknown, 550 5.1.1; 1 attempt(s))" in done.stdout
    assert smtp_server.delivered_to("ann@example.org") == 1
