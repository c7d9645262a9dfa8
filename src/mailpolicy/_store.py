"""The durable store behind the outbox: the interface, its records, and ``open_store``.

A store keeps three things (DESIGN.md §4 "with a store"):

- the **outbox**: each deferred message once (its bytes, envelope, policy and relay) and
  one row per recipient with its state, last reply, attempt count, first failure time and
  next attempt time; workers *claim* due messages with a lease, so several worker
  processes can share one store;
- the **attempt journal**: one row per attempt with its verdict, kept after the message
  bodies are purged;
- the **suppression list** (with expiry) and the **soft-bounce counts** that escalate to it.

:class:`Store` is a :class:`typing.Protocol`: the sender and the worker know only it, so
a PostgreSQL store can follow without touching them. :class:`~mailpolicy._sqlite.SQLiteStore`
is the embedded default. Every time is seconds since the epoch, passed in as ``now``
(never read from a clock here), so tests inject it.

Errors: every failure to read or write raises :class:`StoreError` naming the store and
what went wrong. Nothing is swallowed: a deferral that cannot be saved raises.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self, runtime_checkable
from urllib.parse import parse_qsl, unquote

import idna
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ._address import a_label
from ._errors import InvalidInputError, MailPolicyError
from ._message import PreparedMessage
from ._outcome import DeliveryReport, RecipientOutcome, State
from ._vocab import Reason


class StoreError(MailPolicyError, RuntimeError):
    """The store cannot be opened, read or written: an unknown or malformed store URL, a
    missing directory, a corrupt or locked database, a store already closed, or a write
    that failed (the transaction is rolled back: nothing half-saved, nothing deleted).
    The message names the store (its path or URL) and the cause; an operator acts on it.

    Raised by ``Sender.send()`` after the server answered (the deferred recipients could
    not be saved), ``report`` holds the :class:`~mailpolicy.DeliveryReport` of that send:
    who was delivered, so a caller that retries does not send them a second copy."""

    report: DeliveryReport | None = None


class StoreBusyError(StoreError):
    """Another connection held the database's write lock longer than the busy timeout.
    Nothing was changed; the same call may succeed a moment later (the worker retries
    recording an attempt rather than lose what the server answered)."""


#: Recipient states that are still the outbox's business; every other state is final.
PENDING_STATES: Final[frozenset[State]] = frozenset({"deferred", "held"})
FINAL_STATES: Final[frozenset[State]] = frozenset({"delivered", "bounced", "suppressed", "invalid"})

#: Delivered and bounced message bodies are purged after this long (seconds): 7 days.
DEFAULT_RETENTION: Final = 7 * 86400.0
#: How long a writer waits for another one holding the database (seconds).
DEFAULT_BUSY_TIMEOUT: Final = 5.0

Synchronous = Literal["full", "normal"]


def lowered_address(address: str) -> str:
    """``address`` without surrounding space and angle brackets, lower-cased: the first
    step of :func:`normalise_address`, and the whole key earlier development versions
    stored (``remove_suppression`` still finds those)."""
    return address.strip().removeprefix("<").removesuffix(">").strip().lower()


def normalise_address(address: str) -> str:
    """The suppression list's key for ``address``: surrounding space and angle brackets
    removed, the whole address lower-cased.

    RFC 5321 §2.4 lets a server treat local parts case-sensitively, but practically no
    mailbox provider does, and a suppression list errs on the safe side: ``Ann@X.org``
    and ``ann@x.org`` are one entry (the usual practice of ESP suppression lists).
    """
    if not isinstance(address, str):
        raise InvalidInputError(f"an address must be a str, not {type(address).__name__}")
    key = lowered_address(address)
    local, at, domain = key.rpartition("@")
    if at and not domain.isascii():
        # The domain as the sender writes it on the wire (IDNA 2008 A-labels), so that a
        # bounce or an operator naming "jürgen@münchen.example" suppresses what a send
        # looks up ("jürgen@xn--mnchen-3ya.example").
        with suppress(idna.IDNAError):  # not a valid IDNA name: kept as written
            key = f"{local}@{a_label(domain.rstrip('.'))}"
    return key


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One attempt at one recipient, as the journal keeps it: when, the resulting state,
    the deciding reply (``reason``, ``code``, ``status``, ``text``), the classification
    ``rule`` and the policy ``action``; ``ambiguous`` marks a drop after the final dot."""

    at: float
    state: State
    reason: Reason
    code: int | None = None
    status: str | None = None
    text: str = ""
    rule: str = ""
    action: str = ""
    ambiguous: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRecipient:
    """One recipient of a message being saved (:meth:`Store.save_deferred`).

    ``recipient`` is the address as the caller gave it, ``wire`` the address used on the
    wire. Any state may be saved (recipients delivered inline are kept as ``delivered``,
    so the worker never sends to them again); ``deferred`` and ``held`` need
    ``next_attempt_at``. ``attempts`` counts the SMTP attempts so far; ``history`` is
    what the journal gets (it may list fewer attempts than ``attempts`` counts).
    """

    recipient: str
    wire: str
    state: State
    reason: Reason
    code: int | None = None
    status: str | None = None
    text: str = ""
    attempts: int = 0
    ambiguous: bool = False
    first_failure_at: float | None = None
    next_attempt_at: float | None = None
    history: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientUpdate:
    """The new state of one claimed recipient (:meth:`Store.record_attempt`).

    ``key`` is :attr:`StoredRecipient.key`. With ``attempt`` set, an attempt was spent:
    the counter goes up by one, the journal gets the row, and the first failure time is
    set if this was the first failure. Without it no attempt is counted (the relay's
    circuit was open, the recipient was rebatched before being tried). With
    ``if_updated_at``, the update applies only if the row was not changed since then
    (a reschedule that must not overwrite what another worker recorded meanwhile).
    """

    key: int
    state: State
    reason: Reason
    code: int | None = None
    status: str | None = None
    text: str = ""
    ambiguous: bool = False
    next_attempt_at: float | None = None
    attempt: Attempt | None = None
    if_updated_at: float | None = None


def attempt_of(o: RecipientOutcome, at: float) -> Attempt:
    """The journal row of an attempt that ended in outcome ``o`` at ``at``."""
    return Attempt(
        at=at,
        state=o.state,
        reason=o.reason,
        code=o.code,
        status=o.status,
        text=o.text,
        rule=o.rule,
        action=o.action,
        ambiguous=o.ambiguous,
    )


def busy_retrying(
    sleep: Callable[[float], None],
    *,
    attempts: int,
    multiplier: float,
    max_wait: float,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """Tries at a store call while the database stays locked past its busy timeout
    (:class:`StoreBusyError`), waits growing exponentially on the injected ``sleep``;
    any other error, or the last one, is raised."""
    return Retrying(
        retry=retry_if_exception_type(StoreBusyError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=multiplier, max=max_wait),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    """A message in the outbox: the bytes saved once (``PreparedMessage.data``: CRLF,
    not dot-stuffed), its envelope sender, Message-ID (unchanged across retries), the
    name of the policy and the relay (``host:port``) it was sent with."""

    key: int
    message_id: str
    envelope_from: str
    data: bytes
    eight_bit: bool
    smtputf8: bool
    policy: str
    relay: str
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecipient:
    """One recipient row of the outbox (see :class:`NewRecipient` for the fields).
    ``updated_at`` is when its state last changed."""

    key: int
    message_key: int
    message_id: str
    position: int
    recipient: str
    wire: str
    state: State
    reason: Reason
    code: int | None
    status: str | None
    text: str
    attempts: int
    ambiguous: bool
    first_failure_at: float | None
    next_attempt_at: float | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One row of the attempt journal: which recipient (``recipient_key``, its message's
    ``message_id`` and the ``recipient`` address) and the :class:`Attempt`'s fields."""

    recipient_key: int
    message_id: str
    recipient: str
    at: float
    state: State
    reason: Reason
    code: int | None
    status: str | None
    text: str
    rule: str
    action: str
    ambiguous: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppression:
    """An entry of the suppression list. ``address`` is normalised
    (:func:`normalise_address`); ``reason``, ``code``, ``status`` and ``text`` are the
    reply that killed it; ``policy`` the policy that decided; ``expires_at`` is None for
    an entry that never expires."""

    address: str
    reason: str
    code: int | None = None
    status: str | None = None
    text: str = ""
    policy: str = ""
    created_at: float
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A message leased to one worker: the message, its recipients due at claim time
    (in envelope order), the lease ``owner`` and the time ``lease_until`` after which
    another worker may claim it again (a worker that crashed loses nothing: its claim
    simply expires)."""

    message: StoredMessage
    recipients: tuple[StoredRecipient, ...]
    owner: str
    lease_until: float


def lease_owner() -> str:
    """A lease owner name unique to this process: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- the interface --------------------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """What the sender, the worker and the CLI need from a store.

    Every write is one transaction: it happens entirely or not at all, and a failure
    raises :class:`StoreError` (never a silent return). Implementations are safe to use
    from several threads and, for file-backed ones, from several processes at once.
    """

    @property
    def location(self) -> str:
        """Where the store is, for messages (a path or a URL without password)."""
        ...

    @property
    def retention(self) -> float:
        """How long (seconds) bodies of finished messages are kept by :meth:`purge`."""
        ...

    # outbox
    def save_deferred(
        self,
        message: PreparedMessage,
        *,
        policy: str,
        relay: str,
        recipients: Sequence[NewRecipient],
        now: float,
    ) -> int:
        """Save a message, its recipients and their history in one transaction; return
        the message's key. Raises :class:`StoreError` if it cannot be saved."""
        ...

    def claim_due(
        self,
        *,
        now: float,
        owner: str,
        lease_seconds: float,
        limit: int = 100,
        relay: str | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` messages that have a recipient due (``deferred`` or
        ``held`` with ``next_attempt_at <= now``) and no live lease, oldest due first,
        optionally only those sent through ``relay``. Atomic: no two callers, in any
        thread or process, get the same message while its lease lasts."""
        ...

    def record_attempt(
        self, claim: Claim, updates: Sequence[RecipientUpdate], *, now: float
    ) -> bool:
        """Apply ``updates`` to the claim's recipients, append their attempts to the
        journal and release the lease, in one transaction. A final state (delivered,
        bounced, ...) is never changed again. Returns whether the lease was still the
        claim's (False: it expired and another worker may have the message too)."""
        ...

    def record_report(self, message_id: str, recipient: str, attempt: Attempt) -> bool:
        """A failure reported later about one recipient of a stored message (a bounce
        message: the relay had accepted it): ``attempt`` (state ``bounced``) goes to the
        recipient's journal and the recipient ends ``bounced`` with its reason, when it
        was ``delivered`` (at the relay) or still pending (it is not retried). A
        recipient already final for another reason keeps it (a replayed report changes
        nothing), and a message a worker has in hand is left to it. The recipient is
        matched by address as the suppression list matches (case, Unicode or A-label
        domain). Returns whether the report was recorded."""
        ...

    def renew(self, claim: Claim, *, now: float, lease_seconds: float) -> Claim | None:
        """Extend the claim's lease to ``now + lease_seconds`` if it is still the claim's
        (no other worker took the message, nobody released it), and return the renewed
        claim; None when the lease was lost. A worker renews each claim of a batch just
        before sending it, so a lease always covers the delivery it protects."""
        ...

    def release(self, claim: Claim, *, now: float, next_attempt_at: float | None = None) -> None:
        """Give the lease back without spending an attempt; with ``next_attempt_at``,
        the claim's still-pending recipients wait until then (a relay whose circuit is
        open: the messages wait, their attempts untouched)."""
        ...

    def counts(self, *, now: float) -> dict[str, int]:
        """Recipients per state (``deferred``, ``held``, ``delivered``, ``bounced``,
        ``suppressed``, ``invalid``), ``due`` (pending, due and not leased), ``leased``
        and ``messages`` (messages), ``purged`` (messages whose body is gone) and
        ``suppression_list`` (active entries)."""
        ...

    def pending_by_relay(self, *, now: float) -> dict[str, tuple[int, int]]:
        """Per relay (``host:port``) the message was saved with: its pending (deferred
        or held) recipients and how many of them are due and not leased. A worker claims
        only its own relay's: the operator needs to see the others'."""
        ...

    def list_recipients(
        self, *, state: State | None = None, message_id: str | None = None, limit: int = 100
    ) -> list[StoredRecipient]:
        """Recipients, oldest first, optionally of one state or one message."""
        ...

    def journal(
        self, *, message_id: str | None = None, recipient_key: int | None = None
    ) -> list[AttemptRecord]:
        """The attempt journal, in order, optionally of one message or one recipient."""
        ...

    def retry_now(
        self, *, now: float, message_id: str | None = None, include_held: bool = True
    ) -> int:
        """Make pending recipients due now (all, or one message's); held ones become
        ``deferred`` again unless ``include_held`` is False. Returns how many changed."""
        ...

    def purge(self, *, now: float, older_than: float | None = None) -> int:
        """Delete the bodies of messages whose recipients are all final and unchanged
        for ``older_than`` seconds (default: :attr:`retention`); their recipients and
        journal stay. A message with a pending recipient is never touched. Returns the
        number of bodies deleted."""
        ...

    # suppression list
    def suppressed(self, address: str, *, now: float) -> Suppression | None:
        """The active entry for ``address`` (normalised), or None."""
        ...

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
        """Add or replace the entry for ``address``; it expires after ``ttl`` seconds
        (None: never)."""
        ...

    def remove_suppression(self, address: str) -> bool:
        """Remove the entry for ``address``; False if there was none."""
        ...

    def suppressions(self, *, now: float, include_expired: bool = False) -> list[Suppression]:
        """The suppression list, by address."""
        ...

    def record_soft_bounce(self, address: str, *, now: float, window: float) -> int:
        """Count a soft bounce of ``address`` at ``now``; return how many it had within the
        last ``window`` seconds, this one included (the policy escalates past N)."""
        ...

    def close(self) -> None:
        """Release the store's resources. Idempotent; any later call raises StoreError."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


# --- store URLs -----------------------------------------------------------------------------

_SCHEME: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)", re.DOTALL)
_SQLITE_SCHEMES: Final = frozenset({"sqlite", "sqlite+pysqlite"})
_SUPPORTED: Final = (
    "supported: sqlite:///relative/path.sqlite3, sqlite:////absolute/path.sqlite3, "
    "sqlite:///:memory:"
)
MEMORY: Final = ":memory:"


@dataclass(frozen=True, slots=True, kw_only=True)
class SQLiteLocation:
    """A parsed ``sqlite://`` URL: the file (or ``:memory:``) and its options."""

    path: str
    busy_timeout: float | None = None
    synchronous: Synchronous | None = None


def parse_store_url(url: str) -> SQLiteLocation:
    """Parse a store URL in SQLAlchemy's convention.

    ``sqlite:///relative/path`` (three slashes: relative to the working directory),
    ``sqlite:////absolute/path`` (four), ``sqlite:///:memory:`` or ``sqlite://`` (a
    private in-memory store, for tests). ``sqlite+pysqlite://`` is the same. Options as
    query parameters: ``timeout`` (busy timeout in seconds, pysqlite's name) and
    ``synchronous`` (``full`` or ``normal``). The path is percent-decoded. Anything else
    raises :class:`StoreError` saying what is supported.
    """
    if not isinstance(url, str):
        raise InvalidInputError(f"a store URL must be a str, not {type(url).__name__}")
    match = _SCHEME.fullmatch(url.strip())
    if match is None:
        hint = ""
        if url.startswith("/"):
            hint = f" (for that file: sqlite:///{url})"
        elif url and "://" not in url and not url.isspace():
            # The absolute form: a relative URL depends on the working directory, which a
            # worker started by systemd or cron does not share with the application.
            hint = f" (for that file: sqlite:///{Path(url).absolute()})"
        raise StoreError(f"not a store URL: {url!r}{hint}; {_SUPPORTED}")
    scheme = match["scheme"].lower()
    if scheme not in _SQLITE_SCHEMES:
        later = " (a PostgreSQL store is planned)" if scheme.startswith("postgres") else ""
        raise StoreError(f"unsupported store URL scheme {scheme!r}{later}; {_SUPPORTED}")
    rest = match["rest"]
    host, slash, database = rest.partition("/")
    database, _, query = database.partition("?")
    if host:
        raise StoreError(
            f"a sqlite URL has no host, got {host!r} in {url!r}: use sqlite:///relative/path "
            "or sqlite:////absolute/path"
        )
    if not slash and not query:
        path = MEMORY  # "sqlite://": SQLAlchemy's in-memory database
    elif not database:
        # "sqlite:///" is most often an empty variable in "sqlite:///${PATH}": refusing
        # it beats silently keeping deferred mail in memory.
        raise StoreError(f"no database path in {url!r}; {_SUPPORTED}")
    else:
        path = unquote(database)
    busy_timeout: float | None = None
    synchronous: Synchronous | None = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "timeout":
            try:
                busy_timeout = float(value)
            except ValueError:
                busy_timeout = -1.0
            if not busy_timeout >= 0:  # also catches NaN
                raise StoreError(f"{url!r}: timeout must be seconds >= 0, got {value!r}")
        elif key == "synchronous":
            lowered = value.lower()
            if lowered == "full":
                synchronous = "full"
            elif lowered == "normal":
                synchronous = "normal"
            else:
                raise StoreError(f"{url!r}: synchronous must be 'full' or 'normal', got {value!r}")
        else:
            raise StoreError(f"{url!r}: unknown option {key!r} (known: timeout, synchronous)")
    return SQLiteLocation(path=path, busy_timeout=busy_timeout, synchronous=synchronous)


def open_store(
    target: str | Store,
    *,
    busy_timeout: float | None = None,
    synchronous: Synchronous | None = None,
    retention: float | None = None,
) -> Store:
    """A store from a URL (see :func:`parse_store_url`) or a store object.

    A store object is returned as it is (the caller keeps owning it); a URL opens a new
    store the caller must ``close()`` (or use as a context manager). Keyword settings
    win over the URL's options; defaults: busy timeout 5 s, ``synchronous=full``,
    retention 7 days.
    """
    if isinstance(target, Store):
        return target
    location = parse_store_url(target)
    # Imported here: _sqlite imports this module's records.
    from ._sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(
        location.path,
        busy_timeout=_first(busy_timeout, location.busy_timeout, DEFAULT_BUSY_TIMEOUT),
        synchronous=synchronous or location.synchronous or "full",
        retention=DEFAULT_RETENTION if retention is None else retention,
    )


def _first(*values: float | None) -> float:
    for value in values:
        if value is not None:
            return value
    raise AssertionError("no default")  # pragma: no cover
