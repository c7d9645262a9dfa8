"""Errors of the Django backend: misconfiguration, and messages left undelivered.

:class:`DeliveryIncomplete` is :class:`mailpolicy.DeliveryIncomplete` itself (one class
for every integration), re-exported here so ``from mailpolicy.django import
DeliveryIncomplete`` keeps working.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from .._errors import ConfigurationError, DeliveryIncomplete

#: How the backend names the store setting in ``DeliveryIncomplete``'s message.
STORE_SETTING = "MAILPOLICY['STORE']"


class ImproperlyConfiguredError(ImproperlyConfigured, ConfigurationError):
    """A setting (``MAILPOLICY[...]``, an ``EMAIL_*`` setting or a ``MAILERS`` option)
    is wrong; the message names it and what was expected. Both Django's
    ``ImproperlyConfigured`` and a ``ValueError`` (:class:`mailpolicy.ConfigurationError`),
    so code catching either sees it."""


__all__ = ["STORE_SETTING", "DeliveryIncomplete", "ImproperlyConfiguredError"]
