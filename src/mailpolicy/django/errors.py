"""Errors of the Django backend: misconfiguration, and messages left undelivered."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

from .._errors import ConfigurationError, MailPolicyError
from .._events import RecipientStyle, show_recipient
from .._outcome import DeliveryReport

if TYPE_CHECKING:
    from django.core.mail import EmailMessage


class ImproperlyConfiguredError(ImproperlyConfigured, ConfigurationError):
    """A setting (``MAILPOLICY[...]``, an ``EMAIL_*`` setting or a ``MAILERS`` option)
    is wrong; the message names it and what was expected. Both Django's
    ``ImproperlyConfigured`` and a ``ValueError`` (:class:`mailpolicy.ConfigurationError`),
    so code catching either sees it."""


class DeliveryIncomplete(smtplib.SMTPException, MailPolicyError):  # noqa: N818 - reads as a state, like smtplib's SMTPRecipientsRefused
    """Some message had a recipient left ``deferred`` or ``held`` and no store kept it.

    Raised by ``send_messages()`` after the whole batch was tried (so ``sent`` counts the
    messages accepted for delivery, as its return value would have), unless
    ``fail_silently``. ``reports`` and ``messages`` are the incomplete messages' delivery
    reports and Django messages, in order; ``report`` is the first report. An
    ``smtplib.SMTPException`` (and so an ``OSError``), like the errors Django's SMTP
    backend raises on failure.
    """

    def __init__(
        self,
        incomplete: Sequence[tuple[EmailMessage, DeliveryReport]],
        *,
        sent: int,
        recipient_style: RecipientStyle = "mask",
    ) -> None:
        self.messages = [m for m, _ in incomplete]
        self.reports = [r for _, r in incomplete]
        self.report = self.reports[0]
        self.sent = sent
        details = []
        for report in self.reports:
            pending = ", ".join(
                f"{show_recipient(o.recipient, recipient_style)} {o.state} ({o.reason}"
                + (f", {o.code}" if o.code is not None else "")
                + (f" {o.status}" if o.status else "")
                + (", ambiguous" if o.ambiguous else "")
                + ")"
                for o in report.pending
            )
            details.append(f"{report.message_id}: {pending}")
        count = len(self.reports)
        noun = "message has" if count == 1 else "messages have"
        super().__init__(
            f"{count} {noun} recipients neither delivered nor refused, and no "
            "MAILPOLICY['STORE'] keeps them for a later attempt: " + "; ".join(details)
        )


__all__ = ["DeliveryIncomplete", "ImproperlyConfiguredError"]
