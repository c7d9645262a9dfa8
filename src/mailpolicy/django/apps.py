"""``INSTALLED_APPS = [..., "mailpolicy.django"]``: only needed for the management
commands (``mailpolicy_worker``, ``mailpolicy_suppression``); the backend works without
it. The app has no models and no migrations."""

from __future__ import annotations

from django.apps import AppConfig


class MailPolicyConfig(AppConfig):
    name = "mailpolicy.django"
    label = "mailpolicy"
    verbose_name = "mailpolicy"
