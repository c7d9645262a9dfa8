"""The durable store: outbox, attempt journal, suppression list (SQLite implementation).

Times are injected (``now``); databases live in ``tmp_path``. Concurrency is tested with
separate store objects (separate connections) in threads and in a child process, and a
crash with a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest

from mailpolicy import InvalidInputError, MailPolicyError
from mailpolicy._message import PreparedMessage, prepare_message
from mailpolicy._outcome import State
from mailpolicy._sqlite import DUE_QUERY, SCHEMA_VERSION, SQLiteStore
from mailpolicy._store import (
    DEFAULT_RETENTION,
    Attempt,
    Claim,
    NewRecipient,
    RecipientUpdate,
    SQLiteLocation,
    Store,
    StoreError,
    normalise_address,
    open_store,
    parse_store_url,
)
from mailpolicy._vocab import Reason
from mailpolicy._worker import Worker

T0 = 1_700_000_000.0
HOUR = 3600.0


def message(*recipients: str, subject: str = "Hello") -> PreparedMessage:
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = ", ".join(recipients or ("ann@example.org",))
    msg["Subject"] = subject
    msg.set_content("Your order has shipped.\n.\nA line with a dot.\n")
    return prepare_message(msg)


def deferred(address: str, *, at: float = T0, due: float = T0 + 60) -> NewRecipient:
    return NewRecipient(
        recipient=address,
        wire=address,
        state="deferred",
        reason="greylisted",
        code=450,
        status="4.2.0",
        text="Greylisted, try again later",
        attempts=1,
        first_failure_at=at,
        next_attempt_at=due,
        history=(
            Attempt(
                at=at,
                state="deferred",
                reason="greylisted",
                code=450,
                status="4.2.0",
                text="Greylisted, try again later",
                rule="greylist.text",
                action="defer",
            ),
        ),
    )


def delivered_update(key: int, at: float) -> RecipientUpdate:
    return RecipientUpdate(
        key=key,
        state="delivered",
        reason="delivered",
        code=250,
        text="2.0.0 Ok: queued",
        attempt=Attempt(at=at, state="delivered", reason="delivered", code=250, action="deliver"),
    )


def save(store: Store, *addresses: str, due: float = T0 + 60, relay: str = "relay:25") -> int:
    addresses = addresses or ("ann@example.org",)
    return store.save_deferred(
        message(*addresses),
        policy="default",
        relay=relay,
        recipients=[deferred(a, due=due) for a in addresses],
        now=T0,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mail.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(db_path, synchronous="normal") as opened:
        yield opened


# --- the outbox ---------------------------------------------------------------------------


def test_a_deferral_round_trips_through_claim_and_attempt(store: SQLiteStore) -> None:
    """Saved once (bytes, envelope, recipients, history, next time); claimed when due;
    an attempt makes the recipient final, counted, journaled and the lease released."""
    prepared = message("ann@example.org", "bob@example.org")
    key = store.save_deferred(
        prepared,
        policy="transactional",
        relay="smtp.example:587",
        recipients=[
            deferred("ann@example.org"),
            NewRecipient(
                recipient="bob@example.org",
                wire="bob@example.org",
                state="delivered",
                reason="delivered",
                code=250,
                attempts=1,
            ),
        ],
        now=T0,
    )
    assert store.claim_due(now=T0 + 59, owner="w1", lease_seconds=60) == []
    [claim] = store.claim_due(now=T0 + 60, owner="w1", lease_seconds=60)
    assert claim.owner == "w1"
    assert claim.lease_until == T0 + 120
    stored = claim.message
    assert (stored.key, stored.message_id, stored.envelope_from) == (
        key,
        prepared.message_id,
        "shop@example.com",
    )
    assert stored.data == prepared.data
    assert (stored.policy, stored.relay, stored.created_at) == (
        "transactional",
        "smtp.example:587",
        T0,
    )
    [ann] = claim.recipients  # bob was delivered inline: never sent again
    assert (ann.recipient, ann.state, ann.reason, ann.code, ann.status) == (
        "ann@example.org",
        "deferred",
        "greylisted",
        450,
        "4.2.0",
    )
    assert (ann.attempts, ann.first_failure_at, ann.next_attempt_at) == (1, T0, T0 + 60)
    assert store.counts(now=T0 + 61)["leased"] == 1

    assert store.record_attempt(claim, [delivered_update(ann.key, T0 + 61)], now=T0 + 61)
    [after] = store.list_recipients(state="delivered", message_id=prepared.message_id, limit=1)
    assert (after.recipient, after.attempts, after.next_attempt_at) == ("ann@example.org", 2, None)
    assert after.first_failure_at == T0  # kept from the first failure
    assert [
        (a.recipient, a.state, a.at) for a in store.journal(message_id=prepared.message_id)
    ] == [
        ("ann@example.org", "deferred", T0),
        ("ann@example.org", "delivered", T0 + 61),
    ]
    counts = store.counts(now=T0 + 62)
    assert (counts["delivered"], counts["deferred"], counts["due"], counts["leased"]) == (
        2,
        0,
        0,
        0,
    )
    assert store.claim_due(now=T0 + 10 * HOUR, owner="w1", lease_seconds=60) == []


def test_a_failed_attempt_reschedules_and_a_bounce_is_final(store: SQLiteStore) -> None:
    save(store, "ann@example.org")
    [claim] = store.claim_due(now=T0 + 60, owner="w", lease_seconds=30)
    key = claim.recipients[0].key
    again = RecipientUpdate(
        key=key,
        state="deferred",
        reason="service_unavailable",
        code=421,
        next_attempt_at=T0 + 600,
        attempt=Attempt(at=T0 + 60, state="deferred", reason="service_unavailable", code=421),
    )
    assert store.record_attempt(claim, [again], now=T0 + 60)
    assert store.claim_due(now=T0 + 599, owner="w", lease_seconds=30) == []
    [claim] = store.claim_due(now=T0 + 600, owner="w", lease_seconds=30)
    assert (claim.recipients[0].attempts, claim.recipients[0].code) == (2, 421)
    bounce = RecipientUpdate(
        key=key,
        state="bounced",
        reason="service_unavailable",
        code=421,
        text="gave up after 5d",
        next_attempt_at=T0 + 9999,  # ignored for a final state
        attempt=Attempt(at=T0 + 600, state="bounced", reason="service_unavailable", code=421),
    )
    store.record_attempt(claim, [bounce], now=T0 + 600)
    [row] = store.list_recipients()
    assert (row.state, row.attempts, row.next_attempt_at, row.text) == (
        "bounced",
        3,
        None,
        "gave up after 5d",
    )
    assert store.claim_due(now=T0 + 10**6, owner="w", lease_seconds=30) == []


def test_an_expired_lease_is_claimable_again_and_a_final_state_sticks(
    store: SQLiteStore,
) -> None:
    """At-least-once: a worker that dies holding a claim loses nothing. Its lease runs out
    and another worker gets the message; if the first one reports late, its report is
    journaled but cannot undo a final state."""
    save(store, "ann@example.org")
    [first] = store.claim_due(now=T0 + 60, owner="crashed", lease_seconds=30)
    assert store.claim_due(now=T0 + 89, owner="second", lease_seconds=30) == []
    [second] = store.claim_due(now=T0 + 90, owner="second", lease_seconds=30)
    assert second.message.message_id == first.message.message_id  # unchanged Message-ID
    key = second.recipients[0].key
    assert store.record_attempt(second, [delivered_update(key, T0 + 91)], now=T0 + 91)
    late = RecipientUpdate(
        key=key,
        state="deferred",
        reason="timeout",
        next_attempt_at=T0 + 500,
        ambiguous=True,
        attempt=Attempt(at=T0 + 95, state="deferred", reason="timeout", ambiguous=True),
    )
    assert not store.record_attempt(first, [late], now=T0 + 95)  # the lease was not its own
    [row] = store.list_recipients()
    assert row.state == "delivered"
    assert [a.state for a in store.journal(recipient_key=key)] == [
        "deferred",
        "delivered",
        "deferred",
    ]


def test_a_reschedule_does_not_overwrite_what_another_worker_recorded(
    store: SQLiteStore,
) -> None:
    """A worker whose delivery stopped early reschedules the recipients it left alone,
    "if the row is as I claimed it": after another worker recorded a newer result for
    them, that result stands (third diff review)."""
    save(store, "ann@example.org")
    [first] = store.claim_due(now=T0 + 60, owner="slow", lease_seconds=30)
    stale = first.recipients[0]
    [second] = store.claim_due(now=T0 + 90, owner="other", lease_seconds=30)
    newer = RecipientUpdate(
        key=stale.key, state="deferred", reason="mailbox_full", code=452,
        next_attempt_at=T0 + 9000,
        attempt=Attempt(at=T0 + 91, state="deferred", reason="mailbox_full", code=452),
    )  # fmt: skip
    assert store.record_attempt(second, [newer], now=T0 + 91)
    reschedule = RecipientUpdate(
        key=stale.key, state=stale.state, reason=stale.reason, next_attempt_at=T0 + 160,
        if_updated_at=stale.updated_at,
    )  # fmt: skip
    store.record_attempt(first, [reschedule], now=T0 + 100)
    [row] = store.list_recipients()
    assert (row.reason, row.code, row.next_attempt_at) == ("mailbox_full", 452, T0 + 9000)


def test_a_bounce_report_touches_only_a_recipient_it_can_end(store: SQLiteStore) -> None:
    """record_report: a replayed report changes nothing, a recipient final for another
    reason keeps it, and a message a worker has in hand is left to the worker (its
    result would come after the bounce and contradict it)."""
    save(store, "ann@example.org", "bob@example.org")
    message_id = store.list_recipients()[0].message_id
    bounce = Attempt(at=T0 + 10, state="bounced", reason="mailbox_unknown", code=550)
    assert store.record_report(message_id, "ANN@example.org", bounce)
    assert not store.record_report(message_id, "ann@example.org", bounce)  # replayed
    assert len([a for a in store.journal(message_id=message_id) if a.state == "bounced"]) == 1
    [claim] = store.claim_due(now=T0 + 60, owner="w", lease_seconds=300)
    assert not store.record_report(
        message_id, "bob@example.org", replace(bounce, at=T0 + 61)
    )  # leased: the worker's result decides
    assert {r.recipient: r.state for r in store.list_recipients()} == {
        "ann@example.org": "bounced",
        "bob@example.org": "deferred",
    }
    assert claim.recipients[0].recipient == "bob@example.org"
    # A delivered recipient is no worker's business: its bounce is recorded even while
    # a co-recipient of the message is in a worker's hands (fourth review).
    store.record_attempt(claim, [delivered_update(claim.recipients[0].key, T0 + 62)], now=T0 + 62)
    save(store, "cy@example.org", "dee@example.org")
    second = next(r for r in store.list_recipients() if r.recipient == "cy@example.org")
    [held] = store.claim_due(now=T0 + 70, owner="w", lease_seconds=300)
    store.record_attempt(held, [delivered_update(second.key, T0 + 71)], now=T0 + 71)
    [held] = store.claim_due(now=T0 + 72, owner="w", lease_seconds=300)  # dee, in hand
    assert store.record_report(second.message_id, "cy@example.org", replace(bounce, at=T0 + 73))


def test_renew_extends_only_a_lease_still_held(store: SQLiteStore) -> None:
    """A worker renews each claim of a batch just before sending it: the renewed lease
    keeps other workers off; a lease that another worker took, or that was given back,
    cannot be renewed."""
    save(store, "ann@example.org")
    [claim] = store.claim_due(now=T0 + 60, owner="w1", lease_seconds=30)
    renewed = store.renew(claim, now=T0 + 80, lease_seconds=30)
    assert renewed is not None
    assert renewed.lease_until == T0 + 110
    assert store.claim_due(now=T0 + 109, owner="w2", lease_seconds=30) == []  # still held
    assert store.renew(claim, now=T0 + 85, lease_seconds=30) is None  # superseded claim
    [taken] = store.claim_due(now=T0 + 110, owner="w2", lease_seconds=30)  # expired: w2
    assert store.renew(renewed, now=T0 + 111, lease_seconds=30) is None
    store.release(taken, now=T0 + 112)
    assert store.renew(taken, now=T0 + 113, lease_seconds=30) is None  # given back
    with pytest.raises(StoreError, match="lease_seconds must be > 0"):
        store.renew(taken, now=T0 + 113, lease_seconds=0)


def test_release_gives_the_lease_back_without_spending_an_attempt(store: SQLiteStore) -> None:
    """The relay's circuit is open: due messages wait, their attempts untouched."""
    save(store, "ann@example.org", relay="down:25")
    save(store, "bob@example.org", relay="up:25")
    [claim] = store.claim_due(now=T0 + 60, owner="w", lease_seconds=30, relay="down:25")
    assert claim.message.relay == "down:25"
    store.release(claim, now=T0 + 60, next_attempt_at=T0 + 300)
    assert store.claim_due(now=T0 + 299, owner="w", lease_seconds=30, relay="down:25") == []
    [claim] = store.claim_due(now=T0 + 300, owner="w", lease_seconds=30, relay="down:25")
    assert claim.recipients[0].attempts == 1
    assert len(store.journal(recipient_key=claim.recipients[0].key)) == 1
    store.release(claim, now=T0 + 300)  # no new time: due again at once
    assert len(store.claim_due(now=T0 + 300, owner="w", lease_seconds=30)) == 2


def test_claims_are_oldest_due_first_bounded_and_carry_only_due_recipients(
    store: SQLiteStore,
) -> None:
    for n in range(5):
        save(store, f"r{n}@example.org", due=T0 + 100 - n)
    mixed = store.save_deferred(
        message("now@example.org", "later@example.org"),
        policy="default",
        relay="relay:25",
        recipients=[
            deferred("now@example.org", due=T0),
            deferred("later@example.org", due=T0 + 999),
        ],
        now=T0,
    )
    claims = store.claim_due(now=T0 + 100, owner="w", lease_seconds=30, limit=3)
    assert [c.message.key for c in claims] == [mixed, 5, 4]
    assert [r.recipient for r in claims[0].recipients] == ["now@example.org"]
    assert len(store.claim_due(now=T0 + 100, owner="x", lease_seconds=30, limit=100)) == 3


def test_record_attempt_refuses_a_recipient_outside_the_claim(store: SQLiteStore) -> None:
    save(store, "ann@example.org")
    [claim] = store.claim_due(now=T0 + 60, owner="w", lease_seconds=30)
    with pytest.raises(StoreError, match="not part of the claim"):
        store.record_attempt(claim, [delivered_update(999, T0)], now=T0 + 61)
    with pytest.raises(StoreError, match="needs next_attempt_at"):
        store.record_attempt(
            claim,
            [RecipientUpdate(key=claim.recipients[0].key, state="deferred", reason="timeout")],
            now=T0 + 61,
        )


def test_counts_cover_every_state(store: SQLiteStore) -> None:
    save(store, "a@example.org", "b@example.org", due=T0 + 10)
    save(store, "c@example.org", due=T0 + 10**5)
    store.save_deferred(
        message("held@example.org"),
        policy="default",
        relay="relay:25",
        recipients=[
            NewRecipient(
                recipient="held@example.org",
                wire="held@example.org",
                state="held",
                reason="auth_failed",
                code=535,
                next_attempt_at=T0 + HOUR,
            )
        ],
        now=T0,
    )
    store.add_suppression("gone@example.org", reason="mailbox_unknown", now=T0, ttl=None)
    [claim] = store.claim_due(now=T0 + 10, owner="w", lease_seconds=30, limit=1)
    assert store.counts(now=T0 + 10) == {
        "deferred": 3,
        "held": 1,
        "delivered": 0,
        "bounced": 0,
        "invalid": 0,
        "suppressed": 0,
        "due": 0,  # the two due recipients are leased
        "leased": 1,
        "messages": 3,
        "purged": 0,
        "suppression_list": 1,
    }
    store.release(claim, now=T0 + 10)
    assert store.counts(now=T0 + HOUR)["due"] == 3


def test_retry_now_makes_pending_due_and_releases_held(store: SQLiteStore) -> None:
    later = save(store, "later@example.org", due=T0 + 10 * HOUR)
    held = store.save_deferred(
        message("held@example.org"),
        policy="default",
        relay="relay:25",
        recipients=[
            NewRecipient(
                recipient="held@example.org",
                wire="held@example.org",
                state="held",
                reason="auth_failed",
                code=535,
                next_attempt_at=T0 + 24 * HOUR,
            )
        ],
        now=T0,
    )
    assert store.retry_now(now=T0 + 1, include_held=False) == 1
    assert store.counts(now=T0 + 1)["held"] == 1
    assert store.retry_now(now=T0 + 2) == 2
    counts = store.counts(now=T0 + 2)
    assert (counts["held"], counts["deferred"], counts["due"]) == (0, 2, 2)
    claims = store.claim_due(now=T0 + 2, owner="w", lease_seconds=30)
    assert sorted(c.message.key for c in claims) == [later, held]
    for claim in claims:
        store.release(claim, now=T0 + 2, next_attempt_at=T0 + HOUR)
    held_id = claims[[c.message.key for c in claims].index(held)].message.message_id
    assert store.retry_now(now=T0 + 3, message_id=held_id) == 1
    assert store.retry_now(now=T0 + 3, message_id="<nobody@nowhere>") == 0


def test_purge_deletes_only_old_finished_bodies_and_keeps_the_journal(
    store: SQLiteStore,
) -> None:
    done = save(store, "done@example.org")
    pending = save(store, "pending@example.org", due=T0 + 30 * 86400)
    [claim] = store.claim_due(now=T0 + 60, owner="w", lease_seconds=30)
    assert claim.message.key == done
    store.record_attempt(claim, [delivered_update(claim.recipients[0].key, T0 + 60)], now=T0 + 60)
    assert store.retention == DEFAULT_RETENTION == 7 * 86400
    assert store.purge(now=T0 + 60 + 7 * 86400 - 1) == 0  # not old enough yet
    assert store.purge(now=T0 + 60 + 7 * 86400) == 1
    assert store.purge(now=T0 + 60 + 7 * 86400) == 0  # nothing left to purge
    counts = store.counts(now=T0)
    assert (counts["purged"], counts["messages"], counts["delivered"]) == (1, 2, 1)
    assert [a.state for a in store.journal()] == ["deferred", "deferred", "delivered"]
    assert store.purge(now=T0 + 365 * 86400, older_than=0) == 0  # never a pending one
    [row] = store.list_recipients(state="deferred")
    assert row.message_key == pending
    store.retry_now(now=T0 + 100)
    [claim] = store.claim_due(now=T0 + 100, owner="w", lease_seconds=30)
    assert claim.message.data.startswith(b"Message-ID: ")  # its body intact


def test_one_store_object_can_be_shared_by_threads(store: SQLiteStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                save(store, f"t{n}-{i}@example.org")
                store.counts(now=T0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.counts(now=T0)["messages"] == 40


# --- concurrency and crashes --------------------------------------------------------------


def _drain(path: Path, owner: str, claimed: list[int], start: threading.Barrier) -> None:
    with SQLiteStore(path, synchronous="normal") as own:
        start.wait()
        while claims := own.claim_due(now=T0 + 60, owner=owner, lease_seconds=HOUR, limit=3):
            for claim in claims:
                claimed.append(claim.message.key)
                updates = [delivered_update(r.key, T0 + 61) for r in claim.recipients]
                own.record_attempt(claim, updates, now=T0 + 61)


def test_concurrent_claimers_in_threads_never_share_a_message(
    store: SQLiteStore, db_path: Path
) -> None:
    """Four workers, each with its own connection, drain one outbox: every message is
    claimed exactly once."""
    keys = [save(store, f"m{n}@example.org") for n in range(120)]
    start = threading.Barrier(4)
    claimed: dict[str, list[int]] = {f"w{n}": [] for n in range(4)}
    threads = [
        threading.Thread(target=_drain, args=(db_path, owner, got, start))
        for owner, got in claimed.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [key for got in claimed.values() for key in got]
    assert sorted(every) == keys  # none twice, none missed
    assert store.counts(now=T0 + 61)["delivered"] == 120


def test_two_simultaneous_claims_of_everything_do_not_overlap(db_path: Path) -> None:
    with SQLiteStore(db_path, synchronous="normal") as one, SQLiteStore(db_path) as two:
        keys = [save(one, f"m{n}@example.org") for n in range(50)]
        start = threading.Barrier(2)
        results: dict[str, list[Claim]] = {}

        def claim(name: str, own: SQLiteStore) -> None:
            start.wait()
            results[name] = own.claim_due(now=T0 + 60, owner=name, lease_seconds=60, limit=50)

        threads = [threading.Thread(target=claim, args=item) for item in (("a", one), ("b", two))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        got = [c.message.key for claims in results.values() for c in claims]
        assert sorted(got) == keys
        assert sorted(len(claims) for claims in results.values()) == [0, 50]


CHILD_CLAIMER = """
import sys, time
from mailpolicy._sqlite import SQLiteStore
from mailpolicy._store import Attempt, RecipientUpdate
with SQLiteStore(sys.argv[1], synchronous="normal") as store:
    print("ready", flush=True)
    now = float(sys.argv[2])
    while claims := store.claim_due(now=now, owner="child", lease_seconds=3600, limit=1):
        for claim in claims:
            print(claim.message.key, flush=True)
            store.record_attempt(claim, [RecipientUpdate(key=r.key, state="delivered",
                reason="delivered", attempt=Attempt(at=now, state="delivered",
                reason="delivered")) for r in claim.recipients], now=now)
        time.sleep(0.001)
"""


def test_a_claimer_in_another_process_never_shares_a_message(
    store: SQLiteStore, db_path: Path
) -> None:
    keys = [save(store, f"m{n}@example.org") for n in range(150)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_CLAIMER, str(db_path), str(T0 + 60)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    with closing(child.stdout):
        assert child.stdout.readline() == "ready\n"
        mine: list[int] = []
        while claims := store.claim_due(now=T0 + 60, owner="parent", lease_seconds=HOUR, limit=1):
            mine.extend(c.message.key for c in claims)
            for claim in claims:
                updates = [delivered_update(r.key, T0 + 60) for r in claim.recipients]
                store.record_attempt(claim, updates, now=T0 + 60)
            time.sleep(0.001)
        theirs = [int(line) for line in child.stdout]
    assert child.wait(timeout=30) == 0
    assert mine
    assert theirs
    assert sorted(mine + theirs) == keys


CHILD_SAVER = """
import sys
from email.message import EmailMessage
from mailpolicy._message import prepare_message
from mailpolicy._sqlite import SQLiteStore
from mailpolicy._store import NewRecipient
with SQLiteStore(sys.argv[1]) as store:
    n = 0
    while True:
        msg = EmailMessage()
        msg["From"] = "shop@example.com"
        msg["To"] = "a@example.org, b@example.org, c@example.org"
        msg.set_content("x" * 2000)
        key = store.save_deferred(prepare_message(msg), policy="default", relay="r:25",
            recipients=[NewRecipient(recipient=a, wire=a, state="deferred", reason="timeout",
                                     next_attempt_at=1.0) for a in ("a@example.org",
                                     "b@example.org", "c@example.org")], now=0.0)
        print(key, flush=True)
"""


def test_sigkill_while_saving_loses_no_saved_deferral(db_path: Path) -> None:
    """Every save that returned is there after a SIGKILL, complete (all recipients); no
    half-saved message exists; the database is intact."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SAVER, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    with closing(child.stdout):
        saved = [int(child.stdout.readline()) for _ in range(30)]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        saved += [int(line) for line in child.stdout if line.strip()]
    assert child.returncode == -signal.SIGKILL
    with SQLiteStore(db_path) as store:
        rows = store.list_recipients(limit=10**6)
        per_message: dict[int, int] = {}
        for row in rows:
            per_message[row.message_key] = per_message.get(row.message_key, 0) + 1
        assert set(saved) <= set(per_message)
        assert set(per_message.values()) == {3}  # all or nothing
        claims = store.claim_due(now=2.0, owner="after", lease_seconds=60, limit=1000)
        assert len(claims) == len(per_message)
    with closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- saving that fails raises -------------------------------------------------------------


def test_a_deferral_that_cannot_be_saved_raises_and_leaves_nothing(store: SQLiteStore) -> None:
    """A failure inside the transaction rolls the whole message back."""
    broken = NewRecipient(
        recipient="b@example.org",
        wire="b@example.org",
        state="deferred",
        reason=cast(Reason, None),  # NOT NULL: fails after the message row was written
        next_attempt_at=T0,
    )
    with pytest.raises(StoreError, match=r"mail\.sqlite3: saving <.*>: NOT NULL"):
        store.save_deferred(
            message("a@example.org", "b@example.org"),
            policy="default",
            relay="r:25",
            recipients=[deferred("a@example.org"), broken],
            now=T0,
        )
    assert store.counts(now=T0)["messages"] == 0
    assert store.journal() == []
    with pytest.raises(StoreError, match="needs next_attempt_at"):
        store.save_deferred(
            message(),
            policy="default",
            relay="r:25",
            recipients=[
                NewRecipient(
                    recipient="a@x.org", wire="a@x.org", state="held", reason="auth_failed"
                )
            ],
            now=T0,
        )
    with pytest.raises(StoreError, match="unknown state"):
        store.save_deferred(
            message(),
            policy="default",
            relay="r:25",
            recipients=[
                NewRecipient(
                    recipient="a@x.org", wire="a@x.org", state=cast(State, "lost"), reason="unknown"
                )
            ],
            now=T0,
        )
    with pytest.raises(StoreError, match="no recipients"):
        store.save_deferred(message(), policy="default", relay="r:25", recipients=[], now=T0)


def test_a_closed_store_raises(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    store.close()
    store.close()  # idempotent
    assert "closed" in repr(store)
    with pytest.raises(StoreError, match="the store is closed"):
        save(store, "a@example.org")
    with pytest.raises(StoreError, match="the store is closed"):
        store.suppressed("a@example.org", now=T0)


def test_a_locked_database_raises_naming_the_path(db_path: Path) -> None:
    with (
        SQLiteStore(db_path, busy_timeout=0.05) as store,
        closing(sqlite3.connect(db_path, isolation_level=None)) as other,
    ):
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=r"mail\.sqlite3: saving .*database is locked"):
            save(store, "a@example.org")
        with pytest.raises(StoreError, match="database is locked"):
            store.claim_due(now=T0, owner="w", lease_seconds=1)
        other.execute("ROLLBACK")
        assert store.counts(now=T0)["messages"] == 0
        save(store, "a@example.org")  # works again once the lock is gone
        assert store.counts(now=T0)["messages"] == 1


def test_opening_a_locked_new_database_raises(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=r"mail\.sqlite3: opening: database is locked"):
            SQLiteStore(db_path, busy_timeout=0.05)
        other.execute("ROLLBACK")


# --- opening: files, URLs, bad input ------------------------------------------------------


def test_the_database_is_wal_versioned_and_idempotently_created(db_path: Path) -> None:
    with SQLiteStore(db_path) as first:
        save(first, "a@example.org")
    with SQLiteStore(db_path, synchronous="normal") as second:  # re-open: nothing recreated
        assert second.counts(now=T0)["messages"] == 1
    with closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_the_due_selection_uses_the_partial_index(store: SQLiteStore, db_path: Path) -> None:
    """The worker's query must search ``recipients_due`` in time order: no table scan
    and no temporary B-tree for the ORDER BY, whatever the outbox size."""
    save(store, "a@example.org")
    with closing(sqlite3.connect(db_path)) as raw:
        plan = [
            row[3]
            for row in raw.execute(f"EXPLAIN QUERY PLAN {DUE_QUERY}", {"now": T0, "relay": None})
        ]
    assert any("USING INDEX recipients_due" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN r") for step in plan), plan


def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "mail.sqlite3"
    garbage = b"this is not an SQLite database, just some bytes\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match=r"mail\.sqlite3: opening: not a database") as raised:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(raised.value)
    assert "nothing was changed" in str(raised.value)
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mail.sqlite3"]


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        raw.commit()
    with pytest.raises(StoreError, match=r"not a mailpolicy store .*users"):
        SQLiteStore(path)
    with closing(sqlite3.connect(path)) as raw:
        tables = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("users",)]


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with SQLiteStore(db_path):
        pass
    with closing(sqlite3.connect(db_path)) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this mailpolicy"):
        SQLiteStore(db_path)


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/no/such/dir/mail.sqlite3")
    assert not (tmp_path / "no").exists()
    with pytest.raises(StoreError, match="is a directory"):
        SQLiteStore(tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///mail.sqlite3", SQLiteLocation(path="mail.sqlite3")),
        ("sqlite:///var/mail.sqlite3", SQLiteLocation(path="var/mail.sqlite3")),
        ("sqlite:////var/lib/app/mail.sqlite3", SQLiteLocation(path="/var/lib/app/mail.sqlite3")),
        ("sqlite:///:memory:", SQLiteLocation(path=":memory:")),
        ("sqlite://", SQLiteLocation(path=":memory:")),
        ("SQLite+pysqlite:////tmp/m.db", SQLiteLocation(path="/tmp/m.db")),  # noqa: S108 - a path string
        ("sqlite:///my%20mail.db", SQLiteLocation(path="my mail.db")),
        (
            "sqlite:////srv/m.db?timeout=0.5&synchronous=NORMAL",
            SQLiteLocation(path="/srv/m.db", busy_timeout=0.5, synchronous="normal"),
        ),
    ],
)
def test_store_urls_follow_sqlalchemy(url: str, expected: SQLiteLocation) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://user:pw@db/mail",
            r"unsupported store URL scheme 'postgresql' \(a PostgreSQL",
        ),
        ("mysql://db/mail", r"unsupported store URL scheme 'mysql'; supported: sqlite:///"),
        ("foo", r"not a store URL: 'foo' \(for that file: sqlite:////.+/foo\); supported"),
        ("mail.db", r"for that file: sqlite:////.+/mail\.db\)"),  # absolute: cwd-proof
        ("/var/mail.db", r"for that file: sqlite:////var/mail.db"),
        ("sqlite:/mail.db", "not a store URL"),
        ("sqlite:///", "no database path"),
        ("sqlite://localhost/mail.db", "a sqlite URL has no host, got 'localhost'"),
        ("sqlite:///m.db?mode=ro", "unknown option 'mode'"),
        ("sqlite:///m.db?timeout=soon", "timeout must be seconds"),
        ("sqlite:///m.db?timeout=-1", "timeout must be seconds"),
        ("sqlite:///m.db?synchronous=off", "synchronous must be 'full' or 'normal'"),
        ("", "not a store URL"),
    ],
)
def test_bad_store_urls_say_what_is_supported(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_open_store_takes_a_url_or_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.sqlite3?timeout=2", retention=60.0) as opened:
        assert isinstance(opened, SQLiteStore)
        assert (opened.location, opened.retention, opened.busy_timeout) == (
            "relative.sqlite3",
            60.0,
            2.0,
        )
        assert open_store(opened) is opened  # a store object is used as it is
        assert isinstance(opened, Store)
    assert (tmp_path / "relative.sqlite3").exists()
    with open_store("sqlite:///:memory:") as memory:
        save(memory, "a@example.org")
        assert memory.counts(now=T0)["messages"] == 1


# --- suppression list and soft bounces ----------------------------------------------------


def test_suppressions_expire_can_be_removed_and_listed(store: SQLiteStore) -> None:
    entry = store.add_suppression(
        " <Ann@Example.ORG> ",
        reason="mailbox_unknown",
        code=550,
        status="5.1.1",
        text="User unknown",
        policy="default",
        now=T0,
        ttl=HOUR,
    )
    assert entry.address == "ann@example.org"
    assert entry.expires_at == T0 + HOUR
    found = store.suppressed("ANN@example.org", now=T0 + HOUR - 1)
    assert found == entry
    assert store.suppressed("ann@example.org", now=T0 + HOUR) is None  # expired
    store.add_suppression("bob@example.org", reason="mailbox_disabled", now=T0, ttl=None)
    assert [s.address for s in store.suppressions(now=T0 + HOUR)] == ["bob@example.org"]
    assert [s.address for s in store.suppressions(now=T0 + HOUR, include_expired=True)] == [
        "ann@example.org",
        "bob@example.org",
    ]
    # Newer evidence replaces the entry (and its expiry).
    store.add_suppression("ann@example.org", reason="domain_not_found", now=T0 + 2 * HOUR, ttl=None)
    renewed = store.suppressed("ann@example.org", now=T0 + 10**6)
    assert renewed is not None
    assert (renewed.reason, renewed.expires_at, renewed.active(T0 + 10**9)) == (
        "domain_not_found",
        None,
        True,
    )
    assert store.remove_suppression("Bob@Example.org")
    assert not store.remove_suppression("bob@example.org")
    assert store.suppressed("bob@example.org", now=T0) is None
    with pytest.raises(StoreError, match="ttl must be > 0"):
        store.add_suppression("c@example.org", reason="mailbox_unknown", now=T0, ttl=0)
    with pytest.raises(StoreError, match="empty address"):
        store.add_suppression(" <> ", reason="mailbox_unknown", now=T0, ttl=None)


def test_suppression_addresses_are_lower_cased_whole() -> None:
    assert normalise_address("  <John.Doe@Example.COM>") == "john.doe@example.com"


def test_suppression_keys_take_the_domain_as_sent_on_the_wire() -> None:
    """The sender looks addresses up with an IDNA 2008 A-label domain; a bounce or an
    operator may write the Unicode form. Both are one entry; an invalid name stays as
    written."""
    assert normalise_address("Jürgen@München.example") == "jürgen@xn--mnchen-3ya.example"
    assert normalise_address("jürgen@xn--mnchen-3ya.example") == "jürgen@xn--mnchen-3ya.example"
    assert normalise_address("a@bad_\u2620.example") == "a@bad_\u2620.example"


def test_soft_bounces_are_counted_within_the_window(store: SQLiteStore) -> None:
    window = 7 * 86400.0
    counts = [
        store.record_soft_bounce("ann@example.org", now=T0 + day * 86400, window=window)
        for day in (0, 1, 2, 8, 8.5)
    ]
    assert counts == [1, 2, 3, 2, 3]  # on day 8, days 0 and 1 have left the window
    assert store.record_soft_bounce("ANN@example.org", now=T0 + 20 * 86400, window=window) == 1
    assert store.record_soft_bounce("bob@example.org", now=T0, window=window) == 1
    with pytest.raises(StoreError, match="window must be > 0"):
        store.record_soft_bounce("bob@example.org", now=T0, window=0)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda s: s.suppressed(None, now=T0), "an address must be a str, not NoneType"),
        (lambda s: s.add_suppression(5, reason="x", now=T0, ttl=None), "must be a str, not int"),
        (lambda s: s.record_soft_bounce(None, now=T0, window=60), "must be a str, not NoneType"),
        (
            lambda s: s.claim_due(now=None, owner="w", lease_seconds=30),
            "now must be a finite number",
        ),
        (lambda s: s.claim_due(now=T0, owner="w", lease_seconds=30, limit="5"), "limit must be"),
        (lambda s: s.claim_due(now=T0, owner="w", lease_seconds=True), "lease_seconds must be"),
        (lambda s: s.purge(now=None), "now must be a finite number of seconds"),
        (lambda s: s.purge(now=T0, older_than="1d"), "older_than must be a finite number"),
        (lambda s: s.counts(now=float("nan")), "now must be a finite number of seconds, not nan"),
        (
            lambda s: s.add_suppression(
                "a@b.example", reason="mailbox_unknown", now=1.0, ttl=float("inf")
            ),
            "ttl must be a finite number",
        ),
        (lambda s: s.list_recipients(limit=None), "limit must be an int"),
        (
            lambda s: s.add_suppression("a@b.example", reason="x", now=T0, ttl=None, code=10**30),
            "code must be an SMTP reply code",
        ),
        (
            lambda s: s.add_suppression("a@b.example", reason="x", now=T0, ttl=None, code="550"),
            "code must be an SMTP reply code",
        ),
        (
            lambda s: s.add_suppression("a@b.example", reason="x", now=T0, ttl=None, text=None),
            "text must be a str",
        ),
    ],
)
def test_wrong_types_are_the_librarys_error_not_a_builtin_one(
    store: SQLiteStore, call: Any, expected: str
) -> None:
    """Found in review: these raised AttributeError/TypeError from inside the store."""
    with pytest.raises(InvalidInputError) as info:
        call(store)
    assert expected in str(info.value)
    assert isinstance(info.value, MailPolicyError)


def test_a_worker_needs_a_store(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="store must be a mailpolicy Store"):
        Worker(None, "localhost", 25, security="none")  # type: ignore[arg-type]


def test_an_entry_keyed_the_old_unicode_way_can_still_be_removed(store: SQLiteStore) -> None:
    """Development versions keyed "jürgen@münchen.example" with the Unicode domain; the
    key is now the A-label one, and remove_suppression finds both (found in review)."""
    with closing(sqlite3.connect(store.location)) as db, db:
        db.execute(
            "INSERT INTO suppressions (address, reason, created_at, expires_at, code, status, "
            "text, policy) VALUES (?, 'mailbox_unknown', ?, NULL, NULL, NULL, '', '')",
            ("jürgen@münchen.example", T0),
        )
    assert store.remove_suppression("Jürgen@München.example")
    assert store.suppressions(now=T0) == []


def test_a_new_store_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """It holds whole messages (password-reset links), Bcc recipients and the
    suppression list: 0644 under the usual umask let every local user read them
    (security review). A new file is 0600, and SQLite's -wal/-shm follow it; an
    existing file keeps the mode its owner gave it."""
    import stat

    old = os.umask(0o022)
    try:
        path = tmp_path / "mail.sqlite3"
        open_store(f"sqlite:///{path}").close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        dangling = tmp_path / "link.sqlite3"  # a symlink to a file not there yet
        dangling.symlink_to(tmp_path / "target.sqlite3")
        open_store(f"sqlite:///{dangling}").close()
        assert stat.S_IMODE((tmp_path / "target.sqlite3").stat().st_mode) == 0o600
        shared = tmp_path / "shared.sqlite3"
        shared.touch(mode=0o640)
        shared.chmod(0o640)
        open_store(f"sqlite:///{shared}").close()
        assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:////tmp/a%00b.sqlite3", "cannot open the database file|does not exist"),
        ("sqlite:///" + "x" * 5000, "cannot open the database file"),
        ("sqlite:///mail.sqlite3?timeout=inf", "busy_timeout must be a number of seconds"),
    ],
)
def test_a_store_url_the_os_refuses_is_a_store_error(url: str, message: str) -> None:
    """A NUL in the path and a name too long escaped as ValueError and OSError; an
    infinite timeout was taken, and made every write fail (fuzz and security reviews)."""
    with pytest.raises(StoreError, match=message):
        open_store(url)


@pytest.mark.parametrize("value", ["5", float("nan"), -1, True])
def test_a_bad_busy_timeout_or_retention_is_a_store_error(value: object) -> None:
    for option in ("busy_timeout", "retention"):
        with pytest.raises(StoreError, match=f"{option} must be a number of seconds"):
            open_store("sqlite://", **{option: value})  # type: ignore[arg-type]
