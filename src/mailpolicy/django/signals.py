"""Django signals, one per recipient outcome of every message the backend sends.

Each is sent with ``sender=mailpolicy.django.EmailBackend`` (the class) and the keyword
arguments ``message`` (the Django ``EmailMessage``), ``outcome`` (its
:class:`~mailpolicy.RecipientOutcome`), ``report`` (the message's
:class:`~mailpolicy.DeliveryReport`) and ``backend`` (the instance that sent it)::

    from django.dispatch import receiver
    from mailpolicy.django import EmailBackend
    from mailpolicy.django.signals import bounced

    @receiver(bounced, sender=EmailBackend)
    def mark_address_bad(sender, message, outcome, **kwargs):
        if outcome.reason in {"mailbox_unknown", "domain_not_found"}:
            User.objects.filter(email__iexact=outcome.recipient).update(email_bad=True)

Receivers run after the message went out (``send_robust``): an exception in a receiver
is logged as ``mail.signal_error`` and never turns a sent message into a failed send
(a caller retrying it would deliver it twice).
"""

from __future__ import annotations

from typing import Final

from django.dispatch import Signal

delivered: Final = Signal()
"""The server accepted the message for this recipient."""
deferred: Final = Signal()
"""A transient failure: ``outcome.next_attempt_at`` says when it is due again."""
bounced: Final = Signal()
"""A permanent failure (``outcome.reason`` says why)."""
suppressed: Final = Signal()
"""The address is on the suppression list: nothing was sent to it."""
held: Final = Signal()
"""A failure of our own configuration (AUTH, TLS, relaying): kept for the operator."""
invalid: Final = Signal()
"""Pre-validation refused the address: no SMTP command named it."""

#: The signal for each state of :data:`mailpolicy.STATES`.
BY_STATE: Final[dict[str, Signal]] = {
    "delivered": delivered,
    "deferred": deferred,
    "bounced": bounced,
    "suppressed": suppressed,
    "held": held,
    "invalid": invalid,
}

__all__ = ["BY_STATE", "bounced", "deferred", "delivered", "held", "invalid", "suppressed"]
