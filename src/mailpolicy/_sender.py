"""The Sender: delivers messages through smtplib with per-recipient outcomes.

Flow of one ``send()`` (DESIGN.md §1): prepare (serialise once) → pre-validate every
envelope address → transactions on one reused connection → classify every reply →
the policy decides → the inline tier (tenacity) retries what it may within the
in-request budget → what remains transient is ``deferred`` with ``next_attempt_at`` →
one ``mail.delivery`` event per recipient.
"""

from __future__ import annotations

import math
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from . import _events as events
from ._address import CheckedAddress, check_address, check_address_cached
from ._classify import Verdict, decide_on
from ._errors import ConfigurationError
from ._inline import AttemptInfo, InlineRetrier
from ._message import PreparedMessage, prepare_message, seven_bit
from ._outcome import DeliveryReport, RecipientOutcome, State, utc
from ._policy import AddressSettings, Decision, Policy, SuppressionSettings, is_soft_bounce
from ._policy_load import load_policy
from ._queue import next_step
from ._relaystate import RELAYS, RelayRegistry, RelayState
from ._schedule import Rng, default_rng
from ._session import (
    SECURITY_MODES,
    ConnectionSettings,
    RecipientResult,
    Security,
    Session,
    StageError,
)
from ._store import NewRecipient, Store, StoreError, attempt_of, busy_retrying, open_store
from ._vocab import Kind, Reason, Scope, Stage, as_reason

#: Tries at a store write while the database stays locked, inside send().
STORE_WRITE_ATTEMPTS: Final = 3
_DEFAULT_PORTS: Final[dict[str, int]] = {"ssl": 465, "starttls": 587, "none": 25}
#: Stages at which a failure is the relay's, for the circuit breaker.
_CONNECTION_STAGES: Final = frozenset({"connect", "greeting", "ehlo", "starttls"})
_NETWORK_REASONS: Final = frozenset({"network_error", "timeout"})


@dataclass(slots=True)
class _Pending:
    """One recipient during a send: its wire address and what happened so far."""

    recipient: str
    wire: str
    attempts: int = 0
    verdict: Verdict | None = None
    text: str = ""
    decision: Decision | None = None
    ambiguous: bool = False
    #: The attempt stopped before naming it (the worker's lease could not be renewed):
    #: nothing happened to it, nothing is to be recorded.
    untried: bool = False


@dataclass(frozen=True, slots=True)
class _AttemptOutcome:
    """What one attempt tells the inline tier: retry inline if any recipient's decision
    asks for it, waiting at least the longest delay a server announced."""

    decision: Decision
    retry_after: float | None = None


_RETRY: Final = Decision(action="retry", rule="inline", retry=True, suppress=False)
#: The tier is done: some recipient was delivered (the relay works) ...
_DONE: Final = Decision(action="deliver", rule="done", retry=False, suppress=False)
#: ... or none was, and nothing asks for an inline retry: not a success for the relay.
_STOP: Final = Decision(action="defer", rule="done", retry=False, suppress=False)


def _no_reply(
    kind: Kind, reason: Reason, rule: str, *, scope: Scope, stage: Stage | None
) -> Verdict:
    """A verdict the Sender makes itself, with no reply behind it (no code, no status):
    a paused relay, an open circuit, a recipient not tried, an extension not offered."""
    return Verdict(
        code=None,
        status=None,
        kind=kind,
        reason=reason,
        retry=kind == "transient",
        suppress=False,
        scope=scope,
        retry_after=None,
        rule=rule,
        stage=stage,
    )


#: What a recipient not tried because a throttle paused the relay is told.
_RELAY_PAUSED: Final = _no_reply(
    "transient", "rate_limited", "relay.paused", scope="relay", stage=None
)
_CIRCUIT_OPEN: Final = _no_reply(
    "transient", "network_error", "circuit.open", scope="relay", stage="connect"
)


def address_checker(settings: AddressSettings) -> Callable[[str], CheckedAddress]:
    """Pre-validation of one address under a policy's ``[address]`` settings; syntax
    verdicts (no DNS) are remembered (:func:`check_address_cached`)."""
    allow = frozenset(d.lower() for d in settings.allow_domains)
    mode = settings.mode
    if not settings.check_deliverability:
        return lambda address: (
            check_address_cached(address, mode, allow)
            if isinstance(address, str)
            else check_address(address, mode=mode, allow_domains=allow)
        )
    return lambda address: check_address(
        address, mode=mode, check_deliverability=True, allow_domains=allow
    )


def prevalidate(
    prepared: PreparedMessage, policy: Policy
) -> tuple[CheckedAddress, dict[str, RecipientOutcome], list[tuple[str, str]]]:
    """Pre-validate a prepared message's envelope (DESIGN.md §4): the sender's verdict,
    the ``invalid`` outcomes (no SMTP command will name those recipients), and the
    valid recipients with their wire addresses, in order."""
    check = address_checker(policy.address)
    sender = check(prepared.envelope_from)
    invalid: dict[str, RecipientOutcome] = {}
    valid: list[tuple[str, str]] = []
    for recipient in prepared.recipients:
        if not sender.ok:
            invalid[recipient] = RecipientOutcome(
                recipient=recipient,
                state="invalid",
                reason="sender_rejected",
                text=f"envelope sender {prepared.envelope_from!r} refused: {sender.error}",
                rule="prevalidation.sender",
                action="bounce",
            )
            continue
        checked = check(recipient)
        if checked.ok:
            valid.append((recipient, checked.wire or recipient))
        else:
            invalid[recipient] = RecipientOutcome(
                recipient=recipient,
                state="invalid",
                reason="mailbox_name_invalid",
                text=checked.error or "invalid address",
                rule=f"prevalidation.{policy.address.mode}",
                action="bounce",
            )
    return sender, invalid, valid


def _resolve_policy(policy: Policy | str | Path | None) -> Policy:
    if policy is None:
        return load_policy("default")
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str | Path):
        return load_policy(policy)
    raise ConfigurationError(
        f"policy must be a Policy, a name or a path, not {type(policy).__name__}"
    )


#: What EHLO may carry as our name: one token, no spaces, no control characters (a CR/LF
#: there would be a second SMTP command).
_HOSTNAME_OK: Final = re.compile(r"[^\x00-\x20\x7f]{1,255}")


def is_seconds(value: object) -> bool:
    """Whether ``value`` is a usable timeout: a finite number of seconds above 0 (not a
    bool, not inf or NaN). The Sender and the integrations' settings check with it."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )


def _check_seconds(name: str, value: object) -> None:
    """A timeout is None (the default) or a finite number of seconds above 0."""
    if value is not None and not is_seconds(value):
        raise ConfigurationError(
            f"{name} must be a finite number of seconds above 0, not {value!r}"
        )


class Sender:
    """Delivers ``email.message.EmailMessage`` objects through one SMTP relay.

    A context manager that reuses one connection across ``send()`` calls; entering it
    opens nothing (the connection opens on first need). ``policy`` is a
    :class:`~mailpolicy.Policy`, a shipped policy's name or a path (default:
    ``"default"``). ``security`` is ``"starttls"`` (required: no plaintext fallback),
    ``"ssl"`` (implicit TLS) or ``"none"``; TLS is verified with ``ssl_context`` or
    ``ssl.create_default_context()``. AUTH happens only over TLS unless
    ``allow_insecure_auth=True``. ``timeout`` is the socket timeout per command
    (default: the policy's ``[inline] attempt_timeout``). ``connection`` hands over an
    open ``smtplib.SMTP``. ``end_of_data_timeout`` is the wait for the reply after the
    final dot; by default a ``send()`` cuts it at the policy's in-request deadline (a cut
    there is an ambiguous outcome), while the worker waits the full RFC 5321 10 minutes.
    ``clock`` (wall seconds), ``monotonic`` and ``sleep`` are
    injectable for tests; ``relays`` holds per-relay budgets and circuits (default: the
    process-wide registry).

    One Sender may be shared between threads: its ``send()``, ``open()`` and ``close()``
    take turns on its one connection (an SMTP connection carries one transaction at a
    time). For parallel sending, give each thread its own Sender.
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        policy: Policy | str | Path | None = None,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = None,
        local_hostname: str | None = None,
        store: Store | str | None = None,
        allow_insecure_auth: bool = False,
        connection: smtplib.SMTP | None = None,
        recipient_style: events.RecipientStyle = "mask",
        end_of_data_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Rng | None = None,
        relays: RelayRegistry | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigurationError("host must be a non-empty str")
        if security not in SECURITY_MODES:
            raise ConfigurationError(
                f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}"
            )
        if (username is None) != (password is None):
            raise ConfigurationError("give username and password together")
        if username is not None and security == "none" and not allow_insecure_auth:
            raise ConfigurationError(
                "AUTH over a plaintext connection would expose the password: use "
                'security="starttls" or "ssl", or set allow_insecure_auth=True'
            )
        _check_seconds("timeout", timeout)
        _check_seconds("end_of_data_timeout", end_of_data_timeout)
        if port is not None and not (
            isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
        ):
            raise ConfigurationError(f"port must be an int from 1 to 65535, not {port!r}")
        for name, value in (("username", username), ("password", password)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name} must be a str, not {type(value).__name__}")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ConfigurationError(
                f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}"
            )
        if not isinstance(allow_insecure_auth, bool):
            # "false" from an environment variable is truthy: it must not send a password
            # in the clear.
            raise ConfigurationError(
                f"allow_insecure_auth must be True or False, not {allow_insecure_auth!r}"
            )
        if local_hostname is not None and not _HOSTNAME_OK.fullmatch(
            local_hostname if isinstance(local_hostname, str) else ""
        ):
            raise ConfigurationError(
                "local_hostname must be one host name or address literal without spaces "
                f"or control characters, not {local_hostname!r}"
            )
        if recipient_style not in events.RECIPIENT_STYLES:
            raise ConfigurationError(f"recipient_style must be one of {events.RECIPIENT_STYLES}")
        self.policy = _resolve_policy(policy)
        self.recipient_style = recipient_style
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng: Rng = rng if rng is not None else default_rng
        self._fixed_timeout = timeout
        self._end_of_data_timeout = end_of_data_timeout
        self.settings = ConnectionSettings(
            host=host,
            port=port if port is not None else _DEFAULT_PORTS[security],
            security=security,
            username=username,
            password=password,
            ssl_context=ssl_context,
            timeout=float(timeout if timeout is not None else self.policy.inline.attempt_timeout),
            end_of_data_timeout=self.policy.queue.end_of_data_timeout,
            local_hostname=local_hostname,
            allow_insecure_auth=allow_insecure_auth,
            rules=self.policy.classifier,
        )
        self._session = Session(self.settings, connection)
        # One transaction at a time on the one connection: two threads interleaving
        # MAIL/RCPT/DATA on it deliver one thread's message to the other's recipients.
        self._lock = threading.RLock()
        self._relay = self.settings.relay
        self._relays = relays if relays is not None else RELAYS
        self.store: Store | None = None if store is None else open_store(store)
        self._owns_store = isinstance(store, str)

    def __repr__(self) -> str:
        s = self.settings
        user = f", username={s.username!r}" if s.username else ""
        return (
            f"Sender({s.host!r}, {s.port}, security={s.security!r}{user}, "
            f"policy={self.policy.name!r})"
        )

    @property
    def relay(self) -> str:
        """The ``host:port`` this Sender's budgets, circuits and saved messages belong
        to (host lower-cased; worked out once, it is read several times a send)."""
        return self._relay

    @property
    def connection(self) -> smtplib.SMTP | None:
        """The current smtplib connection, if one is open."""
        return self._session.connection

    def open(self) -> None:
        """Connect now (once, without retries). Raises the failure's ``StageError``."""
        with self._lock:
            self._session.open()

    def close(self) -> None:
        """QUIT and close the connection, if one is open (and a store opened from a URL)."""
        with self._lock:
            self._session.close()
            if self.store is not None and self._owns_store:
                self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- send --------------------------------------------------------------------------

    def send(
        self,
        message: Message,
        *,
        envelope_from: str | None = None,
        recipients: Iterable[str] | None = None,
    ) -> DeliveryReport:
        """Deliver ``message``; one :class:`RecipientOutcome` per envelope recipient.

        Delivery failures are outcomes, never exceptions. Raises
        :class:`~mailpolicy.MessageError` for a message that cannot be sent as given
        (no recipients, header injection, not serialisable).
        """
        prepared = prepare_message(message, envelope_from=envelope_from, recipients=recipients)
        with self._lock:
            return self._send_prepared(prepared)

    def _send_prepared(self, prepared: PreparedMessage) -> DeliveryReport:
        started = self._monotonic()
        policy = self.policy
        sender, outcomes, valid = prevalidate(prepared, policy)
        pending: list[_Pending] = []
        smtputf8 = prepared.smtputf8 or sender.smtputf8
        for recipient, wire in valid:
            hit = self._suppressed(wire)
            if hit is not None:
                outcomes[recipient] = replace(hit, recipient=recipient)
            else:
                pending.append(_Pending(recipient=recipient, wire=wire))
        if pending:
            self._deliver(prepared, sender, pending, smtputf8=smtputf8, outcomes=outcomes)

        def report() -> DeliveryReport:
            return DeliveryReport(
                message_id=prepared.message_id,
                envelope_from=prepared.envelope_from,
                relay=self.relay,
                policy=policy.name,
                outcomes=tuple(outcomes[r] for r in prepared.recipients),
                elapsed_ms=(self._monotonic() - started) * 1000,
            )

        try:
            self._persist(prepared, pending, outcomes)
        except StoreError as exc:
            # Deferred recipients could not be saved: raise (never lose them silently),
            # but with what the server did say, so a caller does not resend to the
            # recipients it already accepted.
            exc.report = report()
            self._emit(exc.report)
            raise
        done = report()
        self._emit(done)
        return done

    def _suppressed(self, address: str) -> RecipientOutcome | None:
        """The outcome for an address on the suppression list (checked before any SMTP
        traffic), or None."""
        if self.store is None or not self._suppression_for(address).check_before_send:
            return None
        entry = self.store.suppressed(address, now=self._clock())
        if entry is None:
            return None
        return RecipientOutcome(
            recipient=address,
            state="suppressed",
            reason=as_reason(entry.reason),
            code=entry.code,
            status=entry.status,
            text=f"on the suppression list since {utc(entry.created_at).isoformat()}: "
            + (entry.text or entry.reason),
            rule="suppression-list",
            action="suppress",
        )

    def _persist(
        self,
        prepared: PreparedMessage,
        pending: list[_Pending],
        outcomes: dict[str, RecipientOutcome],
    ) -> None:
        """With a store: save the message when a recipient is deferred or held, before
        ``send()`` returns, then add dead addresses to the suppression list. A database
        locked past its busy timeout is tried again (a few times, on the injected sleep):
        the server has answered, and raising would tell the caller nothing about the
        recipients it accepted. A failure to save still raises (StoreError, with the
        report): nothing is lost silently. A failure to write the suppression list is
        logged (``mail.suppression_failed``): the mail itself is safe."""
        store = self.store
        if store is None:
            return
        now = self._clock()
        wires = {p.recipient: p.wire for p in pending}
        if any(o.state in ("deferred", "held") for o in outcomes.values()):
            records = []
            for recipient in prepared.recipients:
                o = outcomes[recipient]
                attempt = attempt_of(o, now)
                pending_state = o.state in ("deferred", "held")
                records.append(
                    NewRecipient(
                        recipient=recipient,
                        wire=wires.get(recipient, recipient),
                        state=o.state,
                        reason=o.reason,
                        code=o.code,
                        status=o.status,
                        text=o.text,
                        attempts=o.attempts,
                        ambiguous=o.ambiguous,
                        first_failure_at=now if pending_state else None,
                        next_attempt_at=o.next_attempt_at.timestamp()
                        if pending_state and o.next_attempt_at is not None
                        else (now if pending_state else None),
                        history=(attempt,) if o.attempts else (),
                    )
                )
            self._store_write(
                store.save_deferred,
                prepared,
                policy=self.policy.name,
                relay=self.relay,
                recipients=records,
                now=now,
            )
            for recipient, o in list(outcomes.items()):
                if o.state in ("deferred", "held"):
                    outcomes[recipient] = replace(o, persisted=True)
        for o in outcomes.values():
            try:
                self._suppress_if_dead(
                    store, wires.get(o.recipient, o.recipient), o, now, write=self._store_write
                )
            except StoreError as exc:
                events.suppression_failed(
                    message_id=prepared.message_id,
                    error=events.shown_error(exc, self.recipient_style),
                )

    def _store_write(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``write`` with a few tries while the database stays locked (StoreBusyError):
        waits of 0.5, 1 and 2 s on the injected sleep, each try itself waiting up to the
        store's busy timeout."""
        retrying = busy_retrying(
            self._sleep, attempts=STORE_WRITE_ATTEMPTS, multiplier=0.5, max_wait=2
        )
        return retrying(write, *args, **kwargs)

    def _suppression_for(self, address: str) -> SuppressionSettings:
        """The ``[suppression]`` settings for an address: its destination's, if any."""
        return self.policy.suppression_for(address.rpartition("@")[2])

    def _suppress_if_dead(
        self,
        store: Store,
        address: str,
        o: RecipientOutcome,
        now: float,
        *,
        write: Callable[..., Any] = lambda call, *a, **k: call(*a, **k),
    ) -> None:
        """Add ``address`` to the suppression list when the policy suppressed it, or when
        this soft bounce is the policy's ``soft_bounce_limit``-th within
        ``soft_bounce_window``.

        A soft bounce is a message that *ended* undelivered for a reason that says
        something about the address without proving it dead: a permanent "mailbox full",
        or the queue giving up after retrying a full mailbox or a 4xx "user unknown".
        Each message counts once, when it ends; its retries count for nothing: one
        message to a full mailbox, retried for days, must not list the address
        (DESIGN.md §2: no suppression for a 4xx)."""
        suppression = self._suppression_for(address)
        if not suppression.enabled:
            return
        text = o.text
        if o.action != "suppress" or o.state != "bounced":
            # Never a hard bounce the policy chose not to suppress: that was the
            # policy's decision, not a count to reach.
            gave_up = o.action not in ("bounce", "suppress")
            soft = o.state == "bounced" and is_soft_bounce(o.reason, gave_up=gave_up)
            if not soft or suppression.soft_bounce_limit <= 0:
                return
            # Each write on its own through ``write`` (a retry on a locked store): retrying
            # both together would count this soft bounce twice.
            count = write(
                store.record_soft_bounce, address, now=now, window=suppression.soft_bounce_window
            )
            if count < suppression.soft_bounce_limit:
                return
            text = f"{count} soft bounces within the policy's window; last: {o.text}"
        write(
            store.add_suppression,
            address,
            reason=o.reason,
            now=now,
            ttl=suppression.ttl,
            code=o.code,
            status=o.status,
            text=text,
            policy=self.policy.name,
        )

    def _deliver(
        self,
        prepared: PreparedMessage,
        sender: CheckedAddress,
        pending: list[_Pending],
        *,
        smtputf8: bool,
        outcomes: dict[str, RecipientOutcome],
    ) -> None:
        policy = self.policy
        relay = self._relays.get(self.settings.host, self.settings.port)
        first_failure_at: float | None = None
        todo = list(pending)
        started = self._monotonic()
        # [[destinations]] may override [inline]: one message shares one inline tier, so
        # the destination's settings apply when every recipient is in it.
        destinations = {policy.destination_for(p.wire.rpartition("@")[2]) for p in pending}
        only = next(iter(destinations)) if len(destinations) == 1 else None
        inline = policy.inline if only is None else only.inline

        def attempt(info: AttemptInfo) -> _AttemptOutcome:
            nonlocal todo, first_failure_at
            if not relay.allow_attempt(policy.circuit, now=self._monotonic()):
                # The relay is down (its circuit is open) or paused by a throttle: defer
                # at once, spending no attempt (DESIGN.md §4).
                paused = relay.paused_for(now=self._monotonic())
                why = (
                    f"relay paused for {paused:.0f}s more after a rate limit (throttle)"
                    if paused
                    else "circuit open: relay recently unreachable"
                )
                if info.number > 1:  # the inline tier took this retry's tokens
                    relay.refund_retry(policy.budget)
                for p in todo:
                    if p.verdict is None:  # never tried; else its real failure stays
                        p.verdict, p.text = (_RELAY_PAUSED if paused else _CIRCUIT_OPEN), why
                    destination = policy.destination_for(p.wire.rpartition("@")[2])
                    p.decision = Decision(
                        action="defer",
                        rule="relay-paused" if paused else "circuit-open",
                        retry=True,
                        suppress=False,
                        min_delay=paused,
                        # the recipient's destination's [queue] schedules the deferral
                        destination=None if destination is None else destination.name,
                    )
                todo = []
                return _AttemptOutcome(_STOP)
            # DESIGN.md §4, one precedence: the Sender's timeout (or the policy's
            # attempt_timeout cut to the time left) per command; the wait after the final
            # dot is cut by the in-request deadline (a cut there is ambiguous) unless an
            # explicit end_of_data_timeout says otherwise (the worker's RFC 5321 wait).
            left = inline.deadline - (self._monotonic() - started)
            timeout = self.settings.timeout
            if self._fixed_timeout is None and info.timeout > 0:
                timeout = info.timeout
            eod = self._end_of_data_timeout
            within = eod is None  # an explicit end_of_data_timeout is waited in full
            if eod is None:
                eod = policy.queue.end_of_data_timeout
            # The whole attempt (not only each command) stays within the deadline: the
            # session cuts each command's wait, connecting and the wait after the final
            # dot included, to what is left when it starts (on the real clock).
            deadline_at = time.monotonic() + max(left, 0.0)
            self._session.settings = replace(
                self.settings,
                timeout=timeout,
                end_of_data_timeout=eod,
                deadline_at=deadline_at,
                end_of_data_within_deadline=within,
            )
            attempt_started = self._monotonic()
            self._run_attempt(prepared, sender, todo, smtputf8=smtputf8, relay=relay)
            self._apply_throttle(todo, relay)
            self._emit_attempt(prepared, info.number, todo, attempt_started)
            if first_failure_at is None and any(
                p.decision and p.decision.action != "deliver" for p in todo
            ):
                first_failure_at = self._clock()
            again = [p for p in todo if p.decision is not None and p.decision.inline]
            announced = [
                p.verdict.retry_after for p in again if p.verdict and p.verdict.retry_after
            ]
            tried, todo = todo, again
            if again:
                return _AttemptOutcome(_RETRY, max(announced) if announced else None)
            # Only a delivery in this attempt counts as the relay's success (closing its
            # circuit and refunding the retries that led to it): bounces, holds and
            # deferrals do not, nor a co-recipient delivered by an earlier attempt.
            delivered = any(p.decision and p.decision.action == "deliver" for p in tried)
            return _AttemptOutcome(_DONE if delivered else _STOP)

        try:
            InlineRetrier(
                inline,
                clock=self._monotonic,
                sleep=self._sleep,
                rng=self._rng,
                relay=relay,
                budget=policy.budget,
            ).run(attempt)
        finally:
            # The deadline belongs to this send(): a later open(), QUIT or the worker's
            # attempt on the same connection waits the plain per-command timeouts.
            self._session.end_request(self.settings)
        self._apply_throttle(pending, relay, inline_done=True)
        now = self._clock()
        for p in pending:
            outcomes[p.recipient] = self._finish(p, first_failure_at or now, now)

    def _run_attempt(
        self,
        prepared: PreparedMessage,
        sender: CheckedAddress,
        todo: list[_Pending],
        *,
        smtputf8: bool,
        relay: RelayState,
        heartbeat: Callable[[], bool] | None = None,
    ) -> None:
        """One attempt: as many transactions as rebatching needs, on one connection.
        ``smtputf8`` says the message itself (headers, envelope sender) needs SMTPUTF8;
        recipients that need it are known from their wire addresses. ``heartbeat`` runs
        before each transaction after the first (the worker renews its lease there: each
        transaction may wait the full end-of-data timeout); when it returns False, the
        recipients left are marked ``untried`` (no attempt counted) and the attempt ends
        normally, so what the earlier transactions delivered is still judged and
        recorded."""
        policy = self.policy
        batch = list(todo)
        for p in todo:
            p.attempts += 1
        first = True
        while batch:
            if heartbeat is not None and not first and not heartbeat():
                for p in batch:  # left as they were: no attempt spent, nothing to record
                    p.attempts -= 1
                    p.untried = True
                return
            first = False
            try:
                self._session.open()
                use_utf8 = smtputf8 or any(not p.wire.isascii() for p in batch)
                if use_utf8 and not self._session.supports("smtputf8"):
                    # DESIGN.md §4: only what needs SMTPUTF8 fails: every recipient when
                    # the message or its sender does, else just the internationalised
                    # addresses, and the others go out without it.
                    needy = batch if smtputf8 else [p for p in batch if not p.wire.isascii()]
                    self._no_smtputf8(needy)
                    batch = [p for p in batch if p not in needy]
                    if not batch:
                        return
                    use_utf8 = False
                outgoing = prepared
                if prepared.eight_bit and not use_utf8 and not self._session.supports("8bitmime"):
                    # RFC 6152 §3: no 8-bit data to a server without 8BITMIME (SMTPUTF8
                    # implies it, RFC 6531 §3.1). Re-encoded as 7-bit MIME, or not sent.
                    converted = seven_bit(prepared)
                    if converted is None:
                        self._local_failure(
                            batch,
                            rule="local.8bitmime-not-offered",
                            text=(
                                f"{self.settings.host} does not offer 8BITMIME and this "
                                "message has 8-bit data that cannot be re-encoded as 7-bit "
                                "MIME; nothing was sent"
                            ),
                        )
                        return
                    outgoing = converted
                results = self._session.transaction(
                    outgoing,
                    sender.wire or prepared.envelope_from,
                    [(p.recipient, p.wire) for p in batch],
                    smtputf8=use_utf8,
                )
            except StageError as failure:
                verdict = failure.verdict
                if verdict.stage in _CONNECTION_STAGES or verdict.reason in _NETWORK_REASONS:
                    relay.record_failure(policy.circuit, now=self._monotonic())
                for p in batch:
                    self._judge(p, RecipientResult(p.recipient, verdict, failure.text))
                return
            relay.record_connected()
            by_recipient = {r.recipient: r for r in results}
            rebatch: list[_Pending] = []
            for p in batch:
                result = by_recipient[p.recipient]
                if result.rebatch and self._session.is_open:
                    rebatch.append(p)
                    continue
                self._judge(p, result)
            if rebatch and len(rebatch) == len(batch):
                # The server took no recipient at all in that transaction: not a batch
                # size problem, and a new transaction now would be refused the same way
                # (a worker would loop on it). A transient failure: the queue's schedule.
                for p in rebatch:
                    self._judge(p, by_recipient[p.recipient])
                    if p.decision is not None and p.decision.action == "rebatch":
                        queue = policy.queue_for(p.wire.rpartition("@")[2])
                        p.decision = replace(
                            p.decision,
                            action="defer",
                            schedule=queue.schedule,
                            give_up_after=queue.give_up_after,
                        )
                return
            batch = rebatch

    def _apply_throttle(
        self, judged: Sequence[_Pending], relay: RelayState, *, inline_done: bool = False
    ) -> None:
        """A ``throttle`` decision on a relay-wide rate limit pauses the relay for its
        ``pause``; so does a ``retry`` decision with a ``pause`` once its inline retries
        are used up (``inline_done``: a 421 rate limit is retried inline like any 421,
        then slows the relay). One mailbox's rate limit (Gmail's "the user you are trying
        to contact is receiving mail at a rate...", scope ``recipient``) defers that
        recipient for at least the pause (the queue's floor) and leaves every other
        destination alone."""
        pausing = ("throttle", "retry") if inline_done else ("throttle",)
        pauses = [
            p.decision.pause
            for p in judged
            if p.decision is not None
            and p.decision.action in pausing
            and p.decision.pause
            and (p.verdict is None or p.verdict.scope == "relay")
        ]
        if pauses:
            relay.pause(self._monotonic() + max(pauses))

    def _no_smtputf8(self, batch: list[_Pending]) -> None:
        self._local_failure(
            batch,
            rule="local.smtputf8-not-offered",
            text=(
                f"{self.settings.host} does not offer SMTPUTF8, which this message needs "
                "(an internationalised address); nothing was sent"
            ),
        )

    def _local_failure(self, batch: list[_Pending], *, rule: str, text: str) -> None:
        """The server lacks an extension the message needs: bounced before MAIL, with
        nothing sent (a permanent protocol mismatch, not the recipients' fault)."""
        verdict = _no_reply("permanent", "protocol_error", rule, scope="message", stage="mail")
        decision_rule = rule.removeprefix("local.").removesuffix("-not-offered")
        for p in batch:
            p.verdict, p.text = verdict, text
            p.decision = Decision(action="bounce", rule=decision_rule, retry=False, suppress=False)

    def _judge(self, p: _Pending, result: RecipientResult) -> None:
        verdict = result.verdict
        if verdict is None:  # pragma: no cover - every transaction result has a verdict
            return
        p.verdict, p.text, p.ambiguous = verdict, result.text, result.ambiguous
        decision = decide_on(
            self.policy, verdict, text=result.text, domain=p.wire.rpartition("@")[2]
        )
        if result.ambiguous and decision.inline:
            # DESIGN.md §1: an ambiguous failure is never retried inline, whatever the
            # policy says; the queue retries it (at-least-once).
            decision = replace(decision, action="defer")
        p.decision = decision

    def _finish(
        self,
        p: _Pending,
        first_failure_at: float,
        now: float,
        history: Sequence[float] | None = None,
    ) -> RecipientOutcome:
        """The outcome of a judged recipient; a deferral is scheduled by the queue tier
        with ``history`` (the times of the failed attempts so far, this one included;
        default: just this one)."""
        verdict, decision = p.verdict, p.decision
        if verdict is None or decision is None:  # pragma: no cover - attempted at least once
            raise AssertionError("recipient never attempted")
        state: State
        next_at = None
        action = decision.action
        if action == "deliver":
            state = "delivered"
        elif action in ("bounce", "suppress"):
            state = "bounced"
        elif action == "hold":
            state = "held"
            next_at = utc(now + self.policy.queue_for(p.wire.rpartition("@")[2]).hold_for)
        else:
            step = next_step(
                self.policy,
                decision,
                first_failure_at=first_failure_at,
                history=[now] if history is None else history,
                now=now,
                retry_after=verdict.retry_after,
                rng=self._rng,
            )
            if step.action == "bounce":
                state = "bounced"
            else:
                state = "deferred"
                at = step.next_attempt_at if step.next_attempt_at is not None else now
                next_at = utc(at)
        reason: Reason = verdict.reason
        return RecipientOutcome(
            recipient=p.recipient,
            state=state,
            reason=reason,
            code=verdict.code,
            status=verdict.status,
            text=p.text,
            attempts=p.attempts,
            ambiguous=p.ambiguous,
            next_attempt_at=next_at,
            persisted=False,
            rule=verdict.rule,
            action=action,
        )

    def _emit_attempt(
        self, prepared: PreparedMessage, number: int, tried: list[_Pending], started: float
    ) -> None:
        states: dict[str, int] = {}
        for p in tried:
            action = p.decision.action if p.decision else "none"
            states[action] = states.get(action, 0) + 1
        first = next((p.verdict for p in tried if p.verdict and p.verdict.kind != "success"), None)
        events.attempt(
            message_id=prepared.message_id,
            server=self.relay,
            attempt=number,
            recipients=len(tried),
            actions=states,
            reason=None if first is None else first.reason,
            code=None if first is None else first.code,
            stage=None if first is None else first.stage,
            elapsed_ms=round((self._monotonic() - started) * 1000, 3),
        )

    def _emit(self, report: DeliveryReport) -> None:
        for o in report.outcomes:
            events.outcome(
                o,
                message_id=report.message_id,
                policy=report.policy,
                server=report.relay,
                style=self.recipient_style,
                elapsed_ms=report.elapsed_ms,
            )
