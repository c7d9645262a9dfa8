"""The ``mailpolicy`` command line."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

from . import __version__
from ._classify import Verdict, classify
from ._errors import MailPolicyError
from ._outcome import STATES
from ._vocab import DEAD_ADDRESS_REASONS, REASONS, STAGES, Stage

#: What an address may be suppressed for by hand: a dead address, or a full mailbox.
SUPPRESSION_REASONS: Final = (
    *(r for r in REASONS if r in DEAD_ADDRESS_REASONS),
    "mailbox_full",
)

if TYPE_CHECKING:
    from ._store import Store
    from ._worker import Worker

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
        if sys.stdin is None:  # started with standard input closed
            raise SystemExit("mailpolicy classify: --jsonl reads standard input, which is closed")
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
        except RecursionError:  # "[[[[..." nested deeper than the JSON decoder goes
            result = {"error": "the JSON value is nested too deeply", "line": number}
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


def _cmd_policy_check(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path  # noqa: PLC0415

    from ._policy_load import (  # noqa: PLC0415 - keep start-up light
        check_policy_files,
        load_policy,
        shipped_policy_names,
    )

    # A shipped policy's name (as `explain` and the settings take it) is checked too,
    # unless a file of that name is in the working directory.
    shipped = set(shipped_policy_names())
    names = [f for f in args.files if f in shipped and not Path(f).exists()]
    errors = check_policy_files([f for f in args.files if f not in names])
    for name in names:
        load_policy(name)
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
    try:
        message["From"] = args.sender
        message["To"] = ", ".join(args.to)
        message["Subject"] = args.subject
    except ValueError as exc:  # a CR or LF in a value: header injection
        raise SystemExit(f"mailpolicy send: --from, --to or --subject: {exc}") from None
    body = args.body
    if args.body_file is not None:
        try:
            with open(args.body_file, encoding="utf-8") as fh:
                body = fh.read()
        except OSError as exc:
            raise SystemExit(f"mailpolicy send: --body-file: {exc}") from None
        except UnicodeDecodeError as exc:
            raise SystemExit(f"mailpolicy send: --body-file is not UTF-8 text: {exc}") from None
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
            # `send` keeps no outbox: a deferred recipient is nobody's to retry, say so.
            when = " not retried (no store)" if o.state in ("deferred", "held") else ""
            out.write(
                f"  {o.recipient}: {o.state} ({o.reason}, {reply}, {o.attempts} attempt(s)){when}\n"
            )
            said = " ".join(o.text.split())
            if said and o.state != "delivered":
                out.write(f"    {said[:200]}\n")
    return 0 if report.all_delivered else EXIT_UNDELIVERED


#: The longest duration an option takes, as a policy's (ten years).
_MAX_DURATION: Final = 3650 * 86400.0


def _duration(text: str) -> float:
    from ._schedule import parse_duration  # noqa: PLC0415

    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as '15m' or '30s'")
    if seconds > _MAX_DURATION:
        # As policies: "--ttl 99999999999d" was written, then every listing of the
        # store failed on a date past year 9999 (fuzz review).
        raise argparse.ArgumentTypeError(f"{text!r} is longer than 3650d (ten years)")
    return seconds


def _limit(text: str) -> int:
    """How many rows a listing shows: 1 to 1,000,000 (a number past SQLite's integers
    raised OverflowError with a traceback: fuzz review)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text} is not from 1 to 1000000")
    return value


def _password(args: argparse.Namespace, command: str) -> str | None:
    import os  # noqa: PLC0415

    if args.username is None:
        return None
    if not args.password_env or args.password_env not in os.environ:
        raise SystemExit(
            f"mailpolicy {command}: --username needs --password-env VAR naming a set variable"
        )
    return os.environ[args.password_env]


def _store_file(url: str) -> Path | None:
    """The absolute path of a SQLite store URL's file (None: in memory)."""
    from ._store import MEMORY, parse_store_url  # noqa: PLC0415

    path = parse_store_url(url).path
    return None if path == MEMORY else Path(path).absolute()


def _existing_store(url: str, command: str) -> Store:
    """Open a store that must already exist: reading or changing an outbox nobody wrote
    to is a mistake, most often a relative ``sqlite:///`` URL resolved from another
    working directory than the application's. Nothing is created."""
    from ._store import open_store, parse_store_url  # noqa: PLC0415

    path = _store_file(url)
    if path is not None and not path.exists():
        relative = not Path(parse_store_url(url).path).is_absolute()
        hint = (
            f" A sqlite:/// URL with three slashes is relative to the working directory "
            f"({Path.cwd()}); give the application's store, e.g. sqlite:///{path}"
            if relative
            else ""
        )
        raise SystemExit(f"mailpolicy {command}: no store at {path} (nothing was created).{hint}")
    return open_store(url)


def _cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from ._policy_load import load_policy  # noqa: PLC0415
    from ._store import open_store  # noqa: PLC0415
    from ._worker import Worker, WorkerStats  # noqa: PLC0415

    if args.concurrency < 1:
        raise SystemExit("mailpolicy worker: --concurrency must be at least 1")
    password = _password(args, "worker")
    known = [load_policy(Path(f)) for f in args.policy_file]  # a bad file: an error now
    stop_event = threading.Event()
    path = _store_file(args.store)
    if path is not None and not path.exists():
        # Created (a worker may start before the application first saves), but said
        # loudly: a relative URL from another directory drains an empty store forever.
        print(
            f"mailpolicy worker: warning: no store at {path} yet; creating an empty one. "
            f"If the application saves elsewhere, give its absolute URL "
            f"(sqlite:////path/to/store.sqlite3)",
            file=sys.stderr,
        )
    stores = [open_store(args.store) for _ in range(args.concurrency)]
    workers = []
    for store in stores:  # one store connection and one SMTP connection per thread
        worker = Worker(
            store,
            args.host,
            args.port,
            security=args.security,
            username=args.username,
            password=password,
            policy=args.policy,
            lease=args.lease,
            allow_insecure_auth=args.allow_insecure_auth,
            all_relays=args.all_relays,
            policies=known,
        )
        worker.stop_requested = stop_event
        workers.append(worker)
    _say_what_the_worker_drains(workers[0], path)

    def stop(signum: int, frame: object) -> None:
        # Finish the current transaction, release what is claimed but unsent, exit 0.
        stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    results: list[WorkerStats] = []
    failures: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            results.append(worker.run_once() if args.once else worker.run_forever(poll=args.poll))
        except Exception as exc:  # reported below, after the other threads are stopped
            failures.append(exc)
            stop_event.set()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)  # short joins keep the main thread responsive to signals
    finally:
        for w in workers:
            w.close()
        for store in stores:
            store.close()
    for exc in failures:
        print(f"mailpolicy worker: error: {type(exc).__name__}: {exc}", file=sys.stderr)
    if failures:
        return 1  # a supervisor (systemd Restart=on-failure) should start it again
    total = WorkerStats()
    for r in results:
        for name in ("claims", "delivered", "deferred", "bounced", "held"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    out.write(
        f"{len(workers)} worker(s): {total.claims} claim(s), {total.delivered} delivered, "
        f"{total.deferred} deferred, {total.bounced} bounced, {total.held} held\n"
    )
    return 0


def _say_what_the_worker_drains(worker: Worker, path: Path | None) -> None:
    """On stderr: the store and relay this worker serves, and any mail pending for other
    relays, which it will not touch (a changed port or host left it behind)."""
    import time  # noqa: PLC0415

    own = worker.relay
    print(
        f"mailpolicy worker: store {path or ':memory:'}, relay {own or 'any (--all-relays)'}",
        file=sys.stderr,
    )
    if own is None:
        return
    others = {
        relay: counts
        for relay, counts in worker.store.pending_by_relay(now=time.time()).items()
        if relay != own
    }
    if others:
        listed = ", ".join(f"{r} ({p} pending, {d} due)" for r, (p, d) in others.items())
        print(
            f"mailpolicy worker: warning: mail saved for other relays is not drained by "
            f"this worker: {listed}; run a worker for each, or --all-relays to send it "
            f"through {own}",
            file=sys.stderr,
        )


def _cmd_outbox(args: argparse.Namespace, out: TextIO) -> int:
    import time  # noqa: PLC0415

    now = time.time()
    with _existing_store(args.store, f"outbox {args.outbox_command}") as store:
        if args.outbox_command == "status":
            counts: dict[str, Any] = dict(store.counts(now=now))
            by_relay = store.pending_by_relay(now=now)
            if args.json:
                counts["relays"] = {r: {"pending": p, "due": d} for r, (p, d) in by_relay.items()}
                out.write(json.dumps(counts) + "\n")
            else:
                out.writelines(f"{k:<12} {v}\n" for k, v in counts.items())
                # A worker drains only the relay a message was saved with: say whose.
                out.writelines(
                    f"relay {r}: {p} pending, {d} due\n" for r, (p, d) in by_relay.items()
                )
        elif args.outbox_command == "show":
            return _show_message(store, args.message_id, json_output=args.json, out=out)
        elif args.outbox_command == "list":
            rows = store.list_recipients(
                state=args.state, message_id=args.message_id, limit=args.limit
            )
            for r in rows:
                if args.json:
                    out.write(json.dumps(r.to_dict(), default=str) + "\n")
                else:
                    nxt = (
                        ""
                        if r.next_attempt_at is None
                        else f" next {int(r.next_attempt_at - now)}s"
                    )
                    out.write(f"{r.message_id} {r.recipient} {r.state} {r.reason} "
                              f"attempts={r.attempts}{nxt}\n")  # fmt: skip
        elif args.outbox_command == "retry-now":
            n = store.retry_now(now=now, message_id=args.message_id, include_held=True)
            out.write(f"{n} recipient(s) due now (held ones released)\n")
            if n == 0 and args.message_id is not None:
                known = store.list_recipients(message_id=args.message_id, limit=1)
                if not known:
                    print(
                        f"mailpolicy outbox retry-now: no message {args.message_id} in the "
                        "store (Message-IDs include their angle brackets)",
                        file=sys.stderr,
                    )
                    return 1
        else:  # purge
            n = store.purge(now=now, older_than=args.older_than)
            out.write(f"{n} message body(ies) purged (the attempt journal is kept)\n")
    return 0


def _show_message(store: Store, message_id: str, *, json_output: bool, out: TextIO) -> int:
    """What happened to one message: each recipient's state now, then every attempt in
    order, with what the server said. Exit status 1 when the store has no such message."""
    from datetime import UTC, datetime  # noqa: PLC0415

    wanted = message_id.strip()
    for candidate in (wanted, f"<{wanted.strip('<>')}>", wanted.strip("<>")):
        recipients = store.list_recipients(message_id=candidate, limit=10_000)
        if recipients:
            break
    else:
        print(f"mailpolicy outbox show: no message {wanted} in the store", file=sys.stderr)
        return 1
    journal = store.journal(message_id=candidate)
    if json_output:
        out.write(
            json.dumps(
                {
                    "message_id": candidate,
                    "recipients": [r.to_dict() for r in recipients],
                    "attempts": [a.to_dict() for a in journal],
                },
                default=str,
            )
            + "\n"
        )
        return 0

    def when(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

    out.write(f"{candidate}\n")
    for r in recipients:
        nxt = "" if r.next_attempt_at is None else f", next attempt {when(r.next_attempt_at)}"
        out.write(f"  {r.recipient}: {r.state} ({r.reason}), {r.attempts} attempt(s){nxt}\n")
    out.write("attempts:\n")
    for a in journal:
        # The reply as the server wrote it (it starts with its code), else code/status.
        said = " ".join(a.text.split()) or " ".join(
            str(x) for x in (a.code, a.status) if x is not None
        )
        out.write(
            f"  {when(a.at)} {a.recipient}: {a.state} ({a.reason}, {a.action or '-'})"
            f"{' ' + said if said else ''}\n"
        )
    return 0


def _expiry(at: float | None) -> str:
    """When a suppression ends, for people: "until 2027-11-28" or "permanent"."""
    if at is None:
        return "permanent"
    from datetime import UTC, datetime  # noqa: PLC0415

    try:
        return f"until {datetime.fromtimestamp(at, UTC).isoformat(timespec='minutes')}"
    except (OverflowError, ValueError, OSError):  # a time no calendar date holds
        return f"until {at:g} (Unix time)"


def _cmd_suppression(args: argparse.Namespace, out: TextIO) -> int:
    import time  # noqa: PLC0415

    from ._store import open_store  # noqa: PLC0415

    now = time.time()
    opened = (
        open_store(args.store)  # the one command that may start a list
        if args.suppression_command == "add"
        else _existing_store(args.store, f"suppression {args.suppression_command}")
    )
    with opened as store:
        if args.suppression_command == "add":
            from ._address import check_address  # noqa: PLC0415

            checked = check_address(args.address, mode="syntax")
            if not checked.ok:
                raise SystemExit(
                    f"mailpolicy suppression add: {args.address!r} is not an address: "
                    f"{checked.error}"
                )
            existing = store.suppressed(args.address, now=now)
            store.add_suppression(
                args.address, reason=args.reason, now=now, ttl=args.ttl, text="added by hand"
            )
            if existing is not None:
                print(
                    f"mailpolicy suppression add: replaced the entry for {args.address} "
                    f"({existing.reason}, {_expiry(existing.expires_at)})",
                    file=sys.stderr,
                )
            until = None if args.ttl is None else now + args.ttl
            where = _store_file(args.store)  # a relative URL may name a new file: say which
            out.write(f"suppressed {args.address} ({_expiry(until)}) in {where or ':memory:'}\n")
        elif args.suppression_command == "remove":
            removed = store.remove_suppression(args.address)
            out.write(f"{'removed' if removed else 'not on the list:'} {args.address}\n")
            return 0 if removed else 1
        else:  # list, export
            entries = store.suppressions(now=now, include_expired=False)
            for e in entries:
                if args.json or args.suppression_command == "export":
                    out.write(json.dumps(e.to_dict(), default=str) + "\n")
                else:
                    reply = " ".join(str(x) for x in (e.code, e.status) if x)
                    out.write(
                        f"{e.address} {e.reason}{' ' + reply if reply else ''} "
                        f"({_expiry(e.expires_at)})\n"
                    )
    return 0


def _cmd_dsn(args: argparse.Namespace, out: TextIO) -> int:
    import time  # noqa: PLC0415

    from ._dsn import MAX_DSN_READ, DsnError, intake_dsn, parse_dsn  # noqa: PLC0415
    from ._policy_load import load_policy  # noqa: PLC0415
    from ._store import open_store  # noqa: PLC0415

    policy = load_policy(args.policy)
    store = open_store(args.store) if args.store else None
    failures = 0
    show_progress = sys.stderr.isatty() and len(args.files) > 1
    try:
        for i, name in enumerate(args.files, start=1):
            if show_progress:
                done = int(30 * i / len(args.files))
                bar = f"\r[{'#' * done}{'.' * (30 - done)}] {i}/{len(args.files)}"
                getattr(sys.stderr, "unescaped", sys.stderr).write(bar)
            try:
                with open(name, "rb") as fh:  # what parse_dsn reads, not /dev/zero's all
                    report = parse_dsn(fh.read(MAX_DSN_READ))
            except (OSError, DsnError) as exc:
                failures += 1
                print(f"mailpolicy dsn: {name}: {exc}", file=sys.stderr)
                continue
            for v in intake_dsn(report, store=store, policy=policy, now=time.time(), source=name):
                if args.json:
                    out.write(json.dumps({"file": name, **v.to_dict()}, default=str) + "\n")
                else:
                    flag = _INTAKE_FLAGS[v.suppression]
                    about = report.original_message_id
                    of = (
                        f" (message {about}{', outbox updated' if v.recorded else ''})"
                        if about
                        else ""
                    )
                    out.write(
                        f"{name}: {v.recipient} {v.dsn_action} {v.verdict.reason}{flag}{of}\n"
                    )
    finally:
        if show_progress:
            sys.stderr.write("\n")
        if store is not None:
            store.close()
    return 1 if failures else 0


#: What `mailpolicy dsn` prints after a recipient: what intake did (DsnVerdict.suppression).
_INTAKE_FLAGS: Final[dict[str, str]] = {
    "added": " -> suppressed",
    "already": " -> already suppressed",
    "no store": " -> would suppress (no --store)",
    "too many": " -> not suppressed: the report names too many dead addresses (forged?)",
    "disabled": " -> not suppressed (the policy's suppression is off)",
    "": "",
}


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

    w = sub.add_parser(
        "worker",
        help="deliver due messages from the outbox",
        description="Deliver due messages from the outbox and keep going (or, with --once, "
        "deliver what is due now and exit). SIGTERM/SIGINT: finish the current transaction, "
        "release leases, exit 0.",
    )
    w.add_argument("--store", required=True, metavar="URL", help="e.g. sqlite:///mail.sqlite3")
    w.add_argument("--host", required=True)
    w.add_argument("--port", type=int, help="default: 587 for starttls, 465 for ssl, 25 for none")
    w.add_argument("--security", choices=("starttls", "ssl", "none"), default="starttls")
    w.add_argument("--username")
    w.add_argument("--password-env", metavar="VAR")
    w.add_argument("--allow-insecure-auth", action="store_true")
    w.add_argument("--policy", help="override the policy each message was sent with")
    w.add_argument(
        "--policy-file",
        action="append",
        default=[],
        metavar="PATH",
        help="a policy file the application sends with (repeatable): messages carry only "
        "the policy's name, so without it a file's policy is not found and 'default' is "
        "used instead",
    )
    w.add_argument("--lease", type=_duration, default=900.0, help="claim lease (default 15m)")
    w.add_argument(
        "--poll", type=_duration, default=5.0, help="idle wait between scans (default 5s)"
    )
    w.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    w.add_argument("--concurrency", type=int, default=1, help="worker threads (default 1)")
    w.add_argument(
        "--all-relays",
        action="store_true",
        help="also deliver messages saved with another relay (default: only this one's)",
    )
    w.set_defaults(handler=_cmd_worker)

    o = sub.add_parser("outbox", help="inspect and steer the outbox")
    osub = o.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    for action, text in (
        ("status", "counts by state"),
        ("list", "recipients in the outbox"),
        ("show", "one message: its recipients and every attempt (the journal)"),
        ("retry-now", "make everything due now, held messages included"),
        ("purge", "purge old delivered/bounced message bodies"),
    ):
        op = osub.add_parser(action, help=text)
        op.add_argument("--store", required=True, metavar="URL")
        op.add_argument("--json", action="store_true")
        if action == "list":
            op.add_argument("--state", choices=STATES)
            op.add_argument("--message-id", help="only this message's recipients")
            op.add_argument("--limit", type=_limit, default=100)
        if action == "show":
            op.add_argument("message_id", metavar="MESSAGE_ID", help="with or without <>")
        if action == "retry-now":
            op.add_argument("--message-id")
        if action == "purge":
            op.add_argument("--older-than", type=_duration, help="default: the store's retention")
        op.set_defaults(handler=_cmd_outbox)

    sp = sub.add_parser("suppression", help="the suppression list")
    ssub = sp.add_subparsers(dest="suppression_command", required=True, metavar="ACTION")
    for action, text in (
        ("list", "the active entries (address, reason, reply, until when)"),
        ("add", "suppress an address by hand (replaces its entry, says so)"),
        ("remove", "take an address off the list; exit 1 if it was not on it"),
        ("export", "the active entries as JSON lines"),
    ):
        sa = ssub.add_parser(action, help=text)
        sa.add_argument("--store", required=True, metavar="URL")
        sa.add_argument("--json", action="store_true")
        if action in ("add", "remove"):
            sa.add_argument("address")
        if action == "add":
            sa.add_argument(
                "--reason", default="mailbox_unknown", choices=SUPPRESSION_REASONS,
                help="why (default mailbox_unknown)",
            )  # fmt: skip
            sa.add_argument("--ttl", type=_duration, help="default: forever")
        sa.set_defaults(handler=_cmd_suppression)

    ds = sub.add_parser(
        "dsn", help="read bounce messages (RFC 3464) and suppress the dead addresses"
    )
    ds.add_argument("files", nargs="+", metavar="FILE")
    ds.add_argument("--store", metavar="URL", help="add hard bounces to this store's list")
    ds.add_argument("--policy", default="default", help="decides suppression and its TTL")
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(handler=_cmd_dsn)

    d = sub.add_parser(
        "demo", help="deliver through a local SMTP server with scripted faults and show outcomes"
    )
    d.set_defaults(handler=_cmd_demo)
    return parser


def _configure_events() -> None:
    """The CLI's stdout carries results (tables, JSON); events go to stderr, info and up,
    unless the embedding program configured structlog itself."""
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        )


#: Control characters other than line feed and tab, C1 ones included (some terminals
#: read U+009B as CSI); a carriage return too, which would let a text overwrite the line
#: it is on (eleventh review). The progress bar writes its own to the stream itself.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _Escaped:
    """A text stream that writes control characters as ``\\xNN``. What the commands
    print comes partly from others (a bounce's addresses and diagnostics, a server's
    reply, the suppression list): a hostile one could otherwise send the terminal escape
    sequences (retitle it, clear it, fake output; security review)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    @property
    def unescaped(self) -> TextIO:
        """The stream itself, for what the command writes of its own (the progress bar)."""
        return self._stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stderr = sys.stderr
    sys.stderr = cast(TextIO, _Escaped(stderr))
    _configure_events()  # events print to the escaped stderr too
    try:
        code: int = args.handler(args, cast(TextIO, _Escaped(sys.stdout)))
    except MailPolicyError as exc:
        print(f"mailpolicy: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `mailpolicy classify --jsonl < big | head`
        return 0
    finally:
        sys.stderr = stderr
    return code
