"""mailpolicy for Django: ``EMAIL_BACKEND = "mailpolicy.django.EmailBackend"``.

A drop-in subclass of Django's SMTP backend (Django 5.2 and 6.1, legacy ``EMAIL_*``
settings and 6.1's ``MAILERS``) that classifies every reply, retries what is transient
within the policy's in-request budget, and reports one outcome per recipient:
``message.mailpolicy_report`` after a send, the signals in
:mod:`mailpolicy.django.signals`, and the ``mail.delivery`` events. See docs/django.md.

Settings (all optional)::

    MAILPOLICY = {
        "POLICY": "default",                 # a shipped policy's name or a path
        "POLICIES": {"news": "bulk"},        # names for message.mailpolicy_policy
        "ALLOW_INSECURE_AUTH": False,        # AUTH over plaintext (local relays only)
        "RECIPIENT_STYLE": "mask",           # recipients in events/errors: mask|full|hash
        "STORE": "sqlite:////var/lib/app/mail.sqlite3",  # the outbox (or a store object)
    }

With a store, recipients still deferred or held after the in-request retries are saved
before ``send_messages()`` returns and the message counts as sent; the worker delivers
them: ``python manage.py mailpolicy_worker`` (add ``"mailpolicy.django"`` to
``INSTALLED_APPS`` for the management commands). Without one, such a message raises
:class:`DeliveryIncomplete` (the same class as :class:`mailpolicy.DeliveryIncomplete`).
"""

from __future__ import annotations

from ._settings import close_stores
from .backend import EmailBackend
from .errors import DeliveryIncomplete, ImproperlyConfiguredError

__all__ = ["DeliveryIncomplete", "EmailBackend", "ImproperlyConfiguredError", "close_stores"]
