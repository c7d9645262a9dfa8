"""Django 5.2's own SMTP backend tests (``tests/mail/tests.py`` of the Django sdist), run
against ``mailpolicy.django.EmailBackend``. Loaded by ``run_django_smtp_tests.py`` through
Django's ``runtests.py``, with the sdist's ``tests/`` directory on the path.

``email_backend`` swaps the backend for the shared tests (``mail.get_connection()``,
``send_mail()``); the class-level patch of ``django.core.mail.backends.smtp.EmailBackend``
makes the tests that build ``smtp.EmailBackend(...)`` directly build ours (our class keeps
its real base: it was bound at import). The stopped-server case builds its backend in
``setUpClass`` (outside the patch), so its subclass rebuilds it with ours.
"""

from __future__ import annotations

import logging
from unittest import expectedFailure, mock

import structlog
from django.core import mail
from django.core.mail.backends import smtp
from mail import tests as django_tests  # type: ignore[import-not-found]  # the sdist's tests/

from mailpolicy.django import EmailBackend

OURS = "mailpolicy.django.EmailBackend"

# Keep the run's output to unittest's own: mailpolicy's per-recipient events go to
# structlog's default console logger otherwise.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

#: Accepted exceptions (docs/django.md): Django sends to addresses without a domain
#: (#15042, a local MTA appends its own); mailpolicy's pre-validation refuses them by
#: design, so these recipients end ``invalid`` and ``send_mail()`` returns 0.
NO_DOMAIN = ("test_recipient_without_domain", "test_lazy_addresses")


@mock.patch("django.core.mail.backends.smtp.EmailBackend", EmailBackend)
class MailpolicySMTPBackendTests(django_tests.SMTPBackendTests):  # type: ignore[misc]
    email_backend = OURS

    def test_mailpolicy_backend_in_use(self) -> None:
        """Sanity: both routes really build mailpolicy's backend."""
        assert smtp.EmailBackend is EmailBackend  # type: ignore[comparison-overlap]  # patched
        assert isinstance(mail.get_connection(), EmailBackend)
        assert isinstance(smtp.EmailBackend(), EmailBackend)


for _name in NO_DOMAIN:
    setattr(
        MailpolicySMTPBackendTests,
        _name,
        expectedFailure(getattr(MailpolicySMTPBackendTests, _name)),
    )


class MailpolicySMTPBackendStoppedServerTests(django_tests.SMTPBackendStoppedServerTests):  # type: ignore[misc]
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # starts, builds Django's backend, stops the server
        cls.backend = EmailBackend(username="", password="")

    def test_mailpolicy_backend_in_use(self) -> None:
        assert isinstance(self.backend, EmailBackend)
