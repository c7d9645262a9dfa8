"""Django 6.1's own SMTP backend tests (``tests/mail/test_backends.py`` of the Django
sdist), run against ``mailpolicy.django.EmailBackend``. Loaded by
``run_django_smtp_tests.py`` through Django's ``runtests.py``, with the sdist's ``tests/``
directory on the path.

``backend_class`` swaps the backend for the tests that go through ``create_backend()``
(``MAILERS`` aliases); the class-level patch of ``django.core.mail.backends.smtp.EmailBackend``
makes the legacy-settings tests that build ``smtp.EmailBackend(...)`` directly (and the
inline subclass of ``test_connection_timeout_custom``) use ours. The stopped-server case
builds its backend in ``setUpClass`` (outside the patch), so its subclass rebuilds it.
"""

from __future__ import annotations

import email.policy as email_policy
import logging
from unittest import expectedFailure, mock

import structlog
from django.core.mail import EmailMessage
from django.core.mail.backends import smtp
from mail import test_backends as django_tests  # type: ignore[import-not-found]  # the sdist's tests/

from mailpolicy.django import EmailBackend

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

#: Accepted exceptions, each with its reason in docs/django.md.
EXCEPTIONS = (
    # Mocks connection.sendmail() and expects one call. mailpolicy sends MAIL, RCPT and
    # DATA itself: sendmail() cannot tell a drop after the final dot (the server may
    # have the message: ambiguous, never retried inline) from one before it.
    "test_serialized_message_uses_crlf_line_ending",
    # Asserts smtplib.SMTP(host, port, local_hostname=...) without a timeout. Ours always
    # passes a finite one (the policy's attempt_timeout while timeout is None): without
    # it a server that accepts the connection and never greets hangs the request.
    "test_smtp_connection_uses_host_and_port",
)


@mock.patch("django.core.mail.backends.smtp.EmailBackend", EmailBackend)
class MailpolicySMTPBackendTests(django_tests.SMTPBackendTests):  # type: ignore[misc]
    backend_class = EmailBackend

    def test_mailpolicy_backend_in_use(self) -> None:
        """Sanity: both routes really build mailpolicy's backend."""
        assert smtp.EmailBackend is EmailBackend  # type: ignore[comparison-overlap]  # patched
        assert isinstance(self.create_backend(), EmailBackend)

    def test_mailpolicy_unicode_domains_as_idna_2008(self) -> None:
        """Beyond Django's own test_encodes_idna_in_smtp_commands: prep_address() converts
        with IDNA 2003 (faß -> fass, βόλος -> βόλοσ: other domains); ours, IDNA 2008."""
        email = EmailMessage(
            from_email="lists@discussão.example.org", to=["to@faß.example", "cc@βόλος.example"]
        )
        self.create_backend().send_messages([email])
        envelope = self.get_smtp_envelopes()[0]
        assert envelope["mail_from"] == "lists@xn--discusso-xza.example.org"
        assert envelope["rcpt_tos"] == ["to@xn--fa-hia.example", "cc@xn--nxasmm1c.example"]
        # ... and the headers say the same (Django writes them with IDNA 2003 as well).
        message = self.get_the_message()
        assert message["To"] == "to@xn--fa-hia.example, cc@xn--nxasmm1c.example"
        assert message["From"] == "lists@xn--discusso-xza.example.org"

    def test_mailpolicy_headers_left_alone_without_a_unicode_domain(self) -> None:
        """A message in another charset whose display name it cannot encode: Django 6.1
        writes it in UTF-8; the IDNA rewrite must not touch such a header (it raised
        UnicodeEncodeError: second diff review)."""
        email = EmailMessage(to=["Jürgen Ł <j@example.org>"])
        email.encoding = "iso-8859-1"
        self.create_backend().send_messages([email])
        assert self.get_the_message()["To"] == "Jürgen Ł <j@example.org>"

    def test_mailpolicy_a_long_unicode_name_beside_a_unicode_domain(self) -> None:
        """A long non-ASCII display name was folded before the header policy saw it, which
        refuses line breaks: the send raised, even with fail_silently (fourth review)."""
        name = "Jürgen Ölsen-Müllerstraße von und zu Großherzogtum Württemberg-Hohenzollern"
        email = EmailMessage(to=["bob@example.org"], reply_to=[f"{name} <help@straße.example>"])
        assert self.create_backend().send_messages([email]) == 1
        message = self.get_the_message()
        assert message["Reply-To"] == f"{name} <help@xn--strae-oqa.example>"

    def test_mailpolicy_a_comma_in_a_unicode_name_stays_in_the_name(self) -> None:
        """The rewrite wrote "Smith, =?utf-8?...?= <j@...>": two addresses (fifth review)."""
        email = EmailMessage(to=['"Smith, Jürgen" <j@münchen.example>'])
        self.create_backend().send_messages([email])
        (address,) = self.get_the_message()["To"].addresses
        assert (address.display_name, address.addr_spec) == (
            "Smith, Jürgen",
            "j@xn--mnchen-3ya.example",
        )

    def test_mailpolicy_a_header_the_address_classes_refuse_keeps_djangos(self) -> None:
        """An address headerregistry refuses ("@x.org": HeaderParseError, not a
        ValueError) or getaddresses cannot read ("x@[127.0.0.1]" on 3.13) beside a
        Unicode domain: Django's header is kept and the send goes on (sixth review)."""
        email = EmailMessage(to=["bob@example.org"], reply_to=["Ann <help@faß.example>", "@x.org"])
        assert self.create_backend().send_messages([email]) == 1
        literal = EmailMessage(to=["bob@example.org"], headers={
            "Cc": "ann@faß.example, x@[127.0.0.1]"
        })  # fmt: skip
        self.flush_mailbox()
        assert self.create_backend().send_messages([literal]) == 1
        assert "127.0.0.1" in str(self.get_the_message()["Cc"])
        # ... also beside an empty group, which alone may be skipped (seventh review).
        grouped = EmailMessage(to=["bob@example.org"], headers={
            "Cc": "undisclosed-recipients:;, x@[127.0.0.1], ann@faß.example"
        })  # fmt: skip
        self.flush_mailbox()
        assert self.create_backend().send_messages([grouped]) == 1
        assert "127.0.0.1" in str(self.get_the_message()["Cc"])

    def test_mailpolicy_a_domain_only_idna_2003_writes_keeps_djangos_header(self) -> None:
        """bob@☃.example has no IDNA 2008 form: the header stays Django's, the send goes
        on for the others (the rewrite raised UnicodeEncodeError: third diff review)."""
        email = EmailMessage(to=["ann@example.org", "bob@☃.example"])
        assert self.create_backend().send_messages([email]) == 1
        assert self.get_smtp_envelopes()[0]["rcpt_tos"] == ["ann@example.org"]

    def test_mailpolicy_the_rewrite_is_djangos_header_with_idna_2008(self) -> None:
        """The rewrite re-parsed with getaddresses, not Django's parser (eighth review):
        a ":;" inside a quoted name was counted as an empty group and let an unreadable
        entry be dropped; a domain IDNA 2008 refuses beside one it converts went out as
        an encoded-word; comments became or changed display names. Now each header is
        Django's own, address by address, with only the domains converted."""
        from mailpolicy._address import a_label

        cases = [
            ['"Support: ; Team" <help@faß.example>', "ops@[192.0.2.1]"],
            ["help@faß.example", "Desk <desk@☃.example>"],
            ["help@faß.example (Büro)", "Ann (work) Smith <ann@faß.example>"],
            ["ann@faß.example (Ann :; work)", "bob@[192.0.2.1]"],
            ['"Smith, Jürgen" <j@münchen.example>', "plain@example.org"],
        ]
        for reply_to in cases:
            email = EmailMessage(to=["bob@example.org"], reply_to=reply_to)
            django_header = email.message(policy=email_policy.SMTP)["Reply-To"]  # type: ignore[call-arg]  # 6.1 only; stubs are 5.2s
            self.flush_mailbox()
            assert self.create_backend().send_messages([email]) == 1, reply_to
            ours = self.get_the_message()["Reply-To"]
            expected = []
            for given, rendered in zip(
                email_policy.SMTP.header_factory("Reply-To", ", ".join(reply_to)).addresses,
                django_header.addresses,
                strict=True,
            ):
                try:
                    domain = a_label(given.domain)
                except Exception:  # no IDNA 2008 form: Django's
                    domain = rendered.domain
                expected.append((rendered.display_name, rendered.username, domain))
            got = [(a.display_name, a.username, a.domain) for a in ours.addresses]
            assert got == expected, (reply_to, got, expected)

    def test_mailpolicy_an_address_sender_and_other_address_headers(self) -> None:
        """A from_email given as an email.headerregistry.Address failed the send with a
        TypeError, and Sender / Resent-From kept IDNA 2003 (ninth review)."""
        from email.headerregistry import Address

        email = EmailMessage(
            from_email=Address("Jörg", "j", "faß.example"),  # type: ignore[arg-type]  # Django takes any str()-able
            to=["bob@example.org"],
            headers={"Sender": "s@faß.example", "Resent-From": "r@straße.example"},
        )
        assert self.create_backend().send_messages([email]) == 1
        message = self.get_the_message()
        assert message["From"].addresses[0].addr_spec == "j@xn--fa-hia.example"
        assert message["Sender"] == "s@xn--fa-hia.example"
        assert message["Resent-From"] == "r@xn--strae-oqa.example"


for _name in EXCEPTIONS:
    setattr(
        MailpolicySMTPBackendTests,
        _name,
        expectedFailure(getattr(MailpolicySMTPBackendTests, _name)),
    )


class MailpolicySMTPBackendStoppedServerTests(django_tests.SMTPBackendStoppedServerTests):  # type: ignore[misc]
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # starts, builds Django's backend, stops the server
        cls.backend = EmailBackend(
            alias="test_alias",
            host=cls.smtp_controller.hostname,
            port=cls.smtp_controller.port,
            username="",
            password="",
        )

    def test_mailpolicy_backend_in_use(self) -> None:
        assert isinstance(self.backend, EmailBackend)
