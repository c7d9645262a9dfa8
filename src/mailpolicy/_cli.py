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
