"""Send one message with mailpolicy.Sender and print what happened to each recipient.

    python examples/plain_script.py --host 127.0.0.1 --port 2525 --security none \\
        --from app@example.com --to ann@example.org --to bob@example.org

The password, if any, comes from the environment (``SMTP_PASSWORD``), never from the
command line. Exit status: 0 when every recipient was delivered, 2 otherwise. The
structured events (one ``mail.delivery`` per recipient) go to structlog's default
output; the summary lines go to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from email.message import EmailMessage

from mailpolicy import Sender


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True, help="the SMTP relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--security", choices=["starttls", "ssl", "none"], default="starttls")
    parser.add_argument("--username", help="AUTH user (password from $SMTP_PASSWORD)")
    parser.add_argument("--from", dest="sender", default="app@example.com")
    parser.add_argument("--to", action="append", required=True, help="repeat for more")
    parser.add_argument("--subject", default="Hello from mailpolicy")
    parser.add_argument("--policy", default="default", help="a shipped name or a .toml path")
    args = parser.parse_args(argv)

    message = EmailMessage()
    message["From"] = args.sender
    message["To"] = ", ".join(args.to)
    message["Subject"] = args.subject
    message.set_content("Sent by examples/plain_script.py.\n")

    password = os.environ.get("SMTP_PASSWORD") if args.username else None
    with Sender(
        args.host,
        args.port,
        security=args.security,
        username=args.username,
        password=password,
        policy=args.policy,
    ) as sender:
        report = sender.send(message)

    for o in report.outcomes:
        reply = " ".join(str(part) for part in (o.code, o.status) if part is not None)
        when = f", next attempt {o.next_attempt_at:%Y-%m-%d %H:%M:%S}Z" if o.next_attempt_at else ""
        sys.stdout.write(
            f"{o.recipient}: {o.state} ({o.reason}{', ' + reply if reply else ''}; "
            f"{o.attempts} attempt(s){when})\n"
        )
    return 0 if report.all_delivered else 2


if __name__ == "__main__":
    sys.exit(main())
