"""The ``mailpolicy`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from . import __version__
from ._classify import Verdict, classify
from ._errors import MailPolicyError
from ._vocab import STAGES, Stage

#: Exit status when the command ran but some recipient was not delivered.
EXIT_UNDELIVERED = 2


def _verdict_line(reply: str, v: Verdict) -> str:
    code = "-" if v.code is None else str(v.code)
    status = v.status or "-"
    flags = f"retry={'yes' if v.retry else 'no'} suppress={'yes' if v.suppress else 'no'}"
    after = f" retry_after={v.retry_after}s" if v.retry_after is not None else ""
    first_line = reply.splitlines()[0] if reply.strip() else repr(reply)
    return (
        f"{code:>3} {status:<7} {v.kind:<9} {v.reason:<20} {flags} scope={v.scope}{after}"
        f" rule={v.rule}\n    {first_line[:100]}"
    )


def _cmd_classify(args: argparse.Namespace, out: TextIO) -> int:
    if args.jsonl:
        if args.replies:
            raise SystemExit("mailpolicy classify: --jsonl reads standard input; give no REPLY")
        return _classify_jsonl(sys.stdin.buffer, out, default_stage=args.stage)
    if not args.replies:
        raise SystemExit("mailpolicy classify: give at least one REPLY, or --jsonl")
    for reply in args.replies:
        # A shell argument cannot hold CR/LF easily; accept the two-character "\n" too.
        text = reply.replace("\\r\\n", "\r\n").replace("\\n", "\n")
        v = classify(text, stage=args.stage, host=args.host)
        out.write((json.dumps(v.to_dict()) if args.json else _verdict_line(text, v)) + "\n")
    return 0


def _classify_jsonl(stdin: Any, out: TextIO, *, default_stage: Stage | None) -> int:
    """One verdict (or one error object) per input line; never stops on a bad line."""
    for number, raw in enumerate(stdin, start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            if isinstance(item, str):
                reply, stage, host = item, default_stage, None
            elif isinstance(item, dict) and isinstance(item.get("reply"), str):
                reply = item["reply"]
                stage = item.get("stage", default_stage)
                host = item.get("host")
            else:
                raise ValueError('expected a JSON string or an object with a "reply" string')
            result = classify(reply, stage=stage, host=host).to_dict()
        except (ValueError, MailPolicyError) as exc:
            result = {"error": str(exc), "line": number}
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


def _cmd_policy_check(args: argparse.Namespace, out: TextIO) -> int:
    from ._policy_load import check_policy_files  # noqa: PLC0415 - keep start-up light

    errors = check_policy_files(args.files)
    for error in errors:
        print(f"mailpolicy: {error}", file=sys.stderr)
    if not errors:
        out.write(f"{len(args.files)} policy file(s) OK\n")
    return 1 if errors else 0


def _cmd_policy_explain(args: argparse.Namespace, out: TextIO) -> int:
    from ._explain import explain, render_explanation  # noqa: PLC0415
    from ._policy_load import load_policy  # noqa: PLC0415

    policy = load_policy(args.policy)
    text = args.reply.replace("\\r\\n", "\r\n").replace("\\n", "\n")
    explanation = explain(policy, reply=text, stage=args.stage, domain=args.domain)
    if args.json:
        out.write(json.dumps(explanation.to_dict(), default=str) + "\n")
    else:
        out.write(render_explanation(explanation) + "\n")
    return 0


def _cmd_send(args: argparse.Namespace, out: TextIO) -> int:
    import os  # noqa: PLC0415
    from email.message import EmailMessage  # noqa: PLC0415

    from ._sender import Sender  # noqa: PLC0415

    password = None
    if args.username is not None:
        if not args.password_env or args.password_env not in os.environ:
            raise SystemExit(
                "mailpolicy send: --username needs --password-env VAR naming a set variable"
            )
        password = os.environ[args.password_env]
    message = EmailMessage()
    message["From"] = args.sender
    message["To"] = ", ".join(args.to)
    message["Subject"] = args.subject
    body = args.body
    if args.body_file is not None:
        with open(args.body_file, encoding="utf-8") as fh:
            body = fh.read()
    message.set_content(body)
    with Sender(
        args.host,
        args.port,
        policy=args.policy,
        security=args.security,
        username=args.username,
        password=password,
        timeout=args.timeout,
        allow_insecure_auth=args.allow_insecure_auth,
    ) as sender:
        report = sender.send(message, recipients=args.to)
    if args.json:
        out.write(json.dumps(report.to_dict()) + "\n")
    else:
        out.write(f"{report.message_id} via {report.relay} (policy {report.policy})\n")
        for o in report.outcomes:
            reply = " ".join(str(x) for x in (o.code, o.status) if x) or "-"
            when = f" next attempt {o.next_attempt_at.isoformat()}" if o.next_attempt_at else ""
            out.write(
                f"  {o.recipient}: {o.state} ({o.reason}, {reply}, {o.attempts} attempt(s)){when}\n"
            )
    return 0 if report.all_delivered else EXIT_UNDELIVERED


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ._demo import run_demo  # noqa: PLC0415

    return run_demo(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailpolicy",
        description="Dependable outbound e-mail: classify SMTP replies, apply retry policies.",
    )
    parser.add_argument("--version", action="version", version=f"mailpolicy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "classify",
        help="classify SMTP replies",
        description="Classify SMTP replies: one verdict per REPLY, or one JSON verdict per "
        "line of standard input with --jsonl (each line a JSON string or an object with "
        '"reply" and optionally "stage" and "host").',
    )
    c.add_argument(
        "replies", nargs="*", metavar="REPLY", help="reply text, e.g. '550 5.1.1 User unknown'"
    )
    c.add_argument("--stage", choices=STAGES, help="the SMTP stage the reply answered")
    c.add_argument("--host", help="the MX or relay host name (provider rules key on it)")
    c.add_argument("--json", action="store_true", help="print one JSON object per reply")
    c.add_argument("--jsonl", action="store_true", help="read JSON lines from standard input")
    c.set_defaults(handler=_cmd_classify)

    p = sub.add_parser("policy", help="check and explain retry policies")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    pc = psub.add_parser("check", help="validate policy files; exit 1 on errors")
    pc.add_argument("files", nargs="+", metavar="FILE")
    pc.set_defaults(handler=_cmd_policy_check)
    pe = psub.add_parser(
        "explain", help="which rule fires for a reply, the action and the whole schedule"
    )
    pe.add_argument("policy", metavar="POLICY", help="a shipped policy's name or a file")
    pe.add_argument("--reply", required=True, help="the reply text")
    pe.add_argument("--stage", choices=STAGES)
    pe.add_argument("--domain", help="the recipient's domain ([[destinations]] key on it)")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(handler=_cmd_policy_explain)

    s = sub.add_parser(
        "send",
        help="send one message and show each recipient's outcome",
        description="Send one message. Exit status 0 when every recipient was delivered, "
        f"{EXIT_UNDELIVERED} when some was not (deferred, bounced, invalid, held), "
        "1 on errors.",
    )
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int)
    s.add_argument("--security", choices=("starttls", "ssl", "none"), default="starttls")
    s.add_argument("--username")
    s.add_argument("--password-env", metavar="VAR", help="environment variable with the password")
    s.add_argument("--allow-insecure-auth", action="store_true")
    s.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
    s.add_argument("--to", required=True, nargs="+", metavar="ADDRESS")
    s.add_argument("--subject", default="mailpolicy test message")
    s.add_argument("--body", default="Sent by mailpolicy.\n")
    s.add_argument("--body-file")
    s.add_argument("--policy", default="default", help="a shipped policy's name or a file")
    s.add_argument("--timeout", type=float, help="socket timeout per command, seconds")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(handler=_cmd_send)

    d = sub.add_parser(
        "demo", help="deliver through a local SMTP server with scripted faults and show outcomes"
    )
    d.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args, sys.stdout)
    except MailPolicyError as exc:
        print(f"mailpolicy: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `mailpolicy classify --jsonl < big | head`
        return 0
    return code
