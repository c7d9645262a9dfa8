"""The outbox end to end: Sender(store=...) persists what is left, the worker delivers it
on the queue schedule, the suppression list stops dead addresses before any SMTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailpolicy._relaystate import RelayRegistry
from mailpolicy._sender import Sender
from mailpolicy._store import Store, StoreError, open_store
from mailpolicy._worker import Worker
from mailpolicy.testing import FakeClock, SMTPTestServer

Factory = Callable[..., SMTPTestServer]


def message(*to: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "app@example.com"
    m["To"] = ", ".join(to)
    m["Subject"] = "Test"
    m.set_content("Hello.\n")
    return m


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'mail.sqlite3'}")
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=time.time())


def make_sender(
    server: SMTPTestServer, store: Store, clock: FakeClock, relays: RelayRegistry
) -> Sender:
    return Sender(
        server.host, server.port, security="none", store=store, clock=clock.time,
        monotonic=clock.now, sleep=clock.sleep, rng=lambda: 1.0, relays=relays,
        local_hostname="client.test",
    )  # fmt: skip


def make_worker(
    server: SMTPTestServer, store: Store, clock: FakeClock, relays: RelayRegistry
) -> Worker:
    return Worker(
        store, server.host, server.port, security="none", clock=clock.time,
        monotonic=clock.now, sleep=clock.sleep, relays=relays,
    )  # fmt: skip


def test_deferred_recipients_are_saved_and_the_worker_delivers_them(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    relays = RelayRegistry()
    smtp_server.script.rcpt("ann@example.org", "450 4.2.0 Greylisted, try again in 300 seconds")
    with make_sender(smtp_server, store, clock, relays) as sender:
        report = sender.send(message("ann@example.org", "bob@example.org"))
    ann, bob = report.outcomes
    assert (ann.state, ann.persisted, bob.state) == ("deferred", True, "delivered")
    counts = store.counts(now=clock.time())
    assert (counts["deferred"], counts["due"], counts["delivered"]) == (1, 0, 1)

    worker = make_worker(smtp_server, store, clock, relays)
    assert worker.run_once().claims == 0  # not due: at least the 300 s the server asked for
    (row,) = store.list_recipients(state="deferred", message_id=None, limit=10)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at >= clock.time() + 300
    clock.advance(row.next_attempt_at - clock.time() + 1)
    stats = make_worker(smtp_server, store, clock, relays).run_once()
    assert (stats.claims, stats.delivered) == (1, 1)
    assert smtp_server.delivered_to("ann@example.org") == 1
    assert smtp_server.delivered_to("bob@example.org") == 1  # never sent again
    assert {m.parsed()["Message-ID"] for m in smtp_server.messages} == {report.message_id}
    assert store.counts(now=clock.time())["deferred"] == 0
    journal = store.journal(message_id=report.message_id)
    assert [a.state for a in journal if a.recipient == "ann@example.org"] == [
        "deferred",
        "delivered",
    ]


def test_dead_address_is_suppressed_before_any_smtp_next_time(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    relays = RelayRegistry()
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 <bob@example.org>: User unknown")
    with make_sender(smtp_server, store, clock, relays) as sender:
        first = sender.send(message("bob@example.org", "ann@example.org"))
        second = sender.send(message("bob@example.org", "ann@example.org"))
    assert first.outcomes[0].state == "bounced"
    assert (second.outcomes[0].state, second.outcomes[0].reason) == (
        "suppressed",
        "mailbox_unknown",
    )
    assert smtp_server.rcpt_addresses().count("bob@example.org") == 1
    (entry,) = store.suppressions(now=clock.time())
    assert (entry.address, entry.code, entry.status) == ("bob@example.org", 550, "5.1.1")


def test_gives_up_at_give_up_after_with_the_last_reply(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    relays = RelayRegistry()
    smtp_server.script.rcpt("ann@example.org", *["451 4.3.0 Temporary local problem"] * 200)
    with make_sender(smtp_server, store, clock, relays) as sender:
        assert sender.send(message("ann@example.org")).outcomes[0].state == "deferred"
    for _ in range(80):  # the default schedule reaches 5 days in fewer steps than this
        clock.advance(6 * 3600)
        make_worker(smtp_server, store, clock, relays).run_once()
        if store.counts(now=clock.time())["deferred"] == 0:
            break
    (row,) = store.list_recipients(state="bounced", message_id=None, limit=10)
    assert (row.reason, row.code) == ("system_error", 451)
    assert smtp_server.delivered_to("ann@example.org") == 0


def test_held_until_released_by_retry_now(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    relays = RelayRegistry()
    smtp_server.script.rcpt("ann@example.org", "554 5.7.1 <ann@example.org>: Relay access denied")
    with make_sender(smtp_server, store, clock, relays) as sender:
        o = sender.send(message("ann@example.org")).outcomes[0]
    assert (o.state, o.persisted) == ("held", True)
    assert make_worker(smtp_server, store, clock, relays).run_once().claims == 0
    assert store.retry_now(now=clock.time()) == 1  # the operator fixed the relay
    assert make_worker(smtp_server, store, clock, relays).run_once().delivered == 1


def test_a_deferral_that_cannot_be_saved_raises(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock
) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    s.close()
    smtp_server.script.rcpt("ann@example.org", "450 4.2.0 Greylisted")
    from mailpolicy import MailPolicyError

    with pytest.raises(MailPolicyError):
        make_sender(smtp_server, s, clock, RelayRegistry()).send(message("ann@example.org"))


def test_worker_survives_sigkill_without_loss(smtp_server_factory: Factory, tmp_path: Path) -> None:
    """At-least-once: a worker killed mid-run loses nothing; a restart delivers the rest;
    duplicates are bounded by what was in flight, with the Message-ID unchanged."""
    from mailpolicy.testing import Delay

    server = smtp_server_factory()
    url = f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    relays = RelayRegistry()
    store = open_store(url)
    clock = FakeClock(wall=time.time())
    server.script.rcpt(*["450 4.2.0 Greylisted"] * 12)  # everything deferred at first
    with make_sender(server, store, clock, relays) as sender:
        ids = [sender.send(message(f"u{i}@example.org")).message_id for i in range(12)]
    assert store.counts(now=time.time() + 3600)["deferred"] == 12
    store.retry_now(now=time.time())
    store.close()
    server.script.end_of_data(*[Delay(0.15, "250 OK")] * 40)  # slow enough to kill mid-run
    cmd = [sys.executable, "-m", "mailpolicy", "worker", "--store", url, "--host", server.host,
           "--port", str(server.port), "--security", "none", "--once", "--lease", "2s"]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.wait_for_messages(4, timeout=20)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(2.2)  # the dead worker's lease expires
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    with open_store(url) as check:
        counts = check.counts(now=time.time())
    assert counts["deferred"] == 0
    delivered = {m.parsed()["Message-ID"] for m in server.messages if m.accepted}
    assert delivered == set(ids)
    in_flight = len([m for m in server.messages if m.accepted]) - len(ids)
    assert 0 <= in_flight <= 1


def test_two_workers_share_one_store_without_duplicates(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'two.sqlite3'}"
    relays = RelayRegistry()
    store = open_store(url)
    clock = FakeClock(wall=time.time())
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 20)
    with make_sender(smtp_server, store, clock, relays) as sender:
        for i in range(20):
            sender.send(message(f"u{i}@example.org"))
    assert store.counts(now=time.time())["deferred"] == 20
    store.retry_now(now=time.time())
    store.close()
    cmd = [sys.executable, "-m", "mailpolicy", "worker", "--store", url, "--host",
           smtp_server.host, "--port", str(smtp_server.port), "--security", "none",
           "--once"]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    rcpts = [r for m in smtp_server.messages for r in m.rcpt_tos]
    assert sorted(rcpts) == sorted(f"u{i}@example.org" for i in range(20))


def test_cli_outbox_and_suppression_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"

    def run(*args: str) -> Any:
        return subprocess.run([sys.executable, "-m", "mailpolicy", *args], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip

    assert run("suppression", "add", "Bob@Example.org", "--store", url).returncode == 0
    listed = run("suppression", "list", "--store", url, "--json")
    assert '"bob@example.org"' in listed.stdout
    text = run("suppression", "list", "--store", url)
    assert "bob@example.org mailbox_unknown (permanent)" in text.stdout
    # An operator shortening a permanent entry is told so; nonsense is refused.
    again = run("suppression", "add", "bob@example.org", "--ttl", "1h", "--store", url)
    assert again.returncode == 0
    assert "replaced the entry for bob@example.org (mailbox_unknown, permanent)" in again.stderr
    assert "(until " in again.stdout
    assert f"in {tmp_path / 'cli.sqlite3'}" in again.stdout  # which store, absolute
    bad_address = run("suppression", "add", "x y", "--store", url)
    assert bad_address.returncode == 1
    assert "is not an address" in bad_address.stderr
    assert run("suppression", "add", "c@example.org", "--reason", "delivered",
               "--store", url).returncode == 2  # fmt: skip
    # A TTL past any calendar was written, then every listing failed (fuzz review).
    huge = run("suppression", "add", "d@example.org", "--ttl", "99999999999d", "--store", url)
    assert huge.returncode == 2
    assert "longer than 3650d" in huge.stderr
    assert run("suppression", "list", "--store", url).returncode == 0
    assert "add" in run("suppression", "--help").stdout
    nope = run("outbox", "retry-now", "--message-id", "<nope@x>", "--store", url)
    assert nope.returncode == 1
    assert "no message <nope@x>" in nope.stderr
    assert run("policy", "check", "default", "transactional").returncode == 0
    assert run("suppression", "remove", "bob@example.org", "--store", url).returncode == 0
    assert run("suppression", "remove", "bob@example.org", "--store", url).returncode == 1
    status = run("outbox", "status", "--store", url, "--json")
    assert status.returncode == 0
    assert '"deferred": 0' in status.stdout
    bad = run("outbox", "status", "--store", "postgresql://x/y")
    assert bad.returncode == 1
    assert "postgresql" in bad.stderr
    assert "Traceback" not in bad.stderr


def _soft_policy(tmp_path: Path) -> Any:
    from mailpolicy import load_policy

    policy_file = tmp_path / "soft.toml"
    policy_file.write_text(
        'schema = 1\nname = "soft"\nextends = "default"\ndescription = "three soft bounces"\n'
        '[suppression]\nsoft_bounce_limit = 3\nsoft_bounce_window = "7d"\n'
    )
    return load_policy(policy_file)


def test_cli_reads_only_a_store_that_exists(tmp_path: Path) -> None:
    """A relative sqlite:/// URL run from another directory (a systemd unit, cron) named
    a store nobody wrote to: `outbox status` showed an empty outbox and created the file.
    Reading commands now refuse with the absolute path; the worker says it is creating
    one; nothing else is created."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> Any:
        return subprocess.run([sys.executable, "-m", "mailpolicy", *args], capture_output=True,
                              text=True, timeout=60, check=False, cwd=elsewhere)  # fmt: skip

    for command in (("outbox", "status"), ("outbox", "list"), ("suppression", "list")):
        done = run(*command, "--store", "sqlite:///mail.sqlite3")
        assert done.returncode == 1, done
        assert f"no store at {elsewhere / 'mail.sqlite3'}" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (elsewhere / "mail.sqlite3").exists()
    worker = run("worker", "--store", "sqlite:///mail.sqlite3", "--host", "127.0.0.1",
                 "--port", "1", "--security", "none", "--once")  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert "no store at" in worker.stderr
    assert "creating an empty one" in worker.stderr
    assert (elsewhere / "mail.sqlite3").exists()


def test_mail_for_another_relay_is_shown_and_the_worker_says_it_leaves_it(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock
) -> None:
    """A worker claims only its relay's messages: after a port change it found nothing,
    said "0 claim(s)" and left the mail waiting, silently (operator walkthrough review).
    `outbox status` now lists pending mail per relay and the worker warns about it."""
    url = f"sqlite:///{tmp_path / 'relays.sqlite3'}"
    store = open_store(url)
    _deferred(smtp_server, store, clock, "ann@example.org")
    store.close()

    def run(*args: str) -> Any:
        return subprocess.run([sys.executable, "-m", "mailpolicy", *args], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip

    status = run("outbox", "status", "--store", url)
    relay = f"{smtp_server.host}:{smtp_server.port}"
    assert f"relay {relay}: 1 pending, 1 due" in status.stdout
    as_json = run("outbox", "status", "--store", url, "--json")
    assert f'"{relay}": {{"pending": 1, "due": 1}}' in as_json.stdout
    worker = run("worker", "--store", url, "--host", smtp_server.host, "--port", "1",
                 "--security", "none", "--once")  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert "0 claim(s)" in worker.stdout
    assert f"not drained by this worker: {relay} (1 pending, 1 due)" in worker.stderr
    assert "--all-relays" in worker.stderr


def test_the_cli_worker_finds_policies_from_files(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock
) -> None:
    """Messages sent under a policy file carry only its name ("shop"): the CLI worker
    fell back to "default" (5 days instead of shop's 1 day, say) with a warning per
    message. --policy-file makes the name known; without it, one warning per name."""
    from mailpolicy import load_policy

    policy_file = tmp_path / "shop.toml"
    policy_file.write_text(
        'schema = 1\nname = "shop"\nextends = "transactional"\ndescription = "shop"\n'
    )
    url = f"sqlite:///{tmp_path / 'shop.sqlite3'}"
    store = open_store(url)
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 2)
    sender = Sender(
        smtp_server.host, smtp_server.port, security="none", store=store,
        policy=load_policy(policy_file), clock=clock.time, monotonic=clock.now,
        sleep=clock.sleep, relays=RelayRegistry(), local_hostname="client.test",
    )  # fmt: skip
    with sender:
        sender.send(message("ann@example.org"))
        sender.send(message("bob@example.org"))
    store.retry_now(now=time.time())
    store.close()
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 2)
    base = ["worker", "--store", url, "--host", smtp_server.host, "--port",
            str(smtp_server.port), "--security", "none", "--once"]  # fmt: skip

    def run(*extra: str) -> Any:
        return subprocess.run([sys.executable, "-m", "mailpolicy", *base, *extra],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    without = run()
    assert without.returncode == 0, without.stderr
    assert without.stderr.count("mail.worker.policy_fallback") == 1  # once per name
    with sqlite3.connect(tmp_path / "shop.sqlite3") as db:
        db.execute("UPDATE recipients SET next_attempt_at = 0")  # due again
    found = run("--policy-file", str(policy_file))
    assert found.returncode == 0, found.stderr
    assert "policy_fallback" not in found.stderr
    assert "2 delivered" in found.stdout
    bad = run("--policy-file", str(tmp_path / "missing.toml"))
    assert bad.returncode == 1
    assert "missing.toml" in bad.stderr


def test_outbox_show_tells_what_happened_to_one_message(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock
) -> None:
    """`mailpolicy outbox show MESSAGE_ID`: each recipient's state and every attempt
    with what the server said (the journal had no reader but the API)."""
    url = f"sqlite:///{tmp_path / 'show.sqlite3'}"
    store = open_store(url)
    smtp_server.script.rcpt("ann@example.org", "450 4.2.0 Greylisted, try again later")
    smtp_server.script.rcpt("bob@example.org", "550 5.1.1 <bob@example.org>: User unknown")
    with make_sender(smtp_server, store, clock, RelayRegistry()) as sender:
        report = sender.send(message("ann@example.org", "bob@example.org", "cat@example.org"))
    store.close()

    def run(*args: str) -> Any:
        return subprocess.run([sys.executable, "-m", "mailpolicy", "outbox", *args,
                               "--store", url], capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip

    bare = report.message_id.strip("<>")
    shown = run("show", bare)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == report.message_id
    assert "  ann@example.org: deferred (greylisted), 1 attempt(s), next attempt " in shown.stdout
    assert "  bob@example.org: bounced (mailbox_unknown), 1 attempt(s)" in shown.stdout
    assert "bob@example.org: bounced (mailbox_unknown, suppress) 550 5.1.1" in shown.stdout
    assert "450 4.2.0 Greylisted, try again later" in shown.stdout
    as_json = json.loads(run("show", report.message_id, "--json").stdout)
    assert [r["recipient"] for r in as_json["recipients"]] == [
        "ann@example.org", "bob@example.org", "cat@example.org"
    ]  # fmt: skip
    assert {a["recipient"] for a in as_json["attempts"]} == {
        "ann@example.org", "bob@example.org", "cat@example.org"
    }  # fmt: skip
    missing = run("show", "<nope@example.com>")
    assert missing.returncode == 1
    assert "no message <nope@example.com>" in missing.stderr
    listed = run("list", "--state", "bounced", "--message-id", report.message_id)
    assert "bob@example.org bounced mailbox_unknown" in listed.stdout


def test_a_later_bounce_message_is_recorded_in_the_outbox(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """The relay accepted ann (the store says delivered), then mailed back a DSN: 5.1.1.
    DSN intake records it on the stored recipient (journal and state), so `outbox show`
    no longer says "delivered" for her (operator walkthrough review)."""
    from mailpolicy import intake_dsn, parse_dsn

    smtp_server.script.rcpt("bob@example.org", "450 4.2.0 Greylisted")
    with make_sender(smtp_server, store, clock, RelayRegistry()) as sender:
        report = sender.send(message("ann@example.org", "bob@example.org"))
    dsn = (
        "From: MAILER-DAEMON@relay.example\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
        "--B\nContent-Type: text/plain\n\nUndeliverable.\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; relay.example\n\n"
        "Final-Recipient: rfc822; Ann@Example.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: User unknown\n\n"
        "--B\nContent-Type: text/rfc822-headers\n\n"
        f"Message-ID: {report.message_id}\nSubject: Test\n\n--B--\n"
    )
    (verdict,) = intake_dsn(parse_dsn(dsn.encode()), store=store, now=clock.time())
    assert (verdict.suppression, verdict.recorded) == ("added", True)
    states = {r.recipient: (r.state, r.reason) for r in store.list_recipients()}
    assert states == {
        "ann@example.org": ("bounced", "mailbox_unknown"),
        "bob@example.org": ("deferred", "greylisted"),
    }
    ann = [a for a in store.journal(message_id=report.message_id)
           if a.recipient == "ann@example.org"]  # fmt: skip
    assert [a.state for a in ann] == ["delivered", "bounced"]
    assert ann[-1].text == "bounce message: 550 5.1.1 <ann@example.org>: User unknown"
    unknown = parse_dsn(dsn.replace(report.message_id, "<other@x>").encode())
    (other,) = intake_dsn(unknown, store=store, now=clock.time())
    assert other.recorded is False  # not a message of this outbox


def _soft_sender(server: SMTPTestServer, store: Store, clock: FakeClock, tmp_path: Path) -> Sender:
    return Sender(
        server.host, server.port, security="none", store=store,
        policy=_soft_policy(tmp_path), clock=clock.time, monotonic=clock.now,
        sleep=clock.sleep, relays=RelayRegistry(), local_hostname="client.test",
    )  # fmt: skip


def test_soft_bounces_escalate_to_suppression(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock
) -> None:
    """[suppression] soft_bounce_limit messages that ended on a full mailbox within the
    window put the address on the list (a policy with a limit of 3)."""
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    smtp_server.script.rcpt("carl@example.org", *["552 5.2.2 Mailbox full"] * 3)
    with _soft_sender(smtp_server, store, clock, tmp_path) as sender:
        states = [sender.send(message("carl@example.org")).outcomes[0].state for _ in range(4)]
    store.close()
    assert states == ["bounced", "bounced", "bounced", "suppressed"]
    assert smtp_server.rcpt_addresses().count("carl@example.org") == 3


def test_one_message_retried_on_a_full_mailbox_counts_one_soft_bounce(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock
) -> None:
    """A message deferred on "452 4.2.2 Mailbox full" and retried by the worker until the
    queue gives up (3 days under the default policy) is one soft bounce, not one per
    retry: with a limit of 3 the address is not listed, and the next message goes out."""
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    smtp_server.script.rcpt("carl@example.org", *["452 4.2.2 Mailbox full"] * 200)
    with _soft_sender(smtp_server, store, clock, tmp_path) as sender:
        assert sender.send(message("carl@example.org")).outcomes[0].state == "deferred"
    worker = Worker(
        store, smtp_server.host, smtp_server.port, security="none",
        policy=_soft_policy(tmp_path), clock=clock.time, monotonic=clock.now,
        sleep=clock.sleep, relays=RelayRegistry(),
    )  # fmt: skip
    rounds = 0
    while store.counts(now=clock.time())["deferred"] and rounds < 100:
        clock.advance(3 * 3600)
        worker.run_once()
        rounds += 1
    counts = store.counts(now=clock.time())
    assert (counts["deferred"], counts["bounced"]) == (0, 1)
    retries = smtp_server.rcpt_addresses().count("carl@example.org")
    assert retries > 3  # more retries than the limit: each would have counted before
    assert store.suppressed("carl@example.org", now=clock.time()) is None
    assert store.record_soft_bounce("carl@example.org", now=clock.time(), window=7 * 86400) == 2
    store.close()


def test_a_hold_does_not_count_toward_give_up_after(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """DESIGN.md §1: held is "kept, neither bounced nor retried on the normal schedule".
    Held for two days on a relay-access refusal (retried hourly), then the configuration
    is fixed and the server greylists once: the recipient is deferred and then delivered,
    not bounced because two days exceed the give-up time of the transactional policy."""
    from mailpolicy import load_policy

    policy = load_policy("transactional")  # give_up_after 24h
    relays = RelayRegistry()
    smtp_server.script.rcpt("ann@example.org", *["554 5.7.1 Relay access denied"] * 100)
    sender = Sender(
        smtp_server.host, smtp_server.port, security="none", store=store, policy=policy,
        clock=clock.time, monotonic=clock.now, sleep=clock.sleep, relays=relays,
        local_hostname="client.test",
    )  # fmt: skip
    with sender:
        assert sender.send(message("ann@example.org")).outcomes[0].state == "held"
    worker = Worker(
        store, smtp_server.host, smtp_server.port, security="none", policy=policy,
        clock=clock.time, monotonic=clock.now, sleep=clock.sleep, relays=relays,
    )  # fmt: skip
    for _ in range(48):
        clock.advance(3600)
        worker.run_once()
    assert store.counts(now=clock.time())["held"] == 1
    smtp_server.reset()
    smtp_server.script.rcpt("ann@example.org", "450 4.7.1 Greylisted, try again in 300 seconds")
    clock.advance(3600)
    worker.run_once()
    assert store.counts(now=clock.time())["deferred"] == 1
    clock.advance(3600)
    worker.run_once()
    assert store.counts(now=clock.time())["delivered"] == 1
    assert smtp_server.delivered_to("ann@example.org") == 1


def test_worker_threads_share_the_outbox_without_duplicates(
    smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'threads.sqlite3'}"
    store = open_store(url)
    clock = FakeClock(wall=time.time())
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 15)
    with make_sender(smtp_server, store, clock, RelayRegistry()) as sender:
        for i in range(15):
            sender.send(message(f"t{i}@example.org"))
    store.retry_now(now=time.time())
    store.close()
    done = subprocess.run(
        [sys.executable, "-m", "mailpolicy", "worker", "--store", url, "--host",
         smtp_server.host, "--port", str(smtp_server.port), "--security", "none", "--once",
         "--concurrency", "3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 worker(s)" in done.stdout
    rcpts = [r for m in smtp_server.messages for r in m.rcpt_tos]
    assert sorted(rcpts) == sorted(f"t{i}@example.org" for i in range(15))


def test_dsn_intake_suppresses_hard_bounces_with_events(tmp_path: Path) -> None:
    """mailpolicy dsn FILE --store URL: a failed 5.1.1 suppresses (with the policy's
    TTL), a delayed one never does; one mail.dsn event per recipient."""
    import structlog

    from mailpolicy import intake_dsn, parse_dsn

    store = open_store(f"sqlite:///{tmp_path / 'dsn.sqlite3'}")
    data = (Path(__file__).parent / "data" / "dsn").glob("*postfix*.eml")
    report = parse_dsn(next(iter(sorted(data))).read_bytes())
    with structlog.testing.capture_logs() as logs:
        verdicts = intake_dsn(report, store=store, now=1_700_000_000.0, source="p.eml")
    events = [e for e in logs if e["event"] == "mail.dsn"]
    assert len(events) == len(verdicts) == len(report.recipients)
    suppressed = {s.address for s in store.suppressions(now=1_700_000_000.0)}
    assert suppressed == {v.recipient.lower() for v in verdicts if v.suppress}
    assert all(not v.suppress for v in verdicts if v.dsn_action == "delayed")
    (entry,) = store.suppressions(now=1_700_000_000.0)
    assert entry.expires_at is not None  # the default policy's [suppression] ttl
    store.close()


def test_destination_overrides_inline_and_suppression(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """transactional's [[destinations]] corp.example: 6 inline attempts, and its own
    [suppression] enabled = false, so a 550 5.1.1 there bounces without suppressing."""
    smtp_server.script.rcpt("x@corp.example", *["451 4.3.0 Try later"] * 10)
    smtp_server.script.rcpt("y@corp.example", "550 5.1.1 User unknown")
    sender = Sender(
        smtp_server.host, smtp_server.port, security="none", store=store,
        policy="transactional", clock=clock.time, monotonic=clock.now, sleep=clock.sleep,
        rng=lambda: 0.0, relays=RelayRegistry(), local_hostname="client.test",
    )  # fmt: skip
    with sender:
        x = sender.send(message("x@corp.example")).outcomes[0]
        y = sender.send(message("y@corp.example")).outcomes[0]
    # More than the policy's own 4 attempts: the destination allows 6, and the relay's
    # retry budget (capacity 20, 5 per retry) stops the tier at the fifth.
    assert (x.state, x.attempts) == ("deferred", 5)
    assert y.state == "bounced"
    assert store.suppressions(now=clock.time()) == []


def test_worker_skips_addresses_suppressed_since_and_keeps_to_its_relay(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    relays = RelayRegistry()
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 2)
    with make_sender(smtp_server, store, clock, relays) as sender:
        sender.send(message("ann@example.org"))
        sender.send(message("bob@example.org"))
    store.add_suppression("ann@example.org", reason="mailbox_unknown", now=clock.time(), ttl=None)
    clock.advance(86400)
    other = Worker(
        store, smtp_server.host, smtp_server.port + 1, security="none", clock=clock.time,
        monotonic=clock.now, sleep=clock.sleep, relays=relays,
    )  # fmt: skip
    assert other.run_once().claims == 0  # another relay's messages are not its business
    import structlog

    with structlog.testing.capture_logs() as logs:
        stats = make_worker(smtp_server, store, clock, relays).run_once()
    assert (stats.delivered, stats.by_state.get("suppressed")) == (1, 1)
    # one mail.delivery event per recipient, the suppressed one included (it had none)
    delivery = sorted(e["state"] for e in logs if e["event"] == "mail.delivery")
    assert delivery == ["delivered", "suppressed"]
    assert "ann@example.org" not in [r for m in smtp_server.messages for r in m.rcpt_tos]
    (row,) = store.list_recipients(state="suppressed", message_id=None, limit=10)
    assert row.recipient == "ann@example.org"


def test_cli_worker_exits_nonzero_when_it_cannot_work(tmp_path: Path) -> None:
    """A store that fails under the worker (here: not a database) ends the command
    with a clear error and exit status 1, not 0, so a supervisor restarts it."""
    bad = tmp_path / "not-a-db.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "mailpolicy", "worker", "--store", f"sqlite:///{bad}",
         "--host", "127.0.0.1", "--port", "2525", "--security", "none", "--once"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "not a database" in done.stderr or "not-a-db" in done.stderr


def test_a_delivery_of_several_transactions_keeps_its_lease(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """The server takes one recipient per transaction (452 "too many recipients") and
    answers each final dot slowly: the delivery outlasts the lease taken before it. The
    worker renews the lease before each transaction, so a second worker polling the
    outbox never takes the message and nobody gets two copies (concurrency review: 3 of 3
    runs sent both recipients twice). Real time, scaled down: lease 2 s, replies 1.2 s."""
    import threading

    from mailpolicy.testing import Delay

    url = f"sqlite:///{tmp_path / 'mail.sqlite3'}"  # the store fixture's file
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 2)
    with make_sender(smtp_server, store, clock, RelayRegistry()) as sender:
        sender.send(message("bob@example.org", "cy@example.org"))
    store.retry_now(now=time.time())
    smtp_server.reset()
    smtp_server.script.rcpt("cy@example.org", "452 4.5.3 Too many recipients")
    smtp_server.script.end_of_data(Delay(1.2), Delay(1.2))

    def worker(name: str) -> Worker:
        return Worker(
            open_store(url), smtp_server.host, smtp_server.port, security="none",
            lease=2.0, relays=RelayRegistry(), owner=name,
        )  # fmt: skip

    a, b = worker("a"), worker("b")
    stop = threading.Event()

    def poll() -> None:
        while not smtp_server.transcript and not stop.is_set():  # a has claimed it
            time.sleep(0.01)
        while not stop.is_set():
            b.run_once()
            time.sleep(0.1)

    polling = threading.Thread(target=poll)
    polling.start()
    try:
        a.run_once()
    finally:
        stop.set()
        polling.join()
        a.store.close()
        b.store.close()
    assert a.stats.leases_lost == 0
    assert a.stats.delivered == 2
    for address in ("bob@example.org", "cy@example.org"):
        assert smtp_server.delivered_to(address) == 1, address


def test_a_lease_that_cannot_be_renewed_mid_delivery_loses_nothing(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """Between two transactions of one delivery the store stays locked: the lease cannot
    be renewed. The worker sends nothing more, but still records what the first
    transaction delivered (it escaped unrecorded and was sent again: diff review); the
    recipient left is untouched (no attempt, no made-up failure that could bounce it at
    the give-up time: second diff review) and delivered by the next run."""
    from mailpolicy._store import StoreBusyError

    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 2)
    with make_sender(smtp_server, store, clock, RelayRegistry()) as sender:
        sender.send(message("bob@example.org", "cy@example.org"))
    store.retry_now(now=clock.time())
    smtp_server.reset()
    smtp_server.script.rcpt("cy@example.org", "452 4.5.3 Too many recipients")
    renewals: list[int] = []

    def locked_after_the_first() -> None:
        renewals.append(1)
        if len(renewals) > 1:  # the first renew is before the delivery; then: locked
            raise StoreBusyError("database is locked")

    worker = Worker(
        _Hooked(store, locked_after_the_first, "renew"), smtp_server.host, smtp_server.port,
        security="none", clock=clock.time, monotonic=clock.now, sleep=clock.sleep,
        relays=RelayRegistry(),
    )  # fmt: skip
    stats = worker.run_once()
    assert (stats.delivered, stats.deferred, stats.leases_lost) == (1, 0, 0)
    assert smtp_server.delivered_to("bob@example.org") == 1
    assert smtp_server.delivered_to("cy@example.org") == 0
    (cy,) = store.list_recipients(state="deferred")
    # Untouched: no attempt counted for it, its earlier reason kept, due a minute later.
    assert (cy.recipient, cy.reason, cy.attempts) == ("cy@example.org", "greylisted", 1)
    assert cy.next_attempt_at == clock.time() + 60
    store.retry_now(now=clock.time())
    make_worker(smtp_server, store, clock, RelayRegistry()).run_once()
    assert smtp_server.delivered_to("cy@example.org") == 1
    assert smtp_server.delivered_to("bob@example.org") == 1  # never a second copy


_API_WORKER = """
import sys
from mailpolicy import open_store
from mailpolicy._worker import Worker
url, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open_store(url) as store:
    worker = Worker(store, host, port, security="none")
    try:
        worker.run_forever(poll=0.05)
    except KeyboardInterrupt:  # raised again once the message in hand is recorded
        print("interrupted after", worker.stats.delivered)
"""


def _interrupt_a_worker_child(
    smtp_server: SMTPTestServer,
    store: Store,
    clock: FakeClock,
    tmp_path: Path,
    *,
    script: str,
    signum: int,
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (a worker from Python, in a child process) on one deferred message
    whose final dot the server answers after a second, and send it ``signum`` while it
    waits for that reply."""
    from mailpolicy.testing import Delay

    _deferred(smtp_server, store, clock, "u0@example.org")
    store.retry_now(now=time.time())
    smtp_server.reset()
    smtp_server.script.end_of_data(Delay(1.0, "250 2.0.0 queued"))
    url = f"sqlite:///{tmp_path / 'mail.sqlite3'}"
    args = [sys.executable, "-c", script, url, smtp_server.host, str(smtp_server.port)]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(e.stage == "data" for e in smtp_server.transcript):
        assert time.monotonic() < deadline, "the worker never reached DATA"
        time.sleep(0.01)
    time.sleep(0.3)  # it now waits for the reply to the final dot
    child.send_signal(signum)
    out, err = child.communicate(timeout=30)
    return subprocess.CompletedProcess(args, child.returncode, out, err)


def test_ctrl_c_on_the_python_worker_records_the_message_in_hand(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """Worker.run_forever() from Python, interrupted while the server answers the final
    dot: it used to die with KeyboardInterrupt at once, the accepted message unrecorded
    and sent again after the lease (concurrency review). The KeyboardInterrupt now comes
    once the message in hand is recorded."""
    done = _interrupt_a_worker_child(
        smtp_server, store, clock, tmp_path, script=_API_WORKER, signum=signal.SIGINT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "interrupted after 1"
    counts = store.counts(now=time.time())
    assert (counts["delivered"], counts["deferred"], counts["leased"]) == (1, 0, 0)
    assert smtp_server.delivered_to("u0@example.org") == 1


def test_a_signal_to_a_run_once_loop_is_raised_again_after_the_message_in_hand(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """An application calling run_once() in its own loop: SIGTERM waits for the message
    in hand, then terminates the process as it would have (it was swallowed, leaving a
    process that ran on and delivered nothing more: diff review)."""
    loop = _API_WORKER.replace(
        "worker.run_forever(poll=0.05)",
        "while True:\n            worker.run_once()\n            import time; time.sleep(0.05)",
    )
    done = _interrupt_a_worker_child(
        smtp_server, store, clock, tmp_path, script=loop, signum=signal.SIGTERM
    )
    assert done.returncode == -signal.SIGTERM  # terminated, as SIGTERM does
    counts = store.counts(now=time.time())
    assert (counts["delivered"], counts["leased"]) == (1, 0)  # but after recording


class _Hooked:
    """A real store with a hook run before one of its methods (``record_attempt`` by
    default): the place where another worker, or another connection, gets between a
    worker's delivery and what it writes afterwards."""

    def __init__(
        self, store: Store, before: Callable[[], None], method: str = "record_attempt"
    ) -> None:
        self._store = store
        self._before = before
        self._method = method

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name != self._method:
            return found

        def hooked(*args: Any, **kwargs: Any) -> Any:
            self._before()
            return found(*args, **kwargs)

        return hooked


def _deferred(smtp_server: SMTPTestServer, store: Store, clock: FakeClock, *to: str) -> None:
    relays = RelayRegistry()
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * len(to))
    with make_sender(smtp_server, store, clock, relays) as sender:
        for address in to:
            sender.send(message(address))
    store.retry_now(now=clock.time())


def test_a_worker_attempt_emits_its_attempt_event_and_elapsed_time(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """DESIGN.md §5: one mail.attempt event per SMTP attempt, the worker's too (numbered
    after the send()'s), and mail.delivery carries elapsed_ms."""
    import structlog

    _deferred(smtp_server, store, clock, "ann@example.org")
    worker = make_worker(smtp_server, store, clock, RelayRegistry())
    with structlog.testing.capture_logs() as logs:
        assert worker.run_once().delivered == 1
    (attempt,) = [e for e in logs if e["event"] == "mail.attempt"]
    assert (attempt["attempt"], attempt["recipients"]) == (2, 1)
    assert attempt["actions"] == {"deliver": 1}
    (delivery,) = [e for e in logs if e["event"] == "mail.delivery"]
    assert delivery["state"] == "delivered"
    assert isinstance(delivery["elapsed_ms"], float)


def test_a_refused_password_costs_one_auth_per_hold_not_one_per_message(
    smtp_server_factory: Callable[..., SMTPTestServer], store: Store, clock: FakeClock
) -> None:
    """Twenty queued messages and a wrong password: the worker's first attempt is held
    (auth_failed) and it makes no other attempt through the relay until the hold ends
    ([queue] hold_for, 1 h by default): one failed AUTH, not twenty (providers lock
    accounts and block IPs on counts of those)."""
    import structlog

    server = smtp_server_factory(auth={"app": "right"}, auth_require_tls=False)
    server.script.rcpt(*["450 4.2.0 Greylisted"] * 20)
    with make_sender(server, store, clock, RelayRegistry()) as sender:
        for i in range(20):
            sender.send(message(f"u{i}@example.org"))
    store.retry_now(now=clock.time())
    relays = RelayRegistry()  # one process: its worker threads share the relay's state

    def make() -> Worker:
        return Worker(
            store, server.host, server.port, security="none", username="app",
            password="wrong",  # noqa: S106 - a test credential
            allow_insecure_auth=True, clock=clock.time, monotonic=clock.now,
            sleep=clock.sleep, relays=relays,
        )  # fmt: skip

    worker, other_thread = make(), make()
    with structlog.testing.capture_logs() as logs:
        stats = worker.run_once()
        store.retry_now(now=clock.time())  # even with everything made due again
        other_thread.run_once()  # --concurrency: another thread's worker waits too
    assert [a.success for a in server.auth_attempts] == [False]
    assert (stats.held, stats.deferred) == (1, 0)
    counts = store.counts(now=clock.time())
    assert (counts["held"] + counts["deferred"], counts["due"]) == (20, 0)  # all waiting
    (held,) = [e for e in logs if e["event"] == "mail.worker.relay_held"]  # once
    assert (held["reason"], held["log_level"]) == ("auth_failed", "error")
    clock.advance(3601)  # the hold is over: one more AUTH, one more hold
    worker.run_once()
    assert [a.success for a in server.auth_attempts] == [False, False]


def test_a_batch_claim_is_renewed_before_each_delivery(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """A batch is leased at one instant but delivered one message after another. Each
    delivery here takes 0.6 of the lease, so the third message's original lease has
    expired while the second is being sent, and a second worker claims (and sends) it.
    The first worker must then skip it, not send it a second time."""
    _deferred(smtp_server, store, clock, "ann@example.org", "bob@example.org", "cy@example.org")
    relays = RelayRegistry()
    other = make_worker(smtp_server, store, clock, relays)
    deliveries: list[int] = []
    other_claims: list[int] = []

    def a_delivery_takes_a_while() -> None:
        clock.advance(0.6 * a.lease)
        deliveries.append(1)
        if len(deliveries) == 2:  # 1.2 leases after the batch was claimed
            other_claims.append(other.run_once().claims)

    a = Worker(
        _Hooked(store, a_delivery_takes_a_while), smtp_server.host, smtp_server.port,
        security="none", clock=clock.time, monotonic=clock.now, sleep=clock.sleep,
        relays=relays,
    )  # fmt: skip
    stats = a.run_once()
    assert other_claims == [1]  # only the third: the second's lease was renewed
    assert (stats.claims, stats.leases_lost) == (2, 1)  # the third was skipped
    rcpts = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert rcpts == ["ann@example.org", "bob@example.org", "cy@example.org"]  # once each
    assert store.counts(now=clock.time())["delivered"] == 3


@pytest.mark.parametrize("locked_at", ["record_attempt", "record_soft_bounce"])
def test_a_locked_database_does_not_lose_a_delivery(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock, locked_at: str
) -> None:
    """The server answered 250 after the final dot; another connection holds the write
    lock past the busy timeout, when the attempt is recorded or when a soft bounce of the
    co-recipient is counted for the suppression list. The worker waits (on its injected
    sleep) and records the delivery, instead of raising and leaving the message to be
    sent again when the lease expires."""
    import sqlite3

    import structlog

    path = tmp_path / "locked.sqlite3"
    store = open_store(f"sqlite:///{path}?timeout=0.05")
    _deferred(smtp_server, store, clock, "ann@example.org", "bob@example.org")
    if locked_at == "record_soft_bounce":
        smtp_server.script.rcpt("bob@example.org", "552 5.2.2 Mailbox full")
    blocker = sqlite3.connect(path, isolation_level=None)
    locked: list[bool] = []

    def lock_once() -> None:
        if not locked:
            blocker.execute("BEGIN IMMEDIATE")
            locked.append(True)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if blocker.in_transaction:
            blocker.execute("COMMIT")  # the other connection finishes while we wait

    worker = Worker(
        _Hooked(store, lock_once, locked_at), smtp_server.host, smtp_server.port,
        security="none", clock=clock.time, monotonic=clock.now, sleep=sleep,
        relays=RelayRegistry(),
    )  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        stats = worker.run_once()
    blocker.close()
    delivered = 2 if locked_at == "record_attempt" else 1
    assert (stats.delivered, stats.leases_lost) == (delivered, 0)
    assert len(smtp_server.messages) == delivered  # one copy each: nothing sent twice
    assert store.counts(now=clock.time())["delivered"] == delivered
    if locked_at == "record_soft_bounce":  # and the soft bounce was counted after all
        assert store.record_soft_bounce("bob@example.org", now=clock.time(), window=3600) == 2
    busy = [e for e in logs if e["event"] == "mail.worker.store_busy"]
    assert len(busy) == 1, busy
    assert "database is locked" in busy[0]["error"]
    assert clock.sleeps == [1.0]  # tenacity's first exponential wait, on the fake clock
    store.close()


@pytest.mark.parametrize("released", [True, False])
def test_a_locked_store_in_send_is_waited_for_or_raises_with_the_report(
    smtp_server: SMTPTestServer, tmp_path: Path, clock: FakeClock, released: bool
) -> None:
    """send() with a store another connection keeps locked past the busy timeout (a
    purge, an operator's sqlite3 shell): the server had accepted ann and deferred bob.
    send() now waits and tries again; if the lock stays, the StoreError carries the
    report, so a caller that retries knows ann has her copy (concurrency review)."""
    path = tmp_path / "busy.sqlite3"
    store = open_store(f"sqlite:///{path}?timeout=0.05")
    smtp_server.script.rcpt("bob@example.org", "450 4.2.0 Greylisted")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if released and blocker.in_transaction:
            blocker.execute("COMMIT")

    sender = Sender(
        smtp_server.host, smtp_server.port, security="none", store=store, clock=clock.time,
        monotonic=clock.now, sleep=sleep, relays=RelayRegistry(), local_hostname="client.test",
    )  # fmt: skip
    with sender:
        if released:
            report = sender.send(message("ann@example.org", "bob@example.org"))
            assert [(o.state, o.persisted) for o in report.outcomes] == [
                ("delivered", False), ("deferred", True)
            ]  # fmt: skip
            assert store.counts(now=clock.time())["deferred"] == 1
        else:
            with pytest.raises(StoreError, match="locked") as info:
                sender.send(message("ann@example.org", "bob@example.org"))
            raised = info.value.report
            assert raised is not None
            assert [(o.recipient, o.state) for o in raised.outcomes] == [
                ("ann@example.org", "delivered"), ("bob@example.org", "deferred")
            ]  # fmt: skip
            blocker.execute("COMMIT")
    assert clock.sleeps == [0.5, 1.0][: 1 if released else 2]
    assert smtp_server.delivered_to("ann@example.org") == 1
    blocker.close()
    store.close()


def test_the_relay_a_message_is_filed_under_ignores_the_host_names_case(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """Host names are case-insensitive (RFC 4343): mail saved through "LocalHost" is
    claimed by a worker started for "localhost" (it waited forever before)."""
    relays = RelayRegistry()
    smtp_server.script.rcpt("450 4.2.0 Greylisted")
    with Sender(
        "LocalHost", smtp_server.port, security="none", store=store, clock=clock.time,
        monotonic=clock.now, sleep=clock.sleep, relays=relays, local_hostname="client.test",
    ) as sender:  # fmt: skip
        o = sender.send(message("ann@example.org")).outcomes[0]
        assert (o.state, o.code) == ("deferred", 450), o
    store.retry_now(now=clock.time())
    worker = Worker(
        store, "localhost", smtp_server.port, security="none", clock=clock.time,
        monotonic=clock.now, sleep=clock.sleep, relays=relays,
    )  # fmt: skip
    assert worker.run_once().delivered == 1
    assert [r for m in smtp_server.messages for r in m.rcpt_tos] == ["ann@example.org"]


def test_the_worker_sends_an_idn_envelope_sender_without_smtputf8(
    smtp_server_factory: Factory, store: Store, clock: FakeClock
) -> None:
    """An IDN domain goes on the wire as its A-label: it needs no SMTPUTF8. The worker
    decided from the raw envelope sender and bounced a greylisted message as
    "SMTPUTF8 not offered" (found in review)."""
    server = smtp_server_factory(smtputf8=False)
    relays = RelayRegistry()
    server.script.rcpt("450 4.2.0 Greylisted")
    with make_sender(server, store, clock, relays) as sender:
        report = sender.send(message("ann@example.org"), envelope_from="bounces@bücher.de")
    assert report.outcomes[0].state == "deferred"
    store.retry_now(now=clock.time())
    assert make_worker(server, store, clock, relays).run_once().delivered == 1
    assert server.messages[0].mail_from == "bounces@xn--bcher-kva.de"


@pytest.mark.parametrize(
    ("option", "value"),
    [("lease", 0), ("lease", -1.0), ("lease", float("nan")), ("lease", "15m"),
     ("batch", 0), ("batch", 1001), ("batch", 2.5), ("batch", True)],
)  # fmt: skip
def test_a_worker_refuses_a_bad_lease_or_batch_when_made(
    store: Store, option: str, value: object
) -> None:
    """At construction, naming the option, not at the first claim as a store error."""
    from mailpolicy import ConfigurationError

    with pytest.raises(ConfigurationError, match=f"^{option} must be"):
        Worker(store, "127.0.0.1", 2525, security="none", **{option: value})  # type: ignore[arg-type]


def test_a_lease_shorter_than_one_transaction_is_warned_about_once(
    smtp_server: SMTPTestServer, store: Store, clock: FakeClock
) -> None:
    """A transaction may wait the policy's end-of-data timeout (600 s) after the final
    dot; a 2-minute lease can run out meanwhile and another worker send the message
    again. The worker says so (once per policy), and works as asked."""
    import structlog

    relays = RelayRegistry()
    smtp_server.script.rcpt(*["450 4.2.0 Greylisted"] * 2)
    with make_sender(smtp_server, store, clock, relays) as sender:
        sender.send(message("ann@example.org"))
        sender.send(message("bob@example.org"))
    clock.advance(3600)
    with structlog.testing.capture_logs() as logs:
        short = Worker(
            store, smtp_server.host, smtp_server.port, security="none", clock=clock.time,
            monotonic=clock.now, sleep=clock.sleep, relays=relays, lease=120.0,
        )  # fmt: skip
        assert short.run_once().delivered == 2
    warned = [e for e in logs if e["event"] == "mail.worker.lease_short"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"
    assert (warned[0]["policy"], warned[0]["lease"]) == ("default", 120.0)
    assert warned[0]["needed"] == 600.0 + 6 * warned[0]["command_timeout"]
    with structlog.testing.capture_logs() as logs:
        Worker(
            store, smtp_server.host, smtp_server.port, security="none", clock=clock.time,
            monotonic=clock.now, sleep=clock.sleep, relays=relays, policy="default",
        ).run_once()  # fmt: skip
    assert not [e for e in logs if e["event"] == "mail.worker.lease_short"]


def test_a_short_lease_is_warned_about_at_start_when_the_policy_is_given(store: Store) -> None:
    import structlog

    with structlog.testing.capture_logs() as logs:
        Worker(store, "127.0.0.1", 2525, security="none", policy="bulk", lease=60.0)
    (warned,) = [e for e in logs if e["event"] == "mail.worker.lease_short"]
    assert warned["policy"] == "bulk"
