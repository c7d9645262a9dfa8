r"""How the SQLite outbox store scales, each figure against a baseline measured in the same run.

1. **Enqueue rate**: ``SQLiteStore.save_deferred`` (one transaction per message, as
   ``send()`` does: the message row with its ~1 KB body, one deferred recipient, one
   journal row) against the least any durable enqueue can do: one single-row
   ``INSERT`` of the same bytes into a one-table database with the same settings
   (WAL, the same ``synchronous``, ``foreign_keys``, busy timeout), committed on its own
   (autocommit). Target: store rate >= 50% of the baseline's. Measured under the store's
   default ``synchronous=FULL`` (the pass/fail figure) and under ``NORMAL`` (shown too:
   without the fsync per commit, the cost of the extra B-trees a real outbox row touches
   is visible).
2. **Due-selection**: the query ``claim_due`` runs (``mailpolicy._sqlite.select_due``:
   the first 100 messages with a due recipient, oldest first) in an outbox of 100,000
   deferred messages against one of 1,000 (half of each due, half in the future).
   Target: <= 2x. Shown beside it: ``claim_due`` end to end (the select, the lease
   update, reading the claimed rows, the commit; ``synchronous=NORMAL`` so an fsync
   does not hide the rest), and the same select with ``NOT INDEXED`` (a table scan), to
   show that the figure would catch a missing index.
3. **Worker memory**: the *store side* of a worker loop only (the worker itself is not
   written yet): ``claim_due`` in batches of 100 and ``record_attempt`` (delivered) for
   every message, until the outbox is empty; peak Python heap from ``tracemalloc``
   (SQLite's own page cache is bounded by ``cache_size`` and not seen by tracemalloc),
   10,000 messages against 1,000. Target: <= 1.2x.

How: the two sides of each figure alternate over several rounds (the order flips each
round), the garbage collector is paused while timing, ``time.perf_counter``; medians are
reported. Databases live in a temporary directory (``--dir`` to choose its parent: put
it on the disk the outbox will use, since the fsync cost is the disk's).

Run from the repository root::

    .venv/bin/python bench/outbox.py            # 5 rounds
    .venv/bin/python bench/outbox.py --quick    # smaller and fewer (a smoke run)
"""

from __future__ import annotations

import argparse
import gc
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any, Final

from mailpolicy._message import PreparedMessage, prepare_message
from mailpolicy._sqlite import DUE_QUERY, SQLiteStore, select_due
from mailpolicy._store import Attempt, NewRecipient, RecipientUpdate, Synchronous

T0: Final = 1_700_000_000.0
ENQUEUE_TARGET: Final = 0.5  # store rate / baseline rate, at least
DUE_TARGET: Final = 2.0  # large / small time, at most
MEMORY_TARGET: Final = 1.2  # large / small peak, at most
DUE_LIMIT: Final = 100
BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class Sizes:
    rounds: int
    enqueue_full: int
    enqueue_normal: int
    due_small: int
    due_large: int
    due_calls: int
    memory_small: int
    memory_large: int


FULL_RUN: Final = Sizes(5, 100, 2000, 1000, 100_000, 300, 1000, 10_000)
QUICK_RUN: Final = Sizes(3, 30, 500, 1000, 20_000, 100, 500, 5000)


def sample_message() -> PreparedMessage:
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = "ann@example.org"
    msg["Subject"] = "Your order 12345 has shipped"
    msg.set_content(("Thank you for your order. It is on its way.\n" * 22)[:950])
    return prepare_message(msg)


def deferred(address: str, due: float) -> NewRecipient:
    return NewRecipient(
        recipient=address,
        wire=address,
        state="deferred",
        reason="greylisted",
        code=450,
        status="4.2.0",
        text="Greylisted, try again in 300 seconds",
        attempts=1,
        first_failure_at=T0,
        next_attempt_at=due,
        history=(
            Attempt(
                at=T0,
                state="deferred",
                reason="greylisted",
                code=450,
                status="4.2.0",
                text="Greylisted, try again in 300 seconds",
                rule="greylist.text",
                action="defer",
            ),
        ),
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def timed(work: Callable[[], object]) -> float:
    with gc_paused():
        start = time.perf_counter()
        work()
        return time.perf_counter() - start


def check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"benchmark sanity check failed: {what}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- 1. enqueue rate ------------------------------------------------------------------------


def baseline_connection(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """The store's settings (see SQLiteStore.__init__), on a one-table database."""
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("CREATE TABLE IF NOT EXISTS plain (key INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    return db


def enqueue_figure(
    directory: Path, synchronous: Synchronous, count: int, rounds: int
) -> tuple[float, float]:
    """Median seconds per message: (baseline, store)."""
    prepared = sample_message()
    recipients = [deferred("ann@example.org", T0 + 300)]
    base_times: list[float] = []
    store_times: list[float] = []
    with (
        closing(baseline_connection(directory / f"plain-{synchronous}.db", synchronous)) as db,
        SQLiteStore(directory / f"outbox-{synchronous}.db", synchronous=synchronous) as store,
    ):

        def baseline() -> None:
            for _ in range(count):
                db.execute("INSERT INTO plain (data) VALUES (?)", (prepared.data,))

        def enqueue() -> None:
            for _ in range(count):
                store.save_deferred(
                    prepared, policy="default", relay="relay:25", recipients=recipients, now=T0
                )

        for round_ in range(rounds):
            pair = (baseline, enqueue) if round_ % 2 == 0 else (enqueue, baseline)
            for work in pair:
                elapsed = timed(work) / count
                (base_times if work is baseline else store_times).append(elapsed)
    return statistics.median(base_times), statistics.median(store_times)


# --- 2. due-selection -----------------------------------------------------------------------


def populate(path: Path, count: int) -> None:
    """``count`` one-recipient deferred messages; even ones due (within the last hour),
    odd ones not yet (within the next day)."""
    prepared = sample_message()
    with SQLiteStore(path, synchronous="normal") as store:
        for n in range(count):
            due = T0 - 3600 * (n % 997) / 997 if n % 2 == 0 else T0 + 86400 * (n % 991) / 991
            store.save_deferred(
                prepared,
                policy="default",
                relay="relay:25",
                recipients=[deferred(f"r{n}@example.org", due)],
                now=T0 - 7200,
            )


def scan_due(db: sqlite3.Connection, limit: int) -> list[int]:
    """select_due's walk, with the index forbidden (the sensitivity check)."""
    query = DUE_QUERY.replace("recipients AS r", "recipients AS r NOT INDEXED")
    keys: dict[int, None] = {}
    with closing(db.execute(query, {"now": T0, "relay": None})) as cursor:
        for (key,) in cursor:
            keys[key] = None
            if len(keys) >= limit:
                break
    return list(keys)


def due_figure(directory: Path, sizes: Sizes) -> dict[str, tuple[float, float]]:
    """Median seconds per call, (small, large), for: select, claim (end to end), scan."""
    paths = {size: directory / f"due-{size}.db" for size in (sizes.due_small, sizes.due_large)}
    for size, path in paths.items():
        populate(path, size)
    results: dict[str, dict[int, list[float]]] = {
        name: {size: [] for size in paths} for name in ("select", "claim", "scan")
    }
    readers = {size: sqlite3.connect(path, isolation_level=None) for size, path in paths.items()}
    stores = {size: SQLiteStore(path, synchronous="normal") for size, path in paths.items()}
    try:
        for round_ in range(sizes.rounds):
            order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
            for size in order:
                db = readers[size]
                check(len(select_due(db, now=T0, limit=DUE_LIMIT)) == DUE_LIMIT, "select")

                def select(db: sqlite3.Connection = db) -> None:
                    for _ in range(sizes.due_calls):
                        select_due(db, now=T0, limit=DUE_LIMIT)

                results["select"][size].append(timed(select) / sizes.due_calls)

                store = stores[size]
                claim_times = []
                for _ in range(max(sizes.due_calls // 10, 10)):
                    with gc_paused():
                        start = time.perf_counter()
                        claims = store.claim_due(
                            now=T0, owner="bench", lease_seconds=60, limit=DUE_LIMIT
                        )
                        claim_times.append(time.perf_counter() - start)
                    check(len(claims) == DUE_LIMIT, "claim")
                    for claim in claims:  # put them back, untimed
                        store.release(claim, now=T0)
                results["claim"][size].append(statistics.median(claim_times))

                if round_ == 0:  # a table scan is slow: one round, a few calls
                    results["scan"][size].append(timed(partial(scan_due, db, DUE_LIMIT)))
    finally:
        for reader in readers.values():
            reader.close()
        for opened in stores.values():
            opened.close()
    return {
        name: (
            statistics.median(per_size[sizes.due_small]),
            statistics.median(per_size[sizes.due_large]),
        )
        for name, per_size in results.items()
    }


# --- 3. worker memory (store side) ----------------------------------------------------------


def drain(path: Path) -> tuple[int, int]:
    """The store side of a worker loop: claim batches, record each as delivered. Returns
    (tracemalloc peak in bytes, messages handled)."""
    handled = 0
    with SQLiteStore(path, synchronous="normal") as store:
        gc.collect()
        tracemalloc.start()
        try:
            now = T0 + 86400 * 2  # everything is due
            while claims := store.claim_due(now=now, owner="bench", lease_seconds=60, limit=BATCH):
                for claim in claims:
                    updates = [
                        RecipientUpdate(
                            key=r.key,
                            state="delivered",
                            reason="delivered",
                            code=250,
                            text="2.0.0 Ok: queued as 4Fz1",
                            attempt=Attempt(
                                at=now, state="delivered", reason="delivered", code=250
                            ),
                        )
                        for r in claim.recipients
                    ]
                    store.record_attempt(claim, updates, now=now)
                    handled += 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak, handled


def memory_figure(directory: Path, sizes: Sizes) -> tuple[float, float]:
    """Median tracemalloc peaks in bytes: (small, large)."""
    peaks: dict[int, list[int]] = {sizes.memory_small: [], sizes.memory_large: []}
    for round_ in range(min(sizes.rounds, 3)):
        order = list(peaks) if round_ % 2 == 0 else list(reversed(peaks))
        for size in order:
            path = directory / f"worker-{size}-{round_}.db"
            populate(path, size)
            peak, handled = drain(path)
            check(handled == size, "drain")
            peaks[size].append(peak)
    return (
        statistics.median(peaks[sizes.memory_small]),
        statistics.median(peaks[sizes.memory_large]),
    )


# --- 4. the real worker's memory --------------------------------------------------------------


def _worker_child(conn: Any, path: str, port: int) -> None:
    """In a fresh process: run the worker over the store at ``path``; report
    (peak RSS in KiB, delivered, tracemalloc bytes still live after a full collection)."""
    import resource  # noqa: PLC0415

    from mailpolicy._relaystate import RelayRegistry  # noqa: PLC0415
    from mailpolicy._worker import Worker  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).parent))
    import send as bench_send  # noqa: PLC0415

    bench_send.configure_structlog()
    with SQLiteStore(Path(path), synchronous="normal") as store:
        worker = Worker(
            store, "127.0.0.1", port, security="none", relays=RelayRegistry(),
            sender_options={"local_hostname": "bench.local"}, all_relays=True,
        )  # fmt: skip
        tracemalloc.start()
        stats = worker.run_once()
        gc.collect()  # also empties CPython's free lists, which hold freed blocks
        live = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        worker.close()
    conn.send((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, stats.delivered, live))


def worker_memory_figure(
    directory: Path, small: int, large: int, rounds: int
) -> tuple[float, float, float, float]:
    """Median peak RSS (KiB) of a fresh worker process draining ``small`` and ``large``
    due messages through an aiosmtpd sink process (bench/send.py's), and the Python memory
    still live at the end of each: (rss_small, rss_large, live_small, live_large).

    Peak RSS, not tracemalloc's peak: tracemalloc keeps tracing freed blocks parked on
    CPython's free lists (tuples, dicts, floats) until a full collection empties them, so
    its peak rises with the number of messages processed between collections - bounded
    interpreter caching that would read as growth."""
    import multiprocessing  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).parent))
    import send as bench_send  # noqa: PLC0415

    sink = bench_send.Sink(None)
    ctx = multiprocessing.get_context("spawn")
    rss: dict[int, list[int]] = {small: [], large: []}
    live: dict[int, list[int]] = {small: [], large: []}
    try:
        for round_ in range(rounds):
            for size in (small, large) if round_ % 2 == 0 else (large, small):
                path = directory / f"real-worker-{size}-{round_}.db"
                populate(path, size)
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_child, args=(child, str(path), sink.port))
                proc.start()
                peak, delivered, left = parent.recv()
                proc.join(30)
                check(delivered == size, "real worker")
                rss[size].append(peak)
                live[size].append(left)
    finally:
        sink.stop()
    return (
        statistics.median(rss[small]),
        statistics.median(rss[large]),
        statistics.median(live[small]),
        statistics.median(live[large]),
    )


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 5; 3 quick)")
    parser.add_argument("--dir", type=Path, help="where to make the temporary directory")
    args = parser.parse_args(argv)
    sizes = QUICK_RUN if args.quick else FULL_RUN
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()} {platform.system()}; {sizes.rounds} rounds, medians"
    )
    with tempfile.TemporaryDirectory(prefix="mailpolicy-bench-", dir=args.dir) as temporary:
        directory = Path(temporary)
        print("\n1. Enqueue: save_deferred (1 message, 1 recipient, 1 journal row, ~1.1 KB)")
        print("   vs a single-row INSERT of the same bytes, autocommit, same settings")
        for synchronous, count in (("full", sizes.enqueue_full), ("normal", sizes.enqueue_normal)):
            mode: Synchronous = "full" if synchronous == "full" else "normal"
            base, store = enqueue_figure(directory, mode, count, sizes.rounds)
            ratio = base / store
            label = "the store's default" if mode == "full" else "shown for information"
            status = verdict(ratio >= ENQUEUE_TARGET) if mode == "full" else "info"
            print(
                f"   synchronous={mode:6}  baseline {1 / base:8.0f}/s ({base * 1e6:7.1f} us)  "
                f"store {1 / store:8.0f}/s ({store * 1e6:7.1f} us)  "
                f"rate ratio {ratio:.2f} (target >= {ENQUEUE_TARGET})  {status}  [{label}]"
            )

        print(
            f"\n2. Due-selection: first {DUE_LIMIT} due messages, {sizes.due_large:,} deferred "
            f"vs {sizes.due_small:,}"
        )
        due = due_figure(directory, sizes)
        for name, label in (
            ("select", "select_due (the figure)"),
            ("claim", "claim_due end to end"),
            ("scan", "NOT INDEXED (sensitivity)"),
        ):
            small, large = due[name]
            ratio = large / small
            status = verdict(ratio <= DUE_TARGET) if name == "select" else "info"
            print(
                f"   {label:27} {small * 1e6:9.1f} us vs {large * 1e6:9.1f} us  "
                f"ratio {ratio:6.2f} (target <= {DUE_TARGET})  {status}"
            )

        print(
            f"\n3. Worker memory, store side only (claim_due x{BATCH} + record_attempt), "
            f"tracemalloc peak: {sizes.memory_large:,} messages vs {sizes.memory_small:,}"
        )
        small_peak, large_peak = memory_figure(directory, sizes)
        ratio = large_peak / small_peak
        print(
            f"   {small_peak / 1024:8.1f} KiB vs {large_peak / 1024:8.1f} KiB  ratio {ratio:.2f} "
            f"(target <= {MEMORY_TARGET})  {verdict(ratio <= MEMORY_TARGET)}"
        )

        small_n, large_n = (200, 2000) if args.quick else (1000, 10_000)
        print(
            f"\n4. The real worker (claims, Sender, SMTP to an aiosmtpd sink process, journal, "
            f"events) in a fresh process each: {large_n:,} messages vs {small_n:,}"
        )
        rss_small, rss_large, live_small, live_large = worker_memory_figure(
            directory, small_n, large_n, 1 if args.quick else 3
        )
        ratio = rss_large / rss_small
        print(
            f"   peak RSS   {rss_small / 1024:8.1f} MiB vs {rss_large / 1024:8.1f} MiB  "
            f"ratio {ratio:.2f} (target <= {MEMORY_TARGET})  {verdict(ratio <= MEMORY_TARGET)}"
        )
        print(
            f"   Python memory live at the end: {live_small / 1024:.1f} KiB vs "
            f"{live_large / 1024:.1f} KiB  (info: what stays allocated)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
