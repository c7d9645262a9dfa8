"""Per-relay retry budget and circuit breaker: shared, thread-safe, time passed in."""

from __future__ import annotations

import threading

from mailpolicy._policy import BudgetSettings, CircuitSettings
from mailpolicy._relaystate import RELAYS, RelayRegistry, RelayState, relay_key

BUDGET = BudgetSettings(capacity=50, retry_cost=5, success_refund=1)
CIRCUIT = CircuitSettings(open_after=3, probe_every=60.0)


def test_relays_are_keyed_by_host_and_port() -> None:
    assert relay_key("SMTP.Example.", 587) == "smtp.example:587"
    assert relay_key("::1", 25) == "[::1]:25"
    registry = RelayRegistry()
    assert registry.get("smtp.example", 587) is registry.get("SMTP.EXAMPLE", 587)
    assert registry.get("smtp.example", 587) is not registry.get("smtp.example", 25)
    assert len(registry) == 2
    registry.clear()
    assert len(registry) == 0


def test_the_process_wide_registry_outlives_any_sender() -> None:
    """Django builds a backend per send: state must not live on it."""
    first = RELAYS.get("relay.test", 2525)
    assert RELAYS.get("relay.test", 2525) is first


def test_the_budget_empties_and_refills() -> None:
    relay = RelayState("r:25")
    assert relay.snapshot().tokens is None  # full, unused
    assert [relay.acquire_retry(BUDGET) for _ in range(11)] == [True] * 10 + [False]
    assert relay.snapshot().tokens == 0
    relay.record_success(BUDGET)
    assert relay.snapshot().tokens == 1
    relay.record_success(BUDGET, retries=100)
    assert relay.snapshot().tokens == 50  # never above capacity


def test_the_circuit_opens_after_consecutive_failures_and_probes() -> None:
    relay = RelayState("r:25")
    assert [relay.record_failure(CIRCUIT, now=t) for t in (0, 1, 2)] == [False, False, True]
    assert relay.snapshot().circuit == "open"
    assert not relay.allow_attempt(CIRCUIT, now=30)
    assert relay.allow_attempt(CIRCUIT, now=62)  # one probe after probe_every
    assert relay.snapshot().circuit == "half_open"
    assert not relay.allow_attempt(CIRCUIT, now=63)  # only one
    relay.record_failure(CIRCUIT, now=64)  # the probe failed: open again from now
    assert not relay.allow_attempt(CIRCUIT, now=100)
    assert relay.allow_attempt(CIRCUIT, now=124)
    relay.record_success(BUDGET)
    assert relay.snapshot().circuit == "closed"
    assert relay.allow_attempt(CIRCUIT, now=125)


def test_a_success_resets_the_failure_count() -> None:
    relay = RelayState("r:25")
    relay.record_failure(CIRCUIT, now=0)
    relay.record_failure(CIRCUIT, now=1)
    relay.record_success(BUDGET)
    assert not relay.record_failure(CIRCUIT, now=2)
    assert relay.allow_attempt(CIRCUIT, now=2)


def test_a_lost_probe_is_replaced_after_another_interval() -> None:
    relay = RelayState("r:25")
    for t in (0, 0, 0):
        relay.record_failure(CIRCUIT, now=t)
    assert relay.allow_attempt(CIRCUIT, now=60)
    assert not relay.allow_attempt(CIRCUIT, now=100)
    assert relay.allow_attempt(CIRCUIT, now=120)


def test_budget_and_probes_are_exact_under_threads() -> None:
    relay = RelayState("r:25")
    budget = BudgetSettings(capacity=1000, retry_cost=1, success_refund=0)
    for moment in (0, 0, 0):
        relay.record_failure(CIRCUIT, now=moment)
    granted: list[bool] = []
    probes: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        mine = [relay.acquire_retry(budget) for _ in range(100)]
        probe = relay.allow_attempt(CIRCUIT, now=1000)
        with lock:
            granted.extend(mine)
            probes.append(probe)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 1000
    assert probes.count(True) == 1
