"""``python manage.py mailpolicy_suppression list|add|remove [ADDRESS]``: the suppression
list of ``MAILPOLICY["STORE"]`` (addresses no message is sent to: hard bounces, and
those added by hand)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...._vocab import REASONS
from ._common import site_backend, site_store
from .mailpolicy_worker import _duration


class Command(BaseCommand):
    help = "Show or change the suppression list of the outbox (MAILPOLICY['STORE'])."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=("list", "add", "remove"))
        parser.add_argument("address", nargs="?", help="the address (add, remove)")
        parser.add_argument(
            "--reason",
            default="mailbox_unknown",
            choices=REASONS,
            help="why (add; default mailbox_unknown)",
        )
        parser.add_argument("--ttl", type=_duration, help="expire after this long (add)")
        parser.add_argument("--json", action="store_true", help="one JSON object a line (list)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        address = options["address"]
        if action != "list" and not address:
            raise CommandError(f"mailpolicy_suppression {action}: give the ADDRESS")
        if action == "list" and address:
            raise CommandError("mailpolicy_suppression list: takes no ADDRESS")
        store = site_store(site_backend(), "mailpolicy_suppression")
        now = time.time()
        if action == "add":
            entry = store.add_suppression(
                address, reason=options["reason"], now=now, ttl=options["ttl"],
                text="added by hand",
            )  # fmt: skip
            self.stdout.write(f"suppressed {entry.address}")
        elif action == "remove":
            if not store.remove_suppression(address):
                raise CommandError(f"not on the suppression list: {address}")
            self.stdout.write(f"removed {address}")
        else:
            for e in store.suppressions(now=now):
                if options["json"]:
                    self.stdout.write(json.dumps(e.to_dict(), default=str))
                else:
                    code = " ".join(str(p) for p in (e.code, e.status) if p)
                    self.stdout.write(f"{e.address}\t{e.reason}\t{code}".rstrip())
