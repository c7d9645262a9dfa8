"""What the management commands share: the backend's resolved settings and the store."""

from __future__ import annotations

from django.core.management.base import CommandError

from ...._store import Store
from ...backend import EmailBackend
from ...errors import ImproperlyConfiguredError


def site_backend() -> EmailBackend:
    """An :class:`EmailBackend` built from the ``EMAIL_*`` settings and ``MAILPOLICY``,
    checked as for a send (nothing connects). Raises :class:`CommandError`."""
    try:
        return EmailBackend()
    except (ImproperlyConfiguredError, ValueError) as exc:
        raise CommandError(str(exc)) from exc


def site_store(backend: EmailBackend, command: str) -> Store:
    store = backend.options.store
    if store is None:
        raise CommandError(
            f"{command}: no store configured: set MAILPOLICY['STORE'] (e.g. "
            "'sqlite:////var/lib/app/mail.sqlite3'), the outbox this command works on"
        )
    return store
