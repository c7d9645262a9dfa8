"""``python manage.py mailpolicy_worker [--once] [--lease 15m] [--poll 5s]``: deliver
the outbox of ``MAILPOLICY["STORE"]`` through the site's relay (``EMAIL_HOST``,
``EMAIL_PORT``, ``EMAIL_USE_TLS``/``EMAIL_USE_SSL``, ``EMAIL_HOST_USER``/``PASSWORD``,
``EMAIL_TIMEOUT``, ``EMAIL_SSL_CERTFILE``/``KEYFILE``), with the policies of
``MAILPOLICY["POLICY"]`` and ``MAILPOLICY["POLICIES"]``.

SIGTERM or SIGINT: finish the message in hand, release what is claimed, exit 0. Several
workers may share one store (claims are leased)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.mail.utils import DNS_NAME
from django.core.management.base import BaseCommand, CommandError, CommandParser

from .... import _appworker
from ...._errors import ConfigurationError
from ._common import site_backend, site_store


def _duration(text: str) -> float:
    try:
        return _appworker.duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class Command(BaseCommand):
    help = (
        "Deliver due messages from the outbox (MAILPOLICY['STORE']) and keep going; with "
        "--once, deliver what is due now and exit. SIGTERM/SIGINT stop it gracefully."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="deliver what is due now, then exit"
        )
        parser.add_argument(
            "--lease",
            type=_duration,
            default=_appworker.DEFAULT_LEASE,
            help="how long a claimed message stays this worker's (default 15m)",
        )
        parser.add_argument(
            "--poll",
            type=_duration,
            default=_appworker.DEFAULT_POLL,
            help="idle wait between scans of the outbox (default 5s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = site_backend()
        store = site_store(backend, "mailpolicy_worker")
        settings = backend.options
        login = bool(backend.username and backend.password)
        security = backend.security
        try:
            worker = _appworker.AppWorker(
                store,
                backend.host,
                backend.port,
                policies=[settings.policy, *settings.policies.values()],
                security=security,
                username=backend.username if login else None,
                password=backend.password if login else None,
                allow_insecure_auth=settings.allow_insecure_auth,
                lease=options["lease"],
                sender_options={
                    "ssl_context": backend.ssl_context if security != "none" else None,
                    "timeout": backend.timeout,
                    "local_hostname": DNS_NAME.get_fqdn(),
                    "recipient_style": settings.recipient_style,
                },
            )
        except ConfigurationError as exc:
            raise CommandError(f"mailpolicy_worker: EMAIL_*/MAILPOLICY settings: {exc}") from exc
        stats = _appworker.run(worker, once=options["once"], poll=options["poll"])
        self.stdout.write(_appworker.summary(worker, stats))
