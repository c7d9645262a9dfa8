"""The outbox worker as the framework integrations run it (``python manage.py
mailpolicy_worker``, ``flask mailpolicy worker``): a :class:`~mailpolicy._worker.Worker`
built from an app's settings, that knows the app's policies by name, and a run loop that
stops gracefully on SIGTERM/SIGINT.

Messages are saved with their policy's *name*; a policy loaded from a file (``POLICY =
"conf/mail.toml"``) cannot be found again by that name alone, so the app's own policies
are looked up first, then the shipped ones; a name neither knows falls back to the app's
main policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import MailPolicyError
from ._policy import Policy
from ._policy_load import load_policy
from ._schedule import parse_duration
from ._sender import Sender
from ._session import Security
from ._store import Store
from ._worker import DEFAULT_LEASE, Worker, WorkerStats, stop_on_signals

__all__ = ["DEFAULT_LEASE", "DEFAULT_POLL", "AppWorker", "duration", "run", "summary"]

#: Idle wait between scans of the outbox (seconds).
DEFAULT_POLL = 5.0


def duration(text: str) -> float:
    """Seconds from a duration with its unit (``"15m"``, ``"30s"``, ``"500ms"``; a bare
    number is refused, as in policies). Raises ``ValueError`` naming the text."""
    seconds = parse_duration(text)
    if seconds is None:
        raise ValueError(f"{text!r} is not a duration such as '15m' or '30s'")
    return seconds


class AppWorker(Worker):
    """A :class:`Worker` whose messages' policies are resolved against the app's own
    (``policies``: the main one first) before the shipped ones."""

    def __init__(
        self,
        store: Store,
        host: str,
        port: int | None,
        *,
        policies: Iterable[Policy],
        security: Security,
        username: str | None,
        password: str | None,
        allow_insecure_auth: bool,
        lease: float = DEFAULT_LEASE,
        sender_options: Mapping[str, Any] | None = None,
    ) -> None:
        known = list(policies)
        if not known:
            raise ValueError("AppWorker needs at least the app's main policy")
        options = dict(sender_options or {})
        # Check the connection settings now (a Sender connects on first need only), so a
        # misconfigured worker fails at start, not at its first due message.
        Sender(
            host,
            port,
            policy=known[0],
            security=security,
            username=username,
            password=password,
            allow_insecure_auth=allow_insecure_auth,
            **options,
        ).close()
        super().__init__(
            store,
            host,
            port,
            security=security,
            username=username,
            password=password,
            lease=lease,
            allow_insecure_auth=allow_insecure_auth,
            sender_options=options,
        )
        self._main = known[0]
        self._site: dict[str, Policy] = {}
        for policy in reversed(known):  # the main policy wins a name clash
            self._site[policy.name] = policy

    def _sender_for(self, name: str) -> Sender:
        policy = self._site.get(name)
        if policy is None:
            try:
                policy = load_policy(name)
            except MailPolicyError:  # renamed or removed since the send: the app's own
                policy = self._main
        sender = self._senders.get(policy.name)
        if sender is None:
            sender = self._senders[policy.name] = self._make(policy)
        return sender


def run(worker: Worker, *, once: bool, poll: float = DEFAULT_POLL) -> WorkerStats:
    """Run ``worker`` (``once``: what is due now, then return; otherwise until SIGTERM or
    SIGINT) and close its connections."""
    try:
        # A management command stops gracefully on SIGTERM/SIGINT and prints its summary:
        # the signal is consumed here, not raised again once the worker has returned.
        with stop_on_signals(worker.stop_requested, redeliver=False):
            return worker.run_once() if once else worker.run_forever(poll=poll)
    finally:
        worker.close()


def summary(worker: Worker, stats: WorkerStats) -> str:
    """One line saying what the worker did."""
    return (
        f"worker {worker.owner}: {stats.claims} claim(s), {stats.delivered} delivered, "
        f"{stats.deferred} deferred, {stats.bounced} bounced, {stats.held} held"
    )
