"""``mailpolicy demo``: the library delivering through a real local SMTP server with
scripted faults, and what happened to each recipient.

The server is mailpolicy.testing's (aiosmtpd on a loopback port). The script:

* the first connection is refused with ``421`` at the greeting (retried inline);
* ann@ is greylisted (``450 4.2.0 ... try again in 300 seconds``: deferred);
* bob@ does not exist (``550 5.1.1``: bounced, address suppressed);
* carl@'s mailbox is full (``452 4.2.2``: deferred on the slow schedule);
* dave@ is accepted (delivered, after the 421 retry);
* ``not an address`` never reaches the server (invalid: no 553 to provoke);
* a second message's connection drops after the final dot, before the reply
  (ambiguous: deferred, never retried inline).
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from typing import Any, TextIO

import structlog

from ._outcome import DeliveryReport
from ._relaystate import RelayRegistry
from ._sender import Sender


def _message(subject: str, *to: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "Shop <orders@shop.example>"
    m["To"] = ", ".join(to)
    m["Subject"] = subject
    m.set_content("Thank you for your order.\n")
    return m


def _table(report: DeliveryReport) -> list[str]:
    rows = [("recipient", "state", "reason", "reply", "attempts", "next attempt")]
    for o in report.outcomes:
        reply = " ".join(str(x) for x in (o.code, o.status) if x) or "-"
        when = o.next_attempt_at.strftime("%H:%M:%S UTC") if o.next_attempt_at else "-"
        flag = " (ambiguous)" if o.ambiguous else ""
        rows.append((o.recipient, o.state + flag, o.reason, reply, str(o.attempts), when))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def run_demo(out: TextIO) -> int:
    """Run the walkthrough, writing to ``out``; returns the exit status."""
    try:
        from .testing import DROP, SMTPTestServer  # noqa: PLC0415 - needs the testing extra
    except ImportError as exc:  # pragma: no cover - only without the extra
        out.write(
            f"mailpolicy demo needs the testing extra: pip install 'mailpolicy[testing]' ({exc})\n"
        )
        return 1
    events: list[dict[str, Any]] = []
    with SMTPTestServer(hostname="mx.demo.test") as server:
        script = server.script
        script.greeting("421 4.3.2 mx.demo.test busy, try again later")
        script.rcpt(
            "ann@example.org",
            "450 4.2.0 <ann@example.org>: Recipient address rejected: Greylisted, "
            "try again in 300 seconds",
        )
        script.rcpt(
            "bob@example.org",
            "550 5.1.1 <bob@example.org>: Recipient address rejected: "
            "User unknown in virtual mailbox table",
        )
        script.rcpt(
            "carl@example.org", "452 4.2.2 <carl@example.org>: Mailbox full, quota exceeded"
        )
        out.write(f"SMTP test server on {server.address} (aiosmtpd), scripted faults:\n")
        out.write("  greeting: 421 on the first connection; ann: greylisted; bob: unknown user;\n")
        out.write("  carl: mailbox full; erin: connection dropped after the final dot\n\n")
        with (
            structlog.testing.capture_logs() as captured,
            Sender(server.host, server.port, security="none", relays=RelayRegistry()) as sender,
        ):
            first = sender.send(
                _message(
                    "Order 1001",
                    "ann@example.org",
                    "bob@example.org",
                    "carl@example.org",
                    "dave@example.org",
                    "not an address",
                )
            )
            script.end_of_data(DROP)
            second = sender.send(_message("Order 1002", "erin@example.org"))
        events = [dict(e) for e in captured if e.get("event") == "mail.delivery"]
        for title, report in (("Message 1", first), ("Message 2", second)):
            out.write(f"{title} {report.message_id} (policy {report.policy!r}):\n")
            out.writelines(f"  {line}\n" for line in _table(report))
            out.write("\n")
        out.write(
            f"The server saw {server.connections} connections and "
            f"{len(server.messages)} messages; dave@ received the message exactly "
            f"{server.delivered_to('dave@example.org')} time(s).\n\n"
        )
    out.write("Structured events (one mail.delivery per recipient):\n")
    for e in events:
        out.write(json.dumps(e, default=str, sort_keys=True) + "\n")
    return 0
