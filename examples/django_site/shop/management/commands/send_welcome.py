"""``python manage.py send_welcome ADDRESS...``: one welcome mail per address, then one
line per recipient. Exit status 2 unless every recipient was delivered."""

from typing import Any

from django.core.mail import EmailMessage, get_connection
from django.core.management.base import BaseCommand, CommandParser

from mailpolicy.django import DeliveryIncomplete


class Command(BaseCommand):
    help = "Send a welcome mail to each address and print what happened to it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addresses", nargs="+")
        parser.add_argument("--policy", help="a MAILPOLICY['POLICIES'] name or a shipped policy")

    def handle(self, *args: Any, addresses: list[str], policy: str | None, **opts: Any) -> None:
        messages = []
        for address in addresses:
            message = EmailMessage("Welcome", "Welcome to the shop.\n", to=[address])
            if policy:
                message.mailpolicy_policy = policy
            messages.append(message)
        ok = True
        with get_connection() as connection:  # one connection for the whole batch
            try:
                sent = connection.send_messages(messages)
            except DeliveryIncomplete as exc:
                sent, ok = exc.sent, False
        for message in messages:
            for o in message.mailpolicy_report.outcomes:
                ok = ok and o.state == "delivered"
                code = f"{o.code} {o.status or ''}".strip() if o.code else "-"
                self.stdout.write(f"{o.recipient}\t{o.state}\t{o.reason}\t{code}\t{o.attempts}")
        self.stdout.write(f"{sent} of {len(messages)} messages sent")
        if not ok:
            raise SystemExit(2)
