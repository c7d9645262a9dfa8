"""The outbox worker: delivers due messages from a store on the policy's queue schedule.

It claims due messages with a lease (several worker processes can share one store),
makes one attempt per claim with the same Sender machinery (one connection reused across
claims), records each attempt in the journal, reschedules per the message's policy,
bounces at ``[queue] give_up_after``, adds dead addresses to the suppression list, and
emits the same ``mail.delivery`` events. At-least-once: a crash at any point loses
nothing (an unreleased lease simply expires); only a message in flight at the crash may
be delivered twice, with its Message-ID unchanged.

The lease must outlast one delivery: the default is 15 minutes, longer than RFC 5321's
10-minute wait after the final dot.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Final

from . import _events as events
from ._address import check_address
from ._errors import ConfigurationError, InvalidInputError, MailPolicyError
from ._message import PreparedMessage, wire_bytes
from ._outcome import RecipientOutcome
from ._policy import Policy
from ._policy_load import load_policy
from ._relaystate import RELAYS, RelayRegistry, RelayState
from ._sender import Sender, _Pending, is_seconds
from ._session import Security
from ._store import (
    AttemptRecord,
    Claim,
    RecipientUpdate,
    Store,
    StoreError,
    attempt_of,
    busy_retrying,
    lease_owner,
)
from ._vocab import as_reason

DEFAULT_LEASE: Final = 15 * 60.0
#: Commands of a transaction waited on besides the final dot: connect, greeting, EHLO,
#: MAIL, RCPT, DATA (STARTTLS, AUTH and more recipients only add to it).
_COMMANDS_PER_TRANSACTION: Final = 6


def transaction_bound(end_of_data_timeout: float, command_timeout: float) -> float:
    """How long one transaction may take at the least before a timeout ends it: the wait
    after the final dot and one command timeout per other step. A lease shorter than
    this can run out while the message is on the wire."""
    return end_of_data_timeout + _COMMANDS_PER_TRANSACTION * command_timeout


#: Tries at renewing a lease between two transactions while the database stays locked.
RENEW_ATTEMPTS: Final = 3
#: When recipients a delivery stopped before (its lease not renewed) are due again.
UNTRIED_DELAY: Final = 60.0
#: Held reasons that are about the whole relay connection, not one message: after one,
#: the worker stops trying the relay until the hold ends.
_OUR_CONFIGURATION: Final = frozenset(
    {"auth_failed", "auth_required", "tls_failed", "tls_required"}
)
#: Tries at recording an attempt while the database stays locked (waits of 1, 2, 4, 8,
#: 16 s between them, each try itself waiting up to the store's busy timeout).
RECORD_ATTEMPTS: Final = 6


@dataclass(slots=True)
class WorkerStats:
    """What a worker did: recipients delivered, deferred, bounced, held; claims made;
    claims whose lease was lost before their delivery or its recording."""

    claims: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    held: int = 0
    circuit_waits: int = 0
    leases_lost: int = 0
    by_state: dict[str, int] = field(default_factory=dict)

    def count(self, state: str) -> None:
        self.by_state[state] = self.by_state.get(state, 0) + 1
        if state in ("delivered", "deferred", "bounced", "held"):
            setattr(self, state, getattr(self, state) + 1)


def _prepared(claim: Claim) -> PreparedMessage:
    m = claim.message
    if m.data is None:  # purged while a recipient was still pending: never send nothing
        raise StoreError(f"message {m.message_id} has no stored body left to send")
    return PreparedMessage(
        message_id=m.message_id,
        envelope_from=m.envelope_from,
        recipients=tuple(r.recipient for r in claim.recipients),
        data=m.data,
        wire_data=wire_bytes(m.data),
        eight_bit=m.eight_bit,
        smtputf8=m.smtputf8,
    )


def _update(key: int, o: RecipientOutcome, *, attempted_at: float | None = None) -> RecipientUpdate:
    """The store update for one recipient's outcome; with ``attempted_at``, an attempt
    was spent and goes to the journal."""
    attempt = None if attempted_at is None else attempt_of(o, attempted_at)
    return RecipientUpdate(
        key=key,
        state=o.state,
        reason=o.reason,
        code=o.code,
        status=o.status,
        text=o.text,
        ambiguous=o.ambiguous,
        next_attempt_at=None if o.next_attempt_at is None else o.next_attempt_at.timestamp(),
        attempt=attempt,
    )


def _schedule_clock(
    journal: Sequence[AttemptRecord], first_failure_at: float | None, now: float
) -> tuple[float, list[float]]:
    """Where a recipient's retry schedule starts, and its failed attempts so far (this one
    included), for the queue tier.

    A hold is not part of the schedule (DESIGN.md §1: held is kept, "neither bounced nor
    retried on the normal schedule"): once a recipient has been held, ``give_up_after``
    and the schedule's stages count from its first failure after the last hold. A relay
    that refused our credentials over a weekend does not make Monday's first 4xx a
    bounce."""
    last_held = max((i for i, a in enumerate(journal) if a.state == "held"), default=-1)
    if last_held < 0:
        return (first_failure_at or now), [*(a.at for a in journal), now]
    since = [a.at for a in journal[last_held + 1 :]]
    return (since[0] if since else now), [*since, now]


@contextmanager
def stop_on_signals(stop: threading.Event, *, redeliver: bool = True) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT set ``stop`` (the worker finishes the
    message in hand, records it, releases what it claimed and returns) instead of
    interrupting it: a KeyboardInterrupt in the middle of a delivery would leave a message
    the server accepted unrecorded, to be sent again when its lease expires. Afterwards
    the previous handlers are put back and, with ``redeliver``, the signal is raised
    again, so the program's own handling (KeyboardInterrupt, termination) still happens,
    only later. Outside the main thread signals cannot be caught: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        if received and redeliver:
            signal.raise_signal(received[0])


class Worker:
    """Drains an outbox through one relay.

    ``policy`` overrides the policy each message was sent with (default: the message's
    own, by name). A message saved under a policy loaded from a file carries only its
    name: ``policies`` are the policies to find by name first (the CLI's
    ``--policy-file``); then the shipped ones; a name neither knows falls back to
    ``default``, with one ``mail.worker.policy_fallback`` warning per name. Time
    (``clock``: wall seconds, ``monotonic``, ``sleep``) is injectable for tests.
    """

    def __init__(
        self,
        store: Store,
        host: str,
        port: int | None = None,
        *,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        policy: Policy | str | Path | None = None,
        lease: float = DEFAULT_LEASE,
        batch: int = 20,
        allow_insecure_auth: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        relays: RelayRegistry | None = None,
        owner: str | None = None,
        sender_options: dict[str, object] | None = None,
        all_relays: bool = False,
        policies: Iterable[Policy] = (),
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidInputError(
                f"store must be a mailpolicy Store (open_store(url)), not {type(store).__name__}"
            )
        if not is_seconds(lease):
            raise ConfigurationError(
                f"lease must be a finite number of seconds above 0, not {lease!r}"
            )
        if not (isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= 1000):
            raise ConfigurationError(f"batch must be an int from 1 to 1000, not {batch!r}")
        self.store = store
        self.lease = float(lease)
        self.batch = batch
        self._lease_checked: set[str] = set()  # policies whose transaction fits the lease
        self.owner = owner or lease_owner()
        self._clock = clock
        self._sleep = sleep
        self._override = None if policy is None else (
            policy if isinstance(policy, Policy) else load_policy(policy)
        )  # fmt: skip
        self._known: dict[str, Policy] = {}
        for known in policies:
            if not isinstance(known, Policy):
                raise InvalidInputError(
                    f"policies must be Policy objects (load_policy(path)), not "
                    f"{type(known).__name__}"
                )
            self._known.setdefault(known.name, known)
        self._fallbacks: set[str] = set()  # names already reported as not found
        self._senders: dict[str, Sender] = {}
        self._make: Callable[[Policy], Sender] = lambda p: Sender(
            host,
            port,
            policy=p,
            security=security,
            username=username,
            password=password,
            allow_insecure_auth=allow_insecure_auth,
            end_of_data_timeout=p.queue.end_of_data_timeout,
            clock=clock,
            monotonic=monotonic,
            sleep=sleep,
            relays=relays if relays is not None else RELAYS,
            **(sender_options or {}),  # type: ignore[arg-type]
        )
        self.stop_requested = threading.Event()
        self.stats = WorkerStats()
        # Messages are sent through the relay they were saved with: a worker claims only
        # its own relay's, unless all_relays (the relay's credentials, SPF/DKIM alignment
        # and quotas belong to it).
        self._relay_filter = None if all_relays else self._make(load_policy("default")).relay
        if self._override is not None:  # known now: say at start if the lease is short
            self._sender_for(self._override.name)

    @property
    def relay(self) -> str | None:
        """The relay (``host:port``) whose saved messages this worker claims; None with
        ``all_relays``."""
        return self._relay_filter

    def _sender_for(self, name: str) -> Sender:
        policy = self._override or self._known.get(name)
        if policy is None:
            try:
                policy = load_policy(name)
            except MailPolicyError as exc:  # renamed or removed since the send, or a file
                policy = load_policy("default")
                if name not in self._fallbacks:
                    self._fallbacks.add(name)
                    events.worker_policy_fallback(policy=name, used="default", error=str(exc))
        sender = self._senders.get(policy.name)
        if sender is None:
            sender = self._senders[policy.name] = self._make(policy)
            self._check_lease(policy, sender)
        return sender

    def _check_lease(self, policy: Policy, sender: Sender) -> None:
        """Warn, once per policy, when one transaction may outlast the lease. The lease
        is renewed before each transaction, so a longer one (a server answering the
        final dot near the end of the RFC 5321 wait) lets another worker claim the
        message meanwhile and send it again. Not refused: crash-recovery tests and
        impatient setups use short leases knowingly."""
        if policy.name in self._lease_checked:
            return
        self._lease_checked.add(policy.name)
        needed = transaction_bound(policy.queue.end_of_data_timeout, sender.settings.timeout)
        if self.lease < needed:
            events.worker_lease_short(
                policy=policy.name,
                lease=self.lease,
                needed=needed,
                end_of_data_timeout=policy.queue.end_of_data_timeout,
                command_timeout=sender.settings.timeout,
            )

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()

    def _hold_relay(
        self, outcome: RecipientOutcome, until: float, sender: Sender, relay: RelayState
    ) -> None:
        if relay.hold(sender.settings.username, until):
            events.worker_relay_held(
                worker=self.owner,
                server=sender.relay,
                reason=outcome.reason,
                code=outcome.code,
                until=until,
            )

    def run_once(self) -> WorkerStats:
        """Deliver everything due now, and what becomes due while this runs (within the
        lease); then return. Stops early (releasing nothing claimed but unsent: each
        claim is finished or released) when :attr:`stop_requested` is set, which SIGTERM
        and SIGINT do while it runs in the main thread."""
        with stop_on_signals(self.stop_requested):
            return self._run_once()

    def _run_once(self) -> WorkerStats:
        try:
            while not self.stop_requested.is_set():
                claims = self.store.claim_due(
                    now=self._clock(),
                    owner=self.owner,
                    lease_seconds=self.lease,
                    limit=self.batch,
                    relay=self._relay_filter,
                )
                if not claims:
                    break
                self._deliver_batch(claims)
        finally:
            self.close()
        return self.stats

    def _deliver_batch(self, claims: list[Claim]) -> None:
        """Deliver a batch of claims one after another. The batch was leased at one
        instant, but its last message is sent only after the others: each claim's lease
        is renewed just before its delivery, so it covers that delivery and not the time
        spent on the ones before (a claim whose lease was lost meanwhile is skipped:
        another worker has it). Claims not reached (a stop request, an error) are
        released at once rather than left to expire."""
        started = 0
        try:
            for claim in claims:
                if self.stop_requested.is_set():
                    break
                started += 1
                renewed = self.store.renew(claim, now=self._clock(), lease_seconds=self.lease)
                if renewed is None:
                    self.stats.leases_lost += 1
                    events.worker_lease_lost(
                        message_id=claim.message.message_id, worker=self.owner, when="renewing"
                    )
                    continue
                self.deliver(renewed)
        finally:
            for rest in claims[started:]:
                with suppress(StoreError):  # an unreleased lease only expires
                    self.store.release(rest, now=self._clock())

    def run_forever(self, *, poll: float = 5.0, summary_every: float = 60.0) -> WorkerStats:
        """Keep delivering until :attr:`stop_requested` is set (by SIGTERM or SIGINT
        while it runs in the main thread), logging a ``mail.worker.summary`` event every
        ``summary_every`` seconds and purging message bodies past the store's retention
        as often."""
        with stop_on_signals(self.stop_requested):
            last_summary = self._clock()
            while not self.stop_requested.is_set():
                self.run_once()
                now = self._clock()
                if now - last_summary >= summary_every:
                    self.summary()
                    self.store.purge(now=now)
                    last_summary = now
                self.stop_requested.wait(poll)
            self.summary()
            return self.stats

    def summary(self) -> None:
        counts = self.store.counts(now=self._clock())
        events.worker_summary(
            owner=self.owner,
            delivered=self.stats.delivered,
            deferred=self.stats.deferred,
            bounced=self.stats.bounced,
            held=self.stats.held,
            queue_depth=counts.get("deferred", 0) + counts.get("held", 0),
            due=counts.get("due", 0),
        )

    def deliver(self, claim: Claim) -> None:
        """One attempt at a claimed message's due recipients; the result is recorded
        and the lease released in one store transaction."""
        self.stats.claims += 1
        sender = self._sender_for(claim.message.policy)
        policy = sender.policy
        relay = sender._relays.get(sender.settings.host, sender.settings.port)
        held_until = relay.held_until(sender.settings.username)
        if self._clock() < held_until:
            # The relay refused our credentials or TLS: each attempt would be one more
            # failed AUTH against the account's lockout limit (shared by this process's
            # worker threads). Wait for the hold to end.
            self.stats.circuit_waits += 1
            self.store.release(claim, now=self._clock(), next_attempt_at=held_until)
            return
        now_m = sender._monotonic()
        if not relay.allow_attempt(policy.circuit, now=now_m):
            # The relay is down or paused by a throttle: wait without spending an attempt
            # (DESIGN.md §4), until the next probe or the end of the pause.
            self.stats.circuit_waits += 1
            wait = max(policy.circuit.probe_every, relay.paused_for(now=now_m))
            self.store.release(claim, now=self._clock(), next_attempt_at=self._clock() + wait)
            return
        prepared = _prepared(claim)
        now = self._clock()
        updates = []
        due = []
        for r in claim.recipients:
            # An address suppressed since the message was deferred (another bounce, a
            # DSN, an operator) is not tried again: suppressed, without an attempt.
            entry = self.store.suppressed(r.wire, now=now)
            if entry is None:
                due.append(r)
                continue
            self.stats.count("suppressed")
            listed = RecipientOutcome(
                recipient=r.recipient,
                state="suppressed",
                reason=as_reason(entry.reason),
                code=entry.code,
                status=entry.status,
                text="on the suppression list: " + (entry.text or ""),
                attempts=r.attempts,
                rule="suppression-list",
                action="suppress",
            )
            updates.append(_update(r.key, listed))  # no attempt spent
            # One mail.delivery event per recipient per worker attempt, this one too.
            events.outcome(
                listed,
                message_id=claim.message.message_id,
                policy=sender.policy.name,
                server=sender.relay,
                style=sender.recipient_style,
                worker=self.owner,
            )
        pending = [_Pending(recipient=r.recipient, wire=r.wire, attempts=r.attempts) for r in due]
        envelope = check_address(prepared.envelope_from, mode="off")
        smtputf8 = prepared.smtputf8 or envelope.smtputf8  # an IDN domain alone needs none
        held = [claim]  # the claim as last renewed (its lease_until is its token)
        renewing = busy_retrying(self._sleep, attempts=RENEW_ATTEMPTS, multiplier=1, max_wait=4)

        def heartbeat() -> bool:
            # A delivery may take several transactions (a server taking one recipient
            # at a time), each up to the end-of-data wait: renew before each, so the
            # lease covers the transaction about to start, not only the first. When
            # that fails (lost to another worker, or the store stays locked), send
            # nothing more; what was delivered so far is still recorded below.
            try:
                renewed = renewing(
                    self.store.renew, held[0], now=self._clock(), lease_seconds=self.lease
                )
            except StoreError:
                return False
            if renewed is None:
                return False
            held[0] = renewed
            return True

        started = sender._monotonic()
        if pending:
            sender._run_attempt(
                prepared, envelope, pending, smtputf8=smtputf8, relay=relay,
                heartbeat=heartbeat,
            )  # fmt: skip
            claim = held[0]
            sender._apply_throttle(pending, relay, inline_done=True)  # no inline tier here
            # One mail.attempt event per SMTP attempt (DESIGN.md §5), numbered as the
            # message's attempts so far: the send()'s and the earlier workers' included.
            tried = [p for p in pending if not p.untried]
            if tried:
                number = max(p.attempts for p in tried)
                sender._emit_attempt(prepared, number, tried, started)
        elapsed_ms = (sender._monotonic() - started) * 1000
        now = self._clock()
        finished: list[tuple[str, RecipientOutcome]] = []
        for stored, p in zip(due, pending, strict=True):
            if p.untried:
                # The delivery stopped before naming it: no attempt, nothing happened;
                # it stays as it was, due again a little later (not at once, or this
                # run would claim it straight back).
                updates.append(
                    RecipientUpdate(
                        key=stored.key, state=stored.state, reason=stored.reason,
                        code=stored.code, status=stored.status, text=stored.text,
                        ambiguous=stored.ambiguous, next_attempt_at=now + UNTRIED_DELAY,
                        if_updated_at=stored.updated_at,  # not over another's result
                    )
                )  # fmt: skip
                continue
            first_failure_at, history = _schedule_clock(
                self.store.journal(recipient_key=stored.key), stored.first_failure_at, now
            )
            outcome = sender._finish(p, first_failure_at, now, history)
            finished.append((p.wire, outcome))
            self.stats.count(outcome.state)
            if outcome.state == "held" and outcome.reason in _OUR_CONFIGURATION:
                self._hold_relay(outcome, now + policy.queue.hold_for, sender, relay)
            updates.append(_update(stored.key, outcome, attempted_at=now))
            events.outcome(
                replace(outcome, persisted=outcome.state in ("deferred", "held")),
                message_id=claim.message.message_id,
                policy=policy.name,
                server=sender.relay,
                style=sender.recipient_style,
                elapsed_ms=elapsed_ms,
                worker=self.owner,
            )
        # The server has answered: what it said must not be lost to a briefly locked
        # database (a backup, a purge, the web application saving), or the message would
        # be sent again once the lease expires. Retry on the injected sleep.
        recording = busy_retrying(
            self._sleep,
            attempts=RECORD_ATTEMPTS,
            multiplier=1,
            max_wait=30,
            before_sleep=lambda state: events.worker_store_busy(
                message_id=claim.message.message_id,
                worker=self.owner,
                attempt=state.attempt_number,
                error=events.shown_error(state.outcome.exception(), sender.recipient_style)
                if state.outcome
                else "",
            ),
        )
        if not recording(self.store.record_attempt, claim, updates, now=now):
            self.stats.leases_lost += 1
            events.worker_lease_lost(
                message_id=claim.message.message_id, worker=self.owner, when="recording"
            )
        # Only then the suppression list: the attempt is safe in the journal, so a list
        # that stays locked costs at worst one more attempt at a dead address later,
        # never a second copy to a recipient who accepted the message.
        for wire, outcome in finished:
            try:
                sender._suppress_if_dead(self.store, wire, outcome, now, write=recording)
            except StoreError as exc:
                events.worker_suppression_failed(
                    message_id=claim.message.message_id,
                    worker=self.owner,
                    error=events.shown_error(exc, sender.recipient_style),
                )
