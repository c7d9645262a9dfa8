"""Per-relay runtime state: the inline retry budget and the circuit breaker.

A *relay* is the ``host:port`` the sender connects to (DESIGN.md §3). The state lives in
a process-wide :class:`RelayRegistry` (:data:`RELAYS` by default), outside any one
sender object, because Django builds a new e-mail backend for every send. Every method
is thread-safe, and time is always passed in (``now``), never read.

Budget (botocore's retry quota, gRPC's retry throttling): the bucket starts full at
``capacity``; an inline retry takes ``retry_cost`` tokens or is not made (the recipient is
deferred instead, never dropped); a first-try success returns ``success_refund``; a
success after retries returns what those retries took.

Circuit: ``open_after`` consecutive connection-level failures open it; while open,
:meth:`RelayState.allow_attempt` refuses (the caller defers without connecting) except
for one probe per ``probe_every``; a success closes it, a failed probe keeps it open.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

from ._policy import BudgetSettings, CircuitSettings

CircuitState = Literal["closed", "open", "half_open"]


def relay_key(host: str, port: int) -> str:
    """The registry key of a relay: ``host:port``, host lower-cased without a final dot
    (``[::1]:25`` for an IPv6 literal)."""
    host = host.lower().rstrip(".")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RelaySnapshot:
    """A consistent copy of one relay's state, for logs and tests."""

    relay: str
    tokens: int | None  # None: full, the bucket not used yet
    consecutive_failures: int
    circuit: CircuitState
    opened_at: float | None


class RelayState:
    """The budget and circuit of one relay. Settings are passed per call, so the last
    policy used decides (a relay shared by policies with different budgets is clamped to
    the smaller capacity seen)."""

    def __init__(self, relay: str) -> None:
        self.relay = relay
        self._lock = threading.Lock()
        self._tokens: int | None = None  # None: full (capacity unknown until first use)
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None
        self._paused_until = 0.0
        # Per username (None: no AUTH): until when (wall clock) the relay refused that
        # configuration (credentials, TLS) and no worker should try it again.
        self._held_until: dict[str | None, float] = {}

    # --- budget ------------------------------------------------------------------------

    def _fill(self, budget: BudgetSettings) -> int:
        if self._tokens is None or self._tokens > budget.capacity:
            self._tokens = budget.capacity
        return self._tokens

    def acquire_retry(self, budget: BudgetSettings) -> bool:
        """Take ``retry_cost`` tokens for one inline retry; False (and take nothing) when
        the bucket holds fewer."""
        with self._lock:
            tokens = self._fill(budget)
            if tokens < budget.retry_cost:
                return False
            self._tokens = tokens - budget.retry_cost
            return True

    def refund_retry(self, budget: BudgetSettings) -> None:
        """Give back the tokens of an inline retry that was never made (the circuit
        opened, or a throttle paused the relay, between taking them and connecting)."""
        with self._lock:
            tokens = self._fill(budget)
            self._tokens = min(budget.capacity, tokens + budget.retry_cost)

    def record_success(self, budget: BudgetSettings, *, retries: int = 0) -> None:
        """A delivery succeeded after ``retries`` inline retries: refill the bucket and
        close the circuit."""
        with self._lock:
            tokens = self._fill(budget)
            refund = budget.success_refund if retries == 0 else retries * budget.retry_cost
            self._tokens = min(budget.capacity, tokens + refund)
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    def record_connected(self) -> None:
        """A connection succeeded (whatever the recipients' fates): the relay is up, so
        its consecutive-failure count restarts and an open circuit closes."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    # --- circuit -----------------------------------------------------------------------

    def pause(self, until: float) -> None:
        """Send nothing through this relay before ``until`` (a ``throttle`` decision:
        the server asked us to slow down); a later pause extends, never shortens it."""
        with self._lock:
            self._paused_until = max(self._paused_until, until)

    def paused_for(self, *, now: float) -> float:
        """Seconds left of a throttle pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - now)

    def hold(self, username: str | None, until: float) -> bool:
        """No worker of this process tries the relay with ``username`` before ``until``
        (wall-clock seconds): it refused our credentials or TLS. True when this extends
        the hold (the caller reports it once)."""
        with self._lock:
            if until <= self._held_until.get(username, 0.0):
                return False
            self._held_until[username] = until
            return True

    def held_until(self, username: str | None) -> float:
        """Until when the relay is held for ``username`` (0.0: not held)."""
        with self._lock:
            return self._held_until.get(username, 0.0)

    def allow_attempt(self, circuit: CircuitSettings, *, now: float) -> bool:
        """Whether to connect now. Never during a throttle pause; while the circuit is
        open, one caller per ``probe_every`` gets True (the probe); everyone else defers
        at once."""
        with self._lock:
            if now < self._paused_until:
                return False
            if self._opened_at is None:
                return True
            last = self._probe_started if self._probe_started is not None else self._opened_at
            if now - last >= circuit.probe_every:
                self._probe_started = now
                return True
            return False

    def record_failure(self, circuit: CircuitSettings, *, now: float) -> bool:
        """A connection-level failure (refused, reset, timeout, TLS, 421 at greeting).
        Returns True when this failure opened the circuit."""
        with self._lock:
            self._failures += 1
            if self._opened_at is not None:
                # A failed probe: stay open, the next probe one interval from now.
                self._opened_at = now
                self._probe_started = None
                return False
            if self._failures >= circuit.open_after:
                self._opened_at = now
                self._probe_started = None
                return True
            return False

    def snapshot(self) -> RelaySnapshot:
        with self._lock:
            circuit: CircuitState = "closed"
            if self._opened_at is not None:
                circuit = "half_open" if self._probe_started is not None else "open"
            return RelaySnapshot(
                relay=self.relay,
                tokens=self._tokens,
                consecutive_failures=self._failures,
                circuit=circuit,
                opened_at=self._opened_at,
            )


class RelayRegistry:
    """Thread-safe map of relay key to :class:`RelayState`, created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._relays: dict[str, RelayState] = {}

    def get(self, host: str, port: int) -> RelayState:
        key = relay_key(host, port)
        with self._lock:
            state = self._relays.get(key)
            if state is None:
                state = self._relays[key] = RelayState(key)
            return state

    def clear(self) -> None:
        """Forget every relay (tests, or after reconfiguration)."""
        with self._lock:
            self._relays.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._relays)


#: The process-wide registry senders use unless given another.
RELAYS = RelayRegistry()
