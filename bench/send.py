r"""How fast ``Sender.send`` delivers, against raw smtplib ``send_message``.

What is measured (the issue's spec): one-recipient ~1 KB ``EmailMessage`` objects
(1,065 bytes on the wire, as in research/perf-baselines.md; From, To, Subject, Date,
Message-ID given so that both variants send byte-identical data, which the sink
checks by digest) over one reused connection to an aiosmtpd ``Controller`` sink in its
own process on 127.0.0.1. Raw smtplib (``SMTP(..., local_hostname=...)``, EHLO,
``send_message`` per message, QUIT) and ``Sender.send`` (``security="none"``, a fresh
``RelayRegistry``, the same ``local_hostname``; structlog rendering JSON to /dev/null)
alternate run by run; connect + EHLO + N messages + QUIT are inside the timed region of
both; messages (a fresh object per send) are built before timing; the garbage
collector runs as usual, with the pre-built messages frozen out of its way. Each run
checks the sink accepted exactly N messages. Reported: median msg/s of each, the
wall-clock ratio (median Sender time / median raw time) against the 1.15x target,
per-round ratios, client CPU µs/message (``time.process_time``), and the sink's CPU.
``--profile`` says where the time goes three ways: cProfile buckets, stage wrappers
around real sends without the profiler (in situ), and each piece alone in a loop.

Findings, 2026-11-28 (2-vCPU Firecracker VM, CPython 3.11.7; other sessions were
busy on the same machine, so absolute numbers drift between invocations; the ratio
within an invocation is what counts):

=====================  ==========  ============  =========  ===================
run (7 x 1,000)        raw msg/s   Sender msg/s  ratio      client CPU µs/msg
=====================  ==========  ============  =========  ===================
unpinned               1,125       838           1.34       358 -> 685 (+328)
``--pin same``         1,641       1,009         1.63       285 -> 597 (+313)
unpinned, later src    1,008       711           1.42       446 -> 850 (+403)
=====================  ==========  ============  =========  ===================

FAIL against 1.15x. Sender costs ~1.9-2.1x raw smtplib's client CPU: +310-400 µs per
message. The wire is the same (4 round trips, identical bytes). Where the extra goes,
measured in situ with a stub connection (no network, µs per send; raw ``send_message``
is ~200 on the same stub, Sender ~450): ``prepare_message`` 222 (raw smtplib's own
copy + flatten costs about as much; inside it ``eight_bit = any(b > 0x7F ...)`` is
22-25 µs where ``not data.isascii()`` is 0.1, and the later ``_needs_utf8_headers``
re-parses the address headers for another ~30); ``check_address`` x2 71
(email-validator, uncached); the inline tier 49 (a tenacity ``Retrying`` built and run
per send, with ``dataclasses.replace`` of the settings per attempt); the transaction 51
(smtplib's ``mail()``/``rcpt()`` re-parse each address with ``quoteaddr``, ~13 µs;
``classify`` of the final "250" 14); ``_emit`` 38 (structlog: a new logger proxy per
event, then the JSON rendering, ~10-15 of which is inherent). Per connection,
``Session.open`` builds ``ssl.create_default_context()`` even for ``security="none"``:
19-26 ms, i.e. 20-26 µs per message at 1,000 messages per connection and the whole cost
of a short connection. The sink also spends ~20-50 µs more per message on Sender runs
(the client's larger code footprint on a shared CPU).

Patched copies of the sources (experiments, not applied), ``--pin same`` 5 x 1,000 in one
session: lazy SSL context + ``isascii`` + a 4,096-entry cache of ``check_address``
results + an inline fast path (first attempt called directly, tenacity built only when
a retry is asked for) + a module-level logger: ratio 1.58 -> 1.29, +355 -> +148 µs; plus
MAIL/RCPT through ``putcmd`` without ``quoteaddr`` (addresses are pre-validated) and no
``replace`` when the timeout is unchanged: 1.15, +95 µs. Beating raw smtplib on this
no-retry path needs the preparation cheaper than smtplib's too (it serialises once; a
retry then costs only the wire, which raw smtplib cannot say).

After those fixes were applied to the sources (2026-11-28, 17:07 UTC, the machine
otherwise quiet), with a success fast path for the reply after the final dot and a
single parse of the address headers:

=====================  ==========  ============  =========  ===================
run                    raw msg/s   Sender msg/s  ratio      client CPU µs/msg
=====================  ==========  ============  =========  ===================
unpinned, 7 x 1,000    933         816           1.143      497 -> 605 (+108)
``--pin same``, 5 x    --          --            1.139      387 -> 490 (+103)
=====================  ==========  ============  =========  ===================

PASS, narrowly (per-round ratios 1.02-1.27: noise is of the order of the margin). The
remaining ~100 µs: the structlog JSON event the bench asks for (~30), the per-send
bookkeeping of outcomes and reports (~30), reading the address headers (~15), the
mail.attempt debug event (~8), the rest scattered. Faster than raw smtplib on the
no-retry path would need a cheaper serialisation than the email package's.

2026-11-28, fifth session (after the reply bounds and the out-of-step check): 1.116
and 1.147 (PASS) early in the session; 1.18-1.20 (FAIL) in the last full runs, per-round
ratios 1.11-1.37 on a machine shared with other work. Interleaved quick runs of the
session's first and last code: client CPU +136/+119 us against +160/+127 us a message.
The bounded reply reader costs about 1 us a reply line over CPython's C BufferedReader
(its own buffer, so that bytes waiting after a reply are seen without a system call:
peeking the socket per reply had cost 60 us a message), and a settimeout() per line
only when a deadline is within a tenth of a second. The margin is gone; the next cuts
are the ones listed above.

Run from the repository root::

    .venv/bin/python bench/send.py                 # 7 rounds x 1,000 messages
    .venv/bin/python bench/send.py --quick         # 3 rounds x 300 messages
    .venv/bin/python bench/send.py --pin same      # client and sink on one CPU
    .venv/bin/python bench/send.py --profile       # where the time goes
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import logging
import multiprocessing
import os
import platform
import pstats
import smtplib
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from multiprocessing.connection import Connection
from types import CodeType
from typing import Final, Literal

import structlog

import mailpolicy
from mailpolicy._relaystate import RelayRegistry, RelayState
from mailpolicy._sender import Sender

HOST: Final = "127.0.0.1"
LOCAL_HOSTNAME: Final = "bench.local"
FROM_ADDR: Final = "sender@example.com"
TO_ADDR: Final = "recipient@example.org"
#: The baselines' message size on the wire (research/perf-baselines.md §2).
WIRE_BYTES: Final = 1065
#: The issue's target: Sender wall-clock at most this times raw smtplib's.
TARGET: Final = 1.15

Pin = Literal["none", "same", "cross"]
Variant = Literal["raw", "sender"]


# --- the sink: aiosmtpd in its own process -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SinkStats:
    """What the sink saw since the last query: messages accepted, their bytes (after
    dot-unstuffing), a digest of envelope + content (so two runs can be compared byte
    for byte), and the sink process's CPU seconds (all threads) at query time."""

    count: int
    size: int
    digest: str
    cpu: float


def _sink_main(conn: Connection, cpu: int | None) -> None:
    """The sink process: an aiosmtpd Controller on a free loopback port whose handler
    counts, digests and accepts. Answers ``"stats"`` (and resets) and ``"stop"``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # before the Controller thread starts: inherited
    from aiosmtpd.controller import Controller  # noqa: PLC0415 - only the sink needs it
    from aiosmtpd.smtp import SMTP, Envelope  # noqa: PLC0415
    from aiosmtpd.smtp import Session as SMTPSession  # noqa: PLC0415

    class Handler:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.count = self.size = 0
            self.digest = hashlib.sha256()

        async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: SMTPSession, envelope: Envelope
        ) -> str:
            content = envelope.original_content or b""
            with self.lock:
                self.count += 1
                self.size += len(content)
                self.digest.update(f"{envelope.mail_from}>{envelope.rcpt_tos}\n".encode())
                self.digest.update(content)
            return "250 OK"

        def take(self) -> tuple[int, int, str]:
            with self.lock:
                out = (self.count, self.size, self.digest.hexdigest())
                self.count = self.size = 0
                self.digest = hashlib.sha256()
                return out

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = int(probe.getsockname()[1])
    handler = Handler()
    controller = Controller(handler, hostname=HOST, port=port)
    controller.start()
    conn.send(port)
    try:
        while True:
            command = conn.recv()
            if command == "stats":
                count, size, digest = handler.take()
                conn.send(SinkStats(count, size, digest, time.process_time()))
            else:
                break
    finally:
        controller.stop()
        conn.send("stopped")


class Sink:
    """Starts, queries and stops the sink process."""

    def __init__(self, cpu: int | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_sink_main, args=(child, cpu), daemon=True)
        self._process.start()
        if not self._conn.poll(30):
            raise RuntimeError("the aiosmtpd sink did not start within 30 s")
        self.port: int = self._conn.recv()
        self.pid = self._process.pid

    def stats(self) -> SinkStats:
        self._conn.send("stats")
        stats: SinkStats = self._conn.recv()
        return stats

    def stop(self) -> None:
        self._conn.send("stop")
        if self._conn.poll(10):
            self._conn.recv()
        self._process.join(10)
        if self._process.is_alive():  # pragma: no cover - a stuck sink
            self._process.terminate()
            self._process.join(5)


# --- messages ----------------------------------------------------------------------------


def _body(size: int) -> str:
    line = "The quick brown fox jumps over the lazy dog; pack my box with five dozen."
    text = ""
    while len(text) < size:
        text += line[: max(1, min(len(line), size - len(text) - 1))] + "\n"
    return text


def _message(i: int, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = FROM_ADDR
    msg["To"] = TO_ADDR
    msg["Subject"] = f"Benchmark message {i:06d}"
    msg["Date"] = "Sat, 28 Nov 2026 12:00:00 +0000"
    # Given, so that the Sender (which adds a Message-ID when missing) and smtplib put the
    # same bytes on the wire; the sink's digest checks that they do.
    msg["Message-ID"] = f"<bench.{i:06d}@bench.local>"
    msg.set_content(body)
    return msg


def _fit_body() -> str:
    """A body that makes the message ~WIRE_BYTES on the wire (CRLF, as sent)."""
    head = len(_message(0, "").as_bytes(policy=EmailMessage().policy.clone(linesep="\r\n")))
    return _body(max(1, (WIRE_BYTES - head) * 1000 // 1015))


def build_messages(n: int, body: str) -> list[EmailMessage]:
    """A fresh message object per send (built before any timing)."""
    return [_message(i, body) for i in range(n)]


# --- the two variants --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    variant: Variant
    wall: float
    cpu: float
    sink: SinkStats
    sink_cpu: float


def _check(run_sink: SinkStats, n: int, variant: str) -> None:
    if run_sink.count != n:
        raise SystemExit(f"{variant}: the sink accepted {run_sink.count} messages, not {n}")


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Collect before timing and keep the pre-built messages out of the collector's
    way (``gc.freeze``); the collector stays enabled, as in an application."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def send_raw(port: int, messages: Sequence[EmailMessage]) -> None:
    """Raw smtplib: connect, EHLO, ``send_message`` each, QUIT."""
    with smtplib.SMTP(HOST, port, LOCAL_HOSTNAME, timeout=30) as smtp:
        smtp.ehlo()
        for msg in messages:
            refused = smtp.send_message(msg)
            if refused:
                raise SystemExit(f"raw smtplib: refused {refused}")


def make_sender(port: int) -> Sender:
    return Sender(
        HOST, port, security="none", relays=RelayRegistry(), local_hostname=LOCAL_HOSTNAME
    )


def send_sender(sender: Sender, messages: Sequence[EmailMessage]) -> None:
    """mailpolicy: ``Sender.send`` each on its one reused connection, QUIT on exit."""
    with sender as s:
        reports = [s.send(msg) for msg in messages]
    bad = [r for r in reports if not r.all_delivered]
    if bad:
        raise SystemExit(f"Sender: {len(bad)} messages not delivered, e.g. {bad[0]}")


def timed_run(variant: Variant, sink: Sink, n: int, body: str) -> Run:
    messages = build_messages(n, body)
    sender = make_sender(sink.port) if variant == "sender" else None  # opens nothing
    before = sink.stats()  # resets the sink's counters
    with _quiet_gc():
        c0, t0 = time.process_time(), time.perf_counter()
        if sender is None:
            send_raw(sink.port, messages)
        else:
            send_sender(sender, messages)
        t1, c1 = time.perf_counter(), time.process_time()
    stats = sink.stats()
    _check(stats, n, variant)
    return Run(variant, t1 - t0, c1 - c0, stats, stats.cpu - before.cpu)


# --- setup -------------------------------------------------------------------------------


def configure_structlog() -> None:
    """The issue's configuration: JSON to /dev/null, INFO and above (the debug-level
    ``mail.attempt`` events are filtered, the info-level ``mail.delivery`` rendered)."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(
            file=open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        ),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )


def patch_record_connected() -> bool:
    """``RelayState.record_connected`` is called by the Sender; if this checkout does not
    have it yet, install a no-op. Returns True when patched."""
    name = "record_connected"
    if hasattr(RelayState, name):
        return False

    def record_connected(self: RelayState) -> None:
        return None

    setattr(RelayState, name, record_connected)
    return True


def placement(pin: Pin) -> tuple[int | None, int | None]:
    """(client CPU, sink CPU) for ``--pin``."""
    if pin == "none":
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "cross" and len(cpus) < 2:
        raise SystemExit("--pin cross needs two CPUs")
    return cpus[0], cpus[0] if pin == "same" else cpus[1]


# --- the alternating benchmark -----------------------------------------------------------


def _us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def bench(sink: Sink, rounds: int, n: int, body: str) -> None:
    print(f"warm-up: one run of each variant ({n} messages)")
    warm = [timed_run("raw", sink, n, body), timed_run("sender", sink, n, body)]
    digest = warm[0].sink.digest
    same_bytes = warm[1].sink.digest == digest
    print(
        f"  wire bytes/msg (after dot-unstuffing): raw {warm[0].sink.size / n:,.0f}, "
        f"sender {warm[1].sink.size / n:,.0f}; identical envelopes and content: "
        f"{'yes' if same_bytes else 'NO'}"
    )
    runs: list[tuple[Run, Run]] = []
    header = (
        f"{'round':>5}  {'raw msg/s':>9}  {'sender msg/s':>12}  {'ratio':>6}  "
        f"{'raw cpu':>8}  {'sender cpu':>10}  {'sink raw':>8}  {'sink sender':>11}"
    )
    print(f"\n{rounds} rounds x {n} messages, alternating raw, sender (µs/msg for CPU)")
    print(header)
    for r in range(1, rounds + 1):
        raw = timed_run("raw", sink, n, body)
        snd = timed_run("sender", sink, n, body)
        for run in (raw, snd):
            if run.sink.digest != (digest if run.variant == "raw" else warm[1].sink.digest):
                raise SystemExit(f"{run.variant}: the sink saw other bytes than in warm-up")
        runs.append((raw, snd))
        print(
            f"{r:>5}  {n / raw.wall:>9,.0f}  {n / snd.wall:>12,.0f}  "
            f"{snd.wall / raw.wall:>6.3f}  {_us(raw.cpu, n):>8.0f}  {_us(snd.cpu, n):>10.0f}  "
            f"{_us(raw.sink_cpu, n):>8.0f}  {_us(snd.sink_cpu, n):>11.0f}"
        )
    _summary(runs, n)


def _summary(runs: Sequence[tuple[Run, Run]], n: int) -> None:
    raw_wall = statistics.median(r.wall for r, _ in runs)
    snd_wall = statistics.median(s.wall for _, s in runs)
    ratio = snd_wall / raw_wall
    per_round = [s.wall / r.wall for r, s in runs]
    raw_cpu = statistics.median(_us(r.cpu, n) for r, _ in runs)
    snd_cpu = statistics.median(_us(s.cpu, n) for _, s in runs)
    raw_sink = statistics.median(_us(r.sink_cpu, n) for r, _ in runs)
    snd_sink = statistics.median(_us(s.sink_cpu, n) for _, s in runs)
    print(
        f"{'med':>5}  {n / raw_wall:>9,.0f}  {n / snd_wall:>12,.0f}  {ratio:>6.3f}  "
        f"{raw_cpu:>8.0f}  {snd_cpu:>10.0f}  {raw_sink:>8.0f}  {snd_sink:>11.0f}"
    )
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(
        f"\nwall-clock ratio (median sender time / median raw time): {ratio:.3f}  "
        f"-> {verdict} (target <= {TARGET:.2f}x)"
    )
    print(
        "per-round ratios: "
        + ", ".join(f"{x:.3f}" for x in per_round)
        + f"  (median {statistics.median(per_round):.3f}, "
        f"min {min(per_round):.3f}, max {max(per_round):.3f})"
    )
    print(
        f"client CPU µs/msg (median): raw {raw_cpu:.0f}, sender {snd_cpu:.0f} "
        f"(+{snd_cpu - raw_cpu:.0f} µs, {snd_cpu / raw_cpu:.2f}x)"
    )


# --- --profile: where the time goes ------------------------------------------------------

Fn = tuple[str, str]  # (file name, qualified name); builtins have file "~"


def _fn(code: CodeType | str) -> Fn:
    return ("~", code) if isinstance(code, str) else (code.co_filename, code.co_qualname)


def _is(file: str, *quals: str) -> Callable[[Fn], bool]:
    """Matches functions of a file (by path suffix), optionally only the named ones."""

    def match(fn: Fn) -> bool:
        return fn[0].replace(os.sep, "/").endswith(file) and (not quals or fn[1] in quals)

    return match


class Profiled:
    """Inclusive times out of one cProfile run: of functions, and along call edges
    (the time a callee spent when called from a given caller)."""

    def __init__(self, profiler: cProfile.Profile) -> None:
        self.total = 0.0
        self.inclusive: dict[Fn, float] = {}
        self.edges: dict[tuple[Fn, Fn], float] = {}
        for entry in profiler.getstats():
            fn = _fn(entry.code)
            self.total += entry.inlinetime
            self.inclusive[fn] = self.inclusive.get(fn, 0.0) + entry.totaltime
            for sub in entry.calls or ():
                key = (fn, _fn(sub.code))
                self.edges[key] = self.edges.get(key, 0.0) + sub.totaltime

    def of(self, callee: Callable[[Fn], bool]) -> float:
        return sum(t for fn, t in self.inclusive.items() if callee(fn))

    def via(self, caller: Callable[[Fn], bool], callee: Callable[[Fn], bool]) -> float:
        return sum(t for (a, b), t in self.edges.items() if caller(a) and callee(b))


def _anything(fn: Fn) -> bool:
    return True


def _socket_method(fn: Fn) -> bool:
    return fn[0] == "~" and "_socket.socket" in fn[1]


def sender_buckets(p: Profiled) -> dict[str, float]:
    session = _is("mailpolicy/_session.py")
    events = _is("mailpolicy/_events.py")
    emit = _is("mailpolicy/_sender.py", "Sender._emit")
    attempt = _is("mailpolicy/_sender.py", "Sender._deliver.<locals>.attempt")
    inline = _is("mailpolicy/_inline.py", "InlineRetrier.run", "InlineRetrier.__init__")

    def not_events(fn: Fn) -> bool:
        return not events(fn) and not emit(fn)

    return {
        "message preparation (prepare_message)": p.of(
            _is("mailpolicy/_message.py", "prepare_message")
        ),
        "address validation (check_address, email_validator)": p.of(
            _is("mailpolicy/_address.py", "check_address")
        ),
        "reply classification (classify -> Verdict)": p.via(
            session, _is("mailpolicy/_classify.py")
        ),
        "policy decision (Policy.decide, next_step)": p.of(
            _is("mailpolicy/_policy.py", "Policy.decide")
        )
        + p.of(_is("mailpolicy/_queue.py", "next_step")),
        "inline tier (InlineRetrier + tenacity)": p.of(inline) - p.via(_anything, attempt),
        "smtplib I/O (connect..quit, wall: includes waiting)": p.via(session, _is("smtplib.py"))
        + p.via(session, _socket_method),
        "ssl.create_default_context() per connection": p.via(session, _is("ssl.py")),
        "events (structlog mail.delivery)": p.of(emit) + p.via(not_events, events),
    }


def raw_buckets(p: Profiled) -> dict[str, float]:
    send_message = _is("smtplib.py", "SMTP.send_message")
    sendmail = _is("smtplib.py", "SMTP.sendmail")
    quoting = p.via(_is("smtplib.py", "SMTP.data"), _is("smtplib.py", "_quote_periods"))

    def setup(fn: Fn) -> bool:
        return _is("smtplib.py")(fn) and not send_message(fn)

    return {
        "message preparation (copy, getaddresses, flatten, dot-quoting)": p.of(send_message)
        - p.via(send_message, sendmail)
        + quoting,
        "smtplib I/O (connect..quit, wall: includes waiting)": p.via(send_message, sendmail)
        - quoting
        + p.via(_is("bench/send.py", "send_raw"), setup),
    }


def _print_buckets(title: str, p: Profiled, buckets: dict[str, float], n: int) -> None:
    other = p.total - sum(buckets.values())
    print(f"\n{title}: {p.total / n * 1e6:,.0f} µs/msg under cProfile (wall)")
    for name, t in [*buckets.items(), ("other (glue, outcomes, report, bench loop)", other)]:
        print(f"  {name:<66} {t / n * 1e6:>7,.1f}  {t / p.total:>6.1%}")


def _print_top(profiler: cProfile.Profile, count: int) -> None:
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats("cumulative").print_stats(count)


def _per_call(fn: Callable[[], object], repeat: int) -> float:
    """Median µs per call over 5 batches of ``repeat`` calls."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - t0) / repeat * 1e6)
    return statistics.median(times)


def components(port: int, body: str) -> list[tuple[str, float]]:
    """µs of each piece of one send, each measured alone in a tight loop (warm caches:
    lower than in situ)."""
    import ssl  # noqa: PLC0415 - only --profile needs these

    from mailpolicy._address import check_address  # noqa: PLC0415
    from mailpolicy._classify import classify  # noqa: PLC0415
    from mailpolicy._inline import InlineRetrier  # noqa: PLC0415
    from mailpolicy._message import prepare_message  # noqa: PLC0415
    from mailpolicy._policy import Decision  # noqa: PLC0415

    @dataclass(frozen=True, slots=True)
    class Done:
        decision: Decision
        retry_after: float | None = None

    n = 2000
    crlf = EmailMessage().policy.clone(linesep="\r\n")
    fresh = iter(build_messages(5 * n + 5 * 200, body))
    data = prepare_message(_message(0, body)).data
    sender = make_sender(port)
    policy = sender.policy
    relay = RelayRegistry().get(HOST, port)
    done = Done(Decision(action="deliver", rule="done", retry=False, suppress=False))
    with sender:
        report = sender.send(_message(0, body))
    sock = socket.socket()
    sock.settimeout(1.0)

    def inline() -> object:
        retrier = InlineRetrier(policy.inline, relay=relay, budget=policy.budget)
        return retrier.run(lambda info: done)

    def timeouts() -> None:
        sock.settimeout(600.0)
        sock.settimeout(10.0)

    cases: list[tuple[str, Callable[[], object], int]] = [
        ("prepare_message (fresh message)", lambda: prepare_message(next(fresh)), n),
        ("  of which as_bytes(CRLF policy)", lambda: next(fresh).as_bytes(policy=crlf), 200),
        ("  of which eight_bit = any(b > 0x7F for b in data)", lambda: any(b > 0x7F for b in data), n),  # noqa: E501
        ("  (proposed: not data.isascii())", lambda: not data.isascii(), n),
        ("check_address x2 (From and To)", lambda: (check_address(FROM_ADDR), check_address(TO_ADDR)), n),  # noqa: E501
        ("inline tier: InlineRetrier(...).run(attempt doing nothing)", inline, n),
        ("classify('250 OK', stage='end_of_data')", lambda: classify("250 OK", stage="end_of_data", host=HOST), n),  # noqa: E501
        ("events: Sender._emit(report), 1 recipient", lambda: sender._emit(report), n),
        ("ssl.create_default_context() (per connection)", ssl.create_default_context, 5),
        ("smtplib.quoteaddr x2 (mail()/rcpt() re-parse addresses)", lambda: (smtplib.quoteaddr(FROM_ADDR), smtplib.quoteaddr(TO_ADDR)), n),  # noqa: E501
        ("socket.settimeout x2 (end-of-data timeout, per message)", timeouts, n),
    ]  # fmt: skip
    try:
        return [(name, _per_call(fn, repeat)) for name, fn, repeat in cases]
    finally:
        sock.close()


def in_situ(sink: Sink, n: int, body: str) -> list[tuple[str, float]]:
    """µs per send of each stage of real sends on the real connection, no profiler:
    a perf_counter wrapper around each stage (about 0.3 µs each), removed afterwards."""
    from mailpolicy import _sender, _session  # noqa: PLC0415

    spent: dict[str, float] = {}
    stages = [
        (_sender, "prepare_message", "message preparation (prepare_message)"),
        (_sender, "check_address", "address validation (check_address x2)"),
        (_sender.Sender, "_deliver", "delivery (_deliver: inline tier + attempt)"),
        (_sender.Sender, "_run_attempt", "  the attempt (_run_attempt)"),
        (_session.Session, "open", "    connection setup, once (Session.open, SSL context)"),
        (_session.Session, "_transaction", "    SMTP transaction (wall: includes waiting)"),
        (_session, "classify", "      of which reply classification (classify)"),
        (_sender.Sender, "_emit", "events (_emit: structlog mail.delivery)"),
        (_sender.Sender, "send", "Sender.send, all of it"),
    ]
    saved = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in stages]

    def timed(label: str, fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        return wrapper

    for (owner, attr, label), (_, _, original) in zip(stages, saved, strict=True):
        setattr(owner, attr, timed(label, original))
    try:
        messages = build_messages(n, body)
        sender = make_sender(sink.port)
        sink.stats()
        with _quiet_gc():
            c0 = time.process_time()
            send_sender(sender, messages)
            cpu = time.process_time() - c0
        _check(sink.stats(), n, "sender")
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)
    out = [(label, spent.get(label, 0.0) / n * 1e6) for _, _, label in stages]
    out.append(("client CPU (process_time), per send", cpu / n * 1e6))
    return out


def profile(sink: Sink, n: int, body: str, top: int) -> None:
    send_sender(make_sender(sink.port), build_messages(n, body))  # warm-up
    send_raw(sink.port, build_messages(n, body))
    results: list[tuple[str, cProfile.Profile]] = []
    for variant in ("sender", "raw"):
        messages = build_messages(n, body)
        sender = make_sender(sink.port)
        sink.stats()  # reset the counters
        profiler = cProfile.Profile()
        with _quiet_gc():
            profiler.enable()
            if variant == "raw":
                send_raw(sink.port, messages)
            else:
                send_sender(sender, messages)
            profiler.disable()
        _check(sink.stats(), n, variant)
        results.append((variant, profiler))
    for variant, profiler in results:
        print(f"\n=== {variant}: top {top} by cumulative time, {n} messages ===")
        _print_top(profiler, top)
    sender_p, raw_p = Profiled(results[0][1]), Profiled(results[1][1])
    print("=== where the time goes (µs/msg under cProfile, share of the profiled total) ===")
    _print_buckets("Sender.send", sender_p, sender_buckets(sender_p), n)
    _print_buckets("raw smtplib send_message", raw_p, raw_buckets(raw_p), n)
    print(f"\n=== in situ, no profiler: {n} real sends, stage wrappers (µs per send) ===")
    for name, us in in_situ(sink, n, body):
        print(f"  {name:<62} {us:>9,.1f}")
    print("\n=== the pieces alone, tight loops, warm caches (µs per call, median of 5) ===")
    for name, us in components(sink.port, body):
        print(f"  {name:<62} {us:>9,.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (7)")
    parser.add_argument("--messages", type=int, default=1000, help="messages per run (1000)")
    parser.add_argument("--quick", action="store_true", help="3 rounds x 300 messages")
    parser.add_argument(
        "--pin", choices=("none", "same", "cross"), default="none", help="CPU placement"
    )
    parser.add_argument("--profile", action="store_true", help="say where the time goes")
    parser.add_argument("--profile-messages", type=int, default=300, help="for --profile (300)")
    parser.add_argument("--top", type=int, default=25, help="cProfile rows to show (25)")
    args = parser.parse_args(argv)
    rounds, n = (3, 300) if args.quick else (args.rounds, args.messages)
    pin: Pin = args.pin
    configure_structlog()
    patched = patch_record_connected()
    client_cpu, sink_cpu = placement(pin)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    sink = Sink(sink_cpu)
    try:
        print(
            f"bench/send.py: mailpolicy {mailpolicy.__version__}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, pin={pin}"
        )
        print(f"sink: aiosmtpd Controller, process {sink.pid}, {HOST}:{sink.port}")
        print(
            "RelayState.record_connected: "
            + ("MISSING in this checkout: patched with a no-op" if patched else "present")
        )
        body = _fit_body()
        if args.profile:
            profile(sink, args.profile_messages, body, args.top)
        else:
            bench(sink, rounds, n, body)
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
