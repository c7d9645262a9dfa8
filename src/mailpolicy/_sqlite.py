"""The embedded store: one SQLite file in WAL mode, no server to run.

Durability. ``journal_mode=WAL`` lets readers (``outbox status``) run beside a writer and
several worker processes share the file. ``synchronous=FULL`` (the default) fsyncs the
WAL at every commit: a deferral saved before ``send()`` returns survives a process crash
(SIGKILL) *and* a power loss or OS crash, as far as the disk honours fsync (Postfix
fsyncs its queue files for the same reason). ``synchronous=NORMAL`` skips that fsync: still
durable against any process crash (the committed WAL is in the OS's page cache) and never
corrupt, but the last commits before a power loss may be lost. Writes happen only for
deferrals and worker attempts, so FULL costs little. ``busy_timeout`` is how long a writer
waits for another before :class:`StoreError` "database is locked".

Concurrency. One connection per :class:`SQLiteStore`, guarded by a lock: a store object
may be shared by threads (they take turns); for parallel workers, give each its own store
object or process. Writes use ``BEGIN IMMEDIATE`` (the write lock from the start), so a
claim's select-and-lease cannot interleave with another's. Do not use a store opened
before ``fork()`` in the child (an SQLite rule): open one per process.

Schema: versioned with ``PRAGMA user_version``, created idempotently in one transaction;
a database whose version is newer, or that holds tables of something else, is refused
(nothing is changed). The due-selection walks the partial index ``recipients_due`` on
``next_attempt_at`` of pending rows in time order and stops after ``limit`` messages, so
its cost does not grow with the number of deferred rows that are not selected.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

from ._errors import InvalidInputError
from ._message import PreparedMessage
from ._outcome import STATES, State
from ._store import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_RETENTION,
    FINAL_STATES,
    MEMORY,
    PENDING_STATES,
    Attempt,
    AttemptRecord,
    Claim,
    NewRecipient,
    RecipientUpdate,
    StoreBusyError,
    StoredMessage,
    StoredRecipient,
    StoreError,
    Suppression,
    Synchronous,
    lowered_address,
    normalise_address,
)
from ._vocab import Reason

SCHEMA_VERSION: Final = 1
_TABLES: Final = frozenset({"messages", "recipients", "attempts", "suppressions", "soft_bounces"})
_STATE_LIST: Final = ", ".join(f"'{s}'" for s in STATES)
#: A claim never leases more messages than this at once (bound on SQL parameters).
MAX_CLAIM: Final = 1000
#: The longest busy timeout or retention accepted (ten years; inf made every write fail).
_MAX_SECONDS: Final = 3650 * 86400.0

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS messages (
        key INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        envelope_from TEXT NOT NULL,
        data BLOB,                      -- NULL once purged
        eight_bit INTEGER NOT NULL,
        smtputf8 INTEGER NOT NULL,
        policy TEXT NOT NULL,
        relay TEXT NOT NULL,
        created_at REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL,
        purged_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id)",
    f"""CREATE TABLE IF NOT EXISTS recipients (
        key INTEGER PRIMARY KEY,
        message_key INTEGER NOT NULL REFERENCES messages (key) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        wire TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({_STATE_LIST})),
        reason TEXT NOT NULL,
        code INTEGER,
        status TEXT,
        text TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        ambiguous INTEGER NOT NULL,
        first_failure_at REAL,
        next_attempt_at REAL,
        updated_at REAL NOT NULL,
        CHECK (state NOT IN ('deferred', 'held') OR next_attempt_at IS NOT NULL)
    )""",
    "CREATE INDEX IF NOT EXISTS recipients_message ON recipients (message_key)",
    # The due-selection: only pending rows, in time order. Partial, so delivered and
    # bounced rows (the bulk of an old outbox) cost nothing here.
    """CREATE INDEX IF NOT EXISTS recipients_due ON recipients (next_attempt_at)
        WHERE state IN ('deferred', 'held')""",
    """CREATE TABLE IF NOT EXISTS attempts (
        key INTEGER PRIMARY KEY,
        recipient_key INTEGER NOT NULL REFERENCES recipients (key) ON DELETE CASCADE,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        code INTEGER,
        status TEXT,
        text TEXT NOT NULL,
        rule TEXT NOT NULL,
        action TEXT NOT NULL,
        ambiguous INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS attempts_recipient ON attempts (recipient_key)",
    """CREATE TABLE IF NOT EXISTS suppressions (
        address TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        code INTEGER,
        status TEXT,
        text TEXT NOT NULL,
        policy TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS soft_bounces (
        address TEXT NOT NULL,
        at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS soft_bounces_address ON soft_bounces (address, at)",
)

#: The due-selection (EXPLAIN QUERY PLAN is asserted in the tests: it must search
#: ``recipients_due`` and need no temporary B-tree for the ORDER BY).
DUE_QUERY: Final = """
    SELECT r.message_key FROM recipients AS r JOIN messages AS m ON m.key = r.message_key
    WHERE r.state IN ('deferred', 'held') AND r.next_attempt_at <= :now
      AND (m.lease_until IS NULL OR m.lease_until <= :now)
      AND (:relay IS NULL OR m.relay = :relay)
    ORDER BY r.next_attempt_at
"""

_RECIPIENT_COLUMNS: Final = """
    r.key, r.message_key, m.message_id, r.position, r.recipient, r.wire, r.state, r.reason,
    r.code, r.status, r.text, r.attempts, r.ambiguous, r.first_failure_at,
    r.next_attempt_at, r.updated_at
"""
_MESSAGE_COLUMNS: Final = """
    key, message_id, envelope_from, data, eight_bit, smtputf8, policy, relay, created_at
"""
_SUPPRESSION_COLUMNS: Final = "address, reason, code, status, text, policy, created_at, expires_at"

_INSERT_RECIPIENT: Final = """
    INSERT INTO recipients (message_key, position, recipient, wire, state, reason, code,
        status, text, attempts, ambiguous, first_failure_at, next_attempt_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_ATTEMPT: Final = """
    INSERT INTO attempts (recipient_key, at, state, reason, code, status, text, rule, action,
        ambiguous)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_UPDATE_RECIPIENT: Final = """
    UPDATE recipients SET state = ?, reason = ?, code = ?, status = ?, text = ?,
        ambiguous = ?, next_attempt_at = ?, attempts = attempts + ?,
        first_failure_at = COALESCE(first_failure_at, ?), updated_at = ?
    WHERE key = ? AND state IN ('deferred', 'held') AND (? IS NULL OR updated_at = ?)
"""


def select_due(
    db: sqlite3.Connection, *, now: float, limit: int, relay: str | None = None
) -> list[int]:
    """The keys of up to ``limit`` messages with a due recipient and no live lease,
    oldest due first. It walks ``recipients_due`` in time order and stops at ``limit``
    messages: the cost is that of the rows read, not of the size of the outbox."""
    keys: dict[int, None] = {}
    cursor = db.execute(DUE_QUERY, {"now": now, "relay": relay})
    try:
        for (message_key,) in cursor:
            keys[message_key] = None
            if len(keys) >= limit:
                break
    finally:
        cursor.close()
    return list(keys)


#: The time arguments that may be None.
_OPTIONAL_TIMES: Final = frozenset({"next_attempt_at", "older_than", "ttl"})


def _check_times(**values: float | None) -> None:
    """Times and durations are numbers of seconds (None where optional): anything else
    would fail inside SQLite or arithmetic with an unrelated TypeError."""
    for name, value in values.items():
        if value is None and name in _OPTIONAL_TIMES:
            continue
        if (
            value is None
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidInputError(f"{name} must be a finite number of seconds, not {value!r}")


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an int, not {value!r}")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _journal_row(recipient_key: int | None, a: Attempt) -> tuple[object, ...]:
    return (
        recipient_key,
        a.at,
        a.state,
        a.reason,
        a.code,
        a.status,
        a.text,
        a.rule,
        a.action,
        a.ambiguous,
    )


def _recipient(row: Sequence[Any]) -> StoredRecipient:
    return StoredRecipient(
        key=row[0],
        message_key=row[1],
        message_id=row[2],
        position=row[3],
        recipient=row[4],
        wire=row[5],
        state=cast(State, row[6]),
        reason=cast(Reason, row[7]),
        code=row[8],
        status=row[9],
        text=row[10],
        attempts=row[11],
        ambiguous=bool(row[12]),
        first_failure_at=row[13],
        next_attempt_at=row[14],
        updated_at=row[15],
    )


def _suppression(row: Sequence[Any]) -> Suppression:
    return Suppression(
        address=row[0],
        reason=row[1],
        code=row[2],
        status=row[3],
        text=row[4],
        policy=row[5],
        created_at=row[6],
        expires_at=row[7],
    )


def _check_pending_time(state: State, next_attempt_at: float | None, who: str) -> None:
    if state in PENDING_STATES and next_attempt_at is None:
        raise StoreError(f"cannot save {who}: state {state!r} needs next_attempt_at")
    if state not in STATES:
        raise StoreError(f"cannot save {who}: unknown state {state!r}")


class SQLiteStore:
    """A :class:`~mailpolicy._store.Store` in one SQLite file (or ``":memory:"``, private
    to this object, for tests).

    ``busy_timeout`` (seconds) is how long a write waits for another connection;
    ``synchronous`` is ``"full"`` (default: durable across power loss) or ``"normal"``
    (durable across process crashes only); ``retention`` (seconds, default 7 days) is
    how long :meth:`purge` keeps bodies of finished messages. The file is created if
    missing; its directory is not.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        synchronous: Synchronous = "full",
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        self._path = os.fspath(path)
        for name, value in (("busy_timeout", busy_timeout), ("retention", retention)):
            if not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and 0 <= value <= _MAX_SECONDS
            ):
                raise StoreError(
                    f"{self._path}: {name} must be a number of seconds from 0 to "
                    f"{_MAX_SECONDS:g} (ten years), not {value!r}"
                )
        if synchronous not in ("full", "normal"):
            raise StoreError(f"{self._path}: synchronous must be 'full' or 'normal'")
        self._busy_timeout = busy_timeout
        self._retention = retention
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        try:
            if self._path != MEMORY:
                self._create_private()
            connection = sqlite3.connect(
                self._path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._error("opening", exc) from exc
        except (OSError, ValueError) as exc:  # a NUL in the path, a name too long, ...
            raise StoreError(f"{self._path}: cannot open the database file: {exc}") from exc
        try:
            self._configure(connection, synchronous)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _create_private(self) -> None:
        """Check the path, and create a new database file readable by its owner only:
        it holds whole messages (password-reset links), Bcc recipients and the
        suppression list, and SQLite gives its -wal and -shm files the same mode
        (security review: 0644 under the usual umask). An existing file keeps its mode."""
        file = Path(self._path)
        if file.is_dir():
            raise StoreError(f"{self._path}: is a directory, not a database file")
        if not file.parent.is_dir():
            raise StoreError(
                f"{self._path}: the directory {str(file.parent)!r} does not exist "
                "(the store creates its file, not directories)"
            )
        with suppress(FileExistsError):  # where SQLite will create it: a symlink's target
            target = os.path.realpath(self._path)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    # --- plumbing -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._path

    @property
    def retention(self) -> float:
        return self._retention

    @property
    def busy_timeout(self) -> float:
        return self._busy_timeout

    def _error(self, doing: str, exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "")
        text = str(exc)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            return StoreBusyError(
                f"{self._path}: {doing}: database is locked (another connection held it "
                f"longer than the busy timeout of {self._busy_timeout:g} s)"
            )
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text:
            problem = f"not a database, or corrupt ({text}); nothing was changed"
        else:
            problem = text
        return StoreError(f"{self._path}: {doing}: {problem}")

    def _configure(self, connection: sqlite3.Connection, synchronous: Synchronous) -> None:
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if self._path != MEMORY and str(mode).lower() != "wal":
                raise StoreError(f"{self._path}: cannot use WAL mode (journal_mode={mode})")
            connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            connection.execute("PRAGMA foreign_keys = ON")
            self._create_schema(connection)
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise self._error("opening", exc) from exc

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._path}: the store's schema version {version} is newer than this "
                    f"mailpolicy's ({SCHEMA_VERSION}); upgrade mailpolicy"
                )
            if version == 0:
                tables = {
                    row[0]
                    for row in connection.execute(
                        "SELECT name FROM sqlite_master "
                        "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                    )
                }
                if foreign := sorted(tables - _TABLES):
                    raise StoreError(
                        f"{self._path}: not a mailpolicy store (it holds other tables: "
                        f"{', '.join(foreign[:5])}); nothing was changed"
                    )
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @contextmanager
    def _transaction(self, doing: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed at the end, rolled back on any error,
        SQLite errors raised as StoreError naming the store and ``doing``."""
        with self._lock:
            connection = self._connection
            if connection is None:
                raise StoreError(f"{self._path}: {doing}: the store is closed")
            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield connection
                connection.execute("COMMIT")
            except BaseException as exc:
                if connection.in_transaction:
                    # The original error is the one to report, not a failed rollback.
                    with suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(doing, exc) from exc
                raise

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._connection is None else "open"
        return f"<SQLiteStore {self._path!r} {state}>"

    # --- outbox ---------------------------------------------------------------------------

    def save_deferred(
        self,
        message: PreparedMessage,
        *,
        policy: str,
        relay: str,
        recipients: Sequence[NewRecipient],
        now: float,
    ) -> int:
        _check_times(now=now)
        if not recipients:
            raise StoreError(f"{self._path}: cannot save {message.message_id}: no recipients")
        for new in recipients:
            _check_pending_time(new.state, new.next_attempt_at, new.recipient)
        with self._transaction(f"saving {message.message_id}") as db:
            message_key = db.execute(
                "INSERT INTO messages (message_id, envelope_from, data, eight_bit, smtputf8, "
                "policy, relay, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.message_id,
                    message.envelope_from,
                    message.data,
                    message.eight_bit,
                    message.smtputf8,
                    policy,
                    relay,
                    now,
                ),
            ).lastrowid
            history: list[tuple[object, ...]] = []
            for position, new in enumerate(recipients):
                final = new.state in FINAL_STATES
                recipient_key = db.execute(
                    _INSERT_RECIPIENT,
                    (
                        message_key,
                        position,
                        new.recipient,
                        new.wire,
                        new.state,
                        new.reason,
                        new.code,
                        new.status,
                        new.text,
                        new.attempts,
                        new.ambiguous,
                        new.first_failure_at,
                        None if final else new.next_attempt_at,
                        now,
                    ),
                ).lastrowid
                history.extend(_journal_row(recipient_key, a) for a in new.history)
            if history:
                db.executemany(_INSERT_ATTEMPT, history)
        if message_key is None:  # pragma: no cover - an INSERT into a rowid table sets it
            raise StoreError(f"{self._path}: saving {message.message_id}: no key assigned")
        return message_key

    def claim_due(
        self,
        *,
        now: float,
        owner: str,
        lease_seconds: float,
        limit: int = 100,
        relay: str | None = None,
    ) -> list[Claim]:
        _check_times(now=now, lease_seconds=lease_seconds)
        _check_int("limit", limit)
        if not 1 <= limit <= MAX_CLAIM:
            raise StoreError(f"{self._path}: claim limit must be 1..{MAX_CLAIM}, got {limit}")
        if not lease_seconds > 0:
            raise StoreError(f"{self._path}: lease_seconds must be > 0")
        lease_until = now + lease_seconds
        with self._transaction("claiming due messages") as db:
            keys = select_due(db, now=now, limit=limit, relay=relay)
            if not keys:
                return []
            marks = _marks(len(keys))
            db.execute(
                f"UPDATE messages SET lease_owner = ?, lease_until = ? WHERE key IN ({marks})",  # noqa: S608 - placeholders only
                (owner, lease_until, *keys),
            )
            messages = {
                row[0]: StoredMessage(
                    key=row[0],
                    message_id=row[1],
                    envelope_from=row[2],
                    data=row[3],
                    eight_bit=bool(row[4]),
                    smtputf8=bool(row[5]),
                    policy=row[6],
                    relay=row[7],
                    created_at=row[8],
                )
                for row in db.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE key IN ({marks})",  # noqa: S608 - placeholders only
                    tuple(keys),
                )
            }
            due: dict[int, list[StoredRecipient]] = {key: [] for key in keys}
            for row in db.execute(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients AS r "  # noqa: S608 - placeholders only
                "JOIN messages AS m ON m.key = r.message_key "
                f"WHERE r.message_key IN ({marks}) AND r.state IN ('deferred', 'held') "
                "AND r.next_attempt_at <= ? ORDER BY r.message_key, r.position",
                (*keys, now),
            ):
                due[row[1]].append(_recipient(row))
        return [
            Claim(
                message=messages[key],
                recipients=tuple(due[key]),
                owner=owner,
                lease_until=lease_until,
            )
            for key in keys
        ]

    def _release_lease(self, db: sqlite3.Connection, claim: Claim) -> bool:
        cursor = db.execute(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL "
            "WHERE key = ? AND lease_owner = ? AND lease_until = ?",
            (claim.message.key, claim.owner, claim.lease_until),
        )
        return cursor.rowcount == 1

    def record_attempt(
        self, claim: Claim, updates: Sequence[RecipientUpdate], *, now: float
    ) -> bool:
        _check_times(now=now)
        claimed = {r.key for r in claim.recipients}
        for update in updates:
            if update.key not in claimed:
                raise StoreError(
                    f"{self._path}: recipient {update.key} is not part of the claim of "
                    f"{claim.message.message_id}"
                )
            _check_pending_time(update.state, update.next_attempt_at, f"recipient {update.key}")
        with self._transaction(f"recording attempts for {claim.message.message_id}") as db:
            journal: list[tuple[object, ...]] = []
            for update in updates:
                attempt = update.attempt
                failed_at = None
                if attempt is not None and attempt.state != "delivered":
                    failed_at = attempt.at
                db.execute(
                    _UPDATE_RECIPIENT,
                    (
                        update.state,
                        update.reason,
                        update.code,
                        update.status,
                        update.text,
                        update.ambiguous,
                        None if update.state in FINAL_STATES else update.next_attempt_at,
                        0 if attempt is None else 1,
                        failed_at,
                        now,
                        update.key,
                        update.if_updated_at,
                        update.if_updated_at,
                    ),
                )
                if attempt is not None:
                    journal.append(_journal_row(update.key, attempt))
            if journal:
                db.executemany(_INSERT_ATTEMPT, journal)
            return self._release_lease(db, claim)

    def record_report(self, message_id: str, recipient: str, attempt: Attempt) -> bool:
        if not isinstance(message_id, str) or not isinstance(recipient, str):
            raise InvalidInputError("message_id and recipient must be str")
        if not isinstance(attempt, Attempt) or attempt.state != "bounced":
            raise StoreError(f"{self._path}: a report records a bounced Attempt")
        _check_times(at=attempt.at)
        wanted = normalise_address(recipient)
        with self._transaction(f"recording a report on {message_id}") as db:
            # Not a pending recipient of a message a worker has in hand (its result would
            # come after the bounce and contradict it; a delivered one is no worker's
            # business any more), not a recipient already final for another reason
            # (suppressed, invalid, bounced: its first reason stands; a replayed report
            # changes nothing).
            rows = db.execute(
                "SELECT r.key, r.recipient, r.wire FROM recipients AS r JOIN messages AS m "
                "ON m.key = r.message_key WHERE m.message_id = ? "
                "AND r.state IN ('delivered', 'deferred', 'held') "
                "AND (r.state = 'delivered' OR m.lease_until IS NULL OR m.lease_until <= ?)",
                (message_id, attempt.at),
            ).fetchall()
            keys = [
                key
                for key, given, wire in rows
                if wanted in (normalise_address(given), normalise_address(wire))
            ]
            for key in keys:
                db.execute(
                    _INSERT_ATTEMPT,
                    (key, attempt.at, attempt.state, attempt.reason, attempt.code,
                     attempt.status, attempt.text, attempt.rule, attempt.action,
                     attempt.ambiguous),
                )  # fmt: skip
                db.execute(
                    "UPDATE recipients SET state = 'bounced', reason = ?, code = ?, "
                    "status = ?, text = ?, next_attempt_at = NULL, updated_at = ? "
                    "WHERE key = ?",
                    (attempt.reason, attempt.code, attempt.status, attempt.text, attempt.at,
                     key),
                )  # fmt: skip
        return bool(keys)

    def renew(self, claim: Claim, *, now: float, lease_seconds: float) -> Claim | None:
        _check_times(now=now, lease_seconds=lease_seconds)
        if not lease_seconds > 0:
            raise StoreError(f"{self._path}: lease_seconds must be > 0")
        lease_until = now + lease_seconds
        with self._transaction(f"renewing the lease of {claim.message.message_id}") as db:
            cursor = db.execute(
                "UPDATE messages SET lease_until = ? "
                "WHERE key = ? AND lease_owner = ? AND lease_until = ?",
                (lease_until, claim.message.key, claim.owner, claim.lease_until),
            )
        return replace(claim, lease_until=lease_until) if cursor.rowcount == 1 else None

    def release(self, claim: Claim, *, now: float, next_attempt_at: float | None = None) -> None:
        _check_times(now=now, next_attempt_at=next_attempt_at)
        with self._transaction(f"releasing {claim.message.message_id}") as db:
            if next_attempt_at is not None and claim.recipients:
                keys = [r.key for r in claim.recipients]
                db.execute(
                    "UPDATE recipients SET next_attempt_at = ?, updated_at = ? "  # noqa: S608 - placeholders only
                    f"WHERE key IN ({_marks(len(keys))}) AND state IN ('deferred', 'held')",
                    (next_attempt_at, now, *keys),
                )
            self._release_lease(db, claim)

    def counts(self, *, now: float) -> dict[str, int]:
        _check_times(now=now)
        result: dict[str, int] = dict.fromkeys(STATES, 0)
        with self._transaction("counting", write=False) as db:
            result.update(db.execute("SELECT state, count(*) FROM recipients GROUP BY state"))
            result["due"] = db.execute(
                "SELECT count(*) FROM recipients AS r JOIN messages AS m "
                "ON m.key = r.message_key WHERE r.state IN ('deferred', 'held') "
                "AND r.next_attempt_at <= :now "
                "AND (m.lease_until IS NULL OR m.lease_until <= :now)",
                {"now": now},
            ).fetchone()[0]
            row = db.execute(
                "SELECT count(*), count(*) FILTER (WHERE lease_until > :now), "
                "count(*) FILTER (WHERE data IS NULL) FROM messages",
                {"now": now},
            ).fetchone()
            result["messages"], result["leased"], result["purged"] = row
            result["suppression_list"] = db.execute(
                "SELECT count(*) FROM suppressions WHERE expires_at IS NULL OR expires_at > ?",
                (now,),
            ).fetchone()[0]
        return result

    def pending_by_relay(self, *, now: float) -> dict[str, tuple[int, int]]:
        _check_times(now=now)
        with self._transaction("counting by relay", write=False) as db:
            rows = db.execute(
                "SELECT m.relay, count(*), count(*) FILTER (WHERE r.next_attempt_at <= :now "
                "AND (m.lease_until IS NULL OR m.lease_until <= :now)) "
                "FROM recipients AS r JOIN messages AS m ON m.key = r.message_key "
                "WHERE r.state IN ('deferred', 'held') GROUP BY m.relay ORDER BY m.relay",
                {"now": now},
            ).fetchall()
        return {relay: (pending, due) for relay, pending, due in rows}

    def list_recipients(
        self, *, state: State | None = None, message_id: str | None = None, limit: int = 100
    ) -> list[StoredRecipient]:
        _check_int("limit", limit)
        with self._transaction("listing recipients", write=False) as db:
            rows = db.execute(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients AS r "  # noqa: S608 - constant columns
                "JOIN messages AS m ON m.key = r.message_key "
                "WHERE (:state IS NULL OR r.state = :state) "
                "AND (:message_id IS NULL OR m.message_id = :message_id) "
                "ORDER BY r.key LIMIT :limit",
                {"state": state, "message_id": message_id, "limit": limit},
            ).fetchall()
        return [_recipient(row) for row in rows]

    def journal(
        self, *, message_id: str | None = None, recipient_key: int | None = None
    ) -> list[AttemptRecord]:
        with self._transaction("reading the journal", write=False) as db:
            rows = db.execute(
                "SELECT a.recipient_key, m.message_id, r.recipient, a.at, a.state, a.reason, "
                "a.code, a.status, a.text, a.rule, a.action, a.ambiguous FROM attempts AS a "
                "JOIN recipients AS r ON r.key = a.recipient_key "
                "JOIN messages AS m ON m.key = r.message_key "
                "WHERE (:message_id IS NULL OR m.message_id = :message_id) "
                "AND (:recipient_key IS NULL OR a.recipient_key = :recipient_key) "
                "ORDER BY a.key",
                {"message_id": message_id, "recipient_key": recipient_key},
            ).fetchall()
        return [
            AttemptRecord(
                recipient_key=row[0],
                message_id=row[1],
                recipient=row[2],
                at=row[3],
                state=cast(State, row[4]),
                reason=cast(Reason, row[5]),
                code=row[6],
                status=row[7],
                text=row[8],
                rule=row[9],
                action=row[10],
                ambiguous=bool(row[11]),
            )
            for row in rows
        ]

    def retry_now(
        self, *, now: float, message_id: str | None = None, include_held: bool = True
    ) -> int:
        _check_times(now=now)
        with self._transaction("releasing for retry") as db:
            cursor = db.execute(
                "UPDATE recipients SET state = 'deferred', next_attempt_at = :now, "
                "updated_at = :now WHERE (state = 'deferred' OR (:held AND state = 'held')) "
                "AND (:message_id IS NULL OR message_key IN "
                "(SELECT key FROM messages WHERE message_id = :message_id))",
                {"now": now, "held": include_held, "message_id": message_id},
            )
            return cursor.rowcount

    def purge(self, *, now: float, older_than: float | None = None) -> int:
        _check_times(now=now, older_than=older_than)
        cutoff = now - (self._retention if older_than is None else older_than)
        with self._transaction("purging finished messages") as db:
            cursor = db.execute(
                "UPDATE messages SET data = NULL, purged_at = :now "
                "WHERE data IS NOT NULL AND created_at <= :cutoff AND NOT EXISTS ("
                "  SELECT 1 FROM recipients AS r WHERE r.message_key = messages.key"
                "  AND (r.state IN ('deferred', 'held') OR r.updated_at > :cutoff))",
                {"now": now, "cutoff": cutoff},
            )
            return cursor.rowcount

    # --- suppression list -----------------------------------------------------------------

    def suppressed(self, address: str, *, now: float) -> Suppression | None:
        _check_times(now=now)
        with self._transaction("checking the suppression list", write=False) as db:
            row = db.execute(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions "  # noqa: S608 - constant columns
                "WHERE address = ? AND (expires_at IS NULL OR expires_at > ?)",
                (normalise_address(address), now),
            ).fetchone()
        return None if row is None else _suppression(row)

    def add_suppression(
        self,
        address: str,
        *,
        reason: str,
        now: float,
        ttl: float | None,
        code: int | None = None,
        status: str | None = None,
        text: str = "",
        policy: str = "",
    ) -> Suppression:
        _check_times(now=now, ttl=ttl)
        if ttl is not None and not ttl > 0:
            raise StoreError(f"{self._path}: a suppression ttl must be > 0 seconds or None")
        if code is not None and not (
            isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599
        ):
            raise InvalidInputError(
                f"code must be an SMTP reply code (100-599) or None, not {code!r}"
            )
        for name, value in (
            ("reason", reason),
            ("status", status),
            ("text", text),
            ("policy", policy),
        ):
            if not isinstance(value, str) and not (name == "status" and value is None):
                raise InvalidInputError(f"{name} must be a str, not {type(value).__name__}")
        key = normalise_address(address)
        if not key:
            raise StoreError(f"{self._path}: cannot suppress an empty address")
        entry = Suppression(
            address=key,
            reason=reason,
            code=code,
            status=status,
            text=text,
            policy=policy,
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
        )
        with self._transaction(f"suppressing {key}") as db:
            db.execute(
                f"INSERT OR REPLACE INTO suppressions ({_SUPPRESSION_COLUMNS}) "  # noqa: S608 - constant columns
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, reason, code, status, text, policy, now, entry.expires_at),
            )
        return entry

    def remove_suppression(self, address: str) -> bool:
        key = normalise_address(address)
        # Also the key as earlier development versions wrote it (a Unicode domain, only
        # lower-cased), so such an entry can still be removed by its address.
        legacy = lowered_address(address)
        with self._transaction(f"removing the suppression of {key}") as db:
            return (
                db.execute(
                    "DELETE FROM suppressions WHERE address IN (?, ?)", (key, legacy)
                ).rowcount
                > 0
            )

    def suppressions(self, *, now: float, include_expired: bool = False) -> list[Suppression]:
        _check_times(now=now)
        with self._transaction("listing the suppression list", write=False) as db:
            rows = db.execute(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions "  # noqa: S608 - constant columns
                "WHERE :all OR expires_at IS NULL OR expires_at > :now ORDER BY address",
                {"all": include_expired, "now": now},
            ).fetchall()
        return [_suppression(row) for row in rows]

    def record_soft_bounce(self, address: str, *, now: float, window: float) -> int:
        _check_times(now=now, window=window)
        if not window > 0:
            raise StoreError(f"{self._path}: a soft-bounce window must be > 0 seconds")
        key = normalise_address(address)
        with self._transaction(f"counting soft bounces of {key}") as db:
            # Rows older than the window no longer count: drop them as we go.
            db.execute(
                "DELETE FROM soft_bounces WHERE address = ? AND at <= ?", (key, now - window)
            )
            db.execute("INSERT INTO soft_bounces (address, at) VALUES (?, ?)", (key, now))
            count: int = db.execute(
                "SELECT count(*) FROM soft_bounces WHERE address = ? AND at > ?",
                (key, now - window),
            ).fetchone()[0]
        return count
