"""React to outcomes: here, log dead addresses (a real app would flag the user)."""

import logging
from typing import Any

from django.dispatch import receiver

from mailpolicy import RecipientOutcome
from mailpolicy.django import EmailBackend
from mailpolicy.django.signals import bounced, held

log = logging.getLogger("shop")

DEAD = {"mailbox_unknown", "mailbox_disabled", "domain_not_found", "mailbox_moved"}


@receiver(bounced, sender=EmailBackend)
def address_bounced(sender: type, outcome: RecipientOutcome, **kwargs: Any) -> None:
    if outcome.reason in DEAD:
        # e.g. User.objects.filter(email__iexact=outcome.recipient).update(email_ok=False)
        log.warning("dead address %s: %s", outcome.recipient, outcome.text)


@receiver(held, sender=EmailBackend)
def mail_held(sender: type, outcome: RecipientOutcome, **kwargs: Any) -> None:
    log.error("mail held, check the relay settings: %s (%s)", outcome.reason, outcome.text)
