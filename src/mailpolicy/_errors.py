"""The exception family of mailpolicy.

::

    MailPolicyError                      every error this library raises on purpose
    ├── ConfigurationError (ValueError)  a Sender or integration set up wrongly (names the
    │                                    option: e.g. AUTH over plaintext without
    │                                    allow_insecure_auth)
    ├── InvalidInputError (TypeError)    a value of the wrong type handed to a public function
    ├── MessageError (ValueError)        a message that cannot be sent as given (no
    │                                    recipients, header injection, unserialisable)
    ├── PolicyError (ValueError)         a policy or rule file is unreadable or invalid
    ├── DeliveryIncomplete (smtplib.SMTPException)  the integrations: a recipient left
    │                                    deferred or held with no store to keep it
    ├── DsnError (ValueError)            a bounce message that is not an RFC 3464 DSN
    │                                    (defined in _dsn)
    ├── StageError                       Sender.open(): the connection could not be
    │                                    set up (connect, greeting, EHLO, STARTTLS,
    │                                    AUTH); carries the verdict (defined in _session)
    └── StoreError (RuntimeError)        the outbox store cannot be opened, read or
        │                                written (defined in _store)
        └── StoreBusyError               another connection held the write lock past
                                         the busy timeout; retrying may succeed

Each names what was wrong and where (file, dotted key path).
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._events import RecipientStyle
    from ._outcome import DeliveryReport


class MailPolicyError(Exception):
    """Base class of every error raised on purpose by mailpolicy."""


class ConfigurationError(MailPolicyError, ValueError):
    """A Sender or integration was set up wrongly; the message names the option."""


class InvalidInputError(MailPolicyError, TypeError):
    """A public function was handed a value of a type it does not take."""


class MessageError(MailPolicyError, ValueError):
    """A message cannot be sent as given: no sender or recipients, CR/LF/NUL in a header
    value, or it cannot be serialised. A programming error, not a delivery outcome."""


class PolicyError(MailPolicyError, ValueError):
    """A policy or rule file is unreadable or invalid.

    ``source`` is the file (or ``"<builtin>"``), ``path`` the dotted key path inside it
    (``rules[2].when.enhanced``), empty when the error concerns the whole file.
    """

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {problem}")


class DeliveryIncomplete(smtplib.SMTPException, MailPolicyError):  # noqa: N818 - a state, like smtplib's SMTPRecipientsRefused
    """Some message has a recipient still ``deferred`` or ``held`` and no durable store
    keeps it: nothing will try it again. The Django backend and the Flask integration
    raise it (as Django's SMTP backend raises on failure) unless ``fail_silently``, after
    every message of the call was tried.

    ``reports`` and ``messages`` are the incomplete messages' delivery reports and the
    messages, in order; ``report`` is the first report; ``sent`` counts the messages
    accepted for delivery. Delivered recipients *were* delivered: never resend to them.
    An ``smtplib.SMTPException`` (and so an ``OSError``). Recipients in the message text
    are shown as events show them (masked by default).
    """

    def __init__(
        self,
        incomplete: Sequence[tuple[object, DeliveryReport]],
        *,
        sent: int,
        recipient_style: RecipientStyle = "mask",
        store_setting: str = "a store",
    ) -> None:
        from ._events import show_recipient  # noqa: PLC0415 - keep this module light

        self.messages = [m for m, _ in incomplete]
        self.reports = [r for _, r in incomplete]
        self.report = self.reports[0]
        self.sent = sent
        self.recipient_style: RecipientStyle = recipient_style
        self.store_setting = store_setting
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
            details.append(
                f"{report.message_id}: {len(report.pending)} of {len(report.outcomes)} "
                f"recipients pending: {pending}"
            )
        count = len(self.reports)
        noun = "message has" if count == 1 else "messages have"
        super().__init__(
            f"{count} {noun} recipients neither delivered nor refused, and no "
            f"{store_setting} keeps them for a later attempt: " + "; ".join(details)
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_incomplete,
            (
                list(zip(self.messages, self.reports, strict=True)),
                self.sent,
                self.recipient_style,
                self.store_setting,
            ),
        )


def _rebuild_incomplete(
    incomplete: list[tuple[object, DeliveryReport]],
    sent: int,
    style: RecipientStyle,
    store_setting: str = "a store",
) -> DeliveryIncomplete:
    return DeliveryIncomplete(
        incomplete, sent=sent, recipient_style=style, store_setting=store_setting
    )
