"""Build, start and stop a throwaway Postfix instance on 127.0.0.1 (docs/interop.md).

Everything the instance owns lives under one temporary directory: its ``main.cf`` and
``master.cf`` (``etc/``), its lookup tables (``texthash:`` files, no ``postmap``), its
queue (``spool/``), its data directory (``data/``), its log file (``maillog``, written by
``postlogd``: no syslog needed) and the virtual mailboxes it delivers to (``mail/``, one
Maildir per user). Nothing outside that directory is written; the only outside effect
is running Postfix's own binaries (``postfix -c <dir> start|stop|abort``).

Three smtpd services listen on free high ports of 127.0.0.1: ``plain`` (SMTPUTF8
offered, no STARTTLS), ``noutf8`` (the same with ``smtputf8_enable=no``) and ``tls``
(``smtpd_tls_security_level=may`` with a certificate the caller provides). No mail can
leave: ``default_transport`` and ``relay_transport`` are ``error:`` transports.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

#: The virtual mailbox domain (Maildirs under ``mail/``). Not ``.test``: the default
#: policy's address check (email-validator) refuses special-use domains.
DOMAIN: Final = "mp.example.org"
#: A ``mydestination`` domain: its users are checked against ``local_recipient_maps``
#: and reach a Maildir through ``virtual_alias_maps`` (no UNIX accounts involved).
LOCAL_DOMAIN: Final = "local.mp.example.org"

#: Virtual users (local part → Maildir name): the key is what ``RCPT TO`` names.
MAILBOXES: Final[Mapping[str, str]] = {
    "app": "app",  # the envelope sender of the suite
    "alice": "alice",
    "bob": "bob",
    "carol": "carol",
    "jörg": "joerg",  # a non-ASCII local part, deliverable only with SMTPUTF8
}
#: Users of LOCAL_DOMAIN (``local_recipient_maps``), aliased to a virtual mailbox.
LOCAL_USERS: Final[Mapping[str, str]] = {"carol": f"carol@{DOMAIN}"}
#: ``check_recipient_access`` entries: recipient → scripted reply.
RECIPIENT_ACCESS: Final[Mapping[str, str]] = {
    f"later@{DOMAIN}": "450 4.7.1 try again later",
    f"busy@{DOMAIN}": "451 4.3.0 scripted temporary failure",
    f"blocked@{DOMAIN}": "550 5.7.1 blocked by local policy",
}
#: ``check_sender_access`` entries: envelope sender → scripted reply.
SENDER_ACCESS: Final[Mapping[str, str]] = {
    "spammer@blocked.example.com": "554 5.7.1 sender blocked by local policy",
}

_SBIN: Final = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
_ENV: Final = {"PATH": os.pathsep.join(_SBIN), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_MIN_VERSION: Final = (3, 4)  # maillog_file and postlogd
_QUEUE_ID: Final = r"[0-9A-Za-z]+"


class PostfixUnavailableError(RuntimeError):
    """Postfix cannot run here; the message says why (shown as the skip reason)."""


def find_postfix() -> Path:
    """The ``postfix`` command, or :class:`PostfixUnavailableError` naming what is missing."""
    found = shutil.which("postfix", path=os.pathsep.join([os.environ.get("PATH", ""), *_SBIN]))
    if found is None:
        raise PostfixUnavailableError(
            "the postfix binary is not installed (apt-get install postfix; see docs/interop.md)"
        )
    if os.geteuid() != 0:
        raise PostfixUnavailableError(
            "`postfix start` must run as root (its master process binds and drops privileges)"
        )
    for what, check in (("user", pwd.getpwnam), ("group", grp.getgrnam)):
        name = "postfix" if what == "user" else "postdrop"
        try:
            check(name)
        except KeyError:
            raise PostfixUnavailableError(
                f"the {what} {name!r} is missing (Postfix not installed by its package?)"
            ) from None
    postconf = Path(found).with_name("postconf")
    done = subprocess.run(
        [str(postconf), "-dh", "mail_version"],
        capture_output=True,
        text=True,
        env=_ENV,
        check=False,
        timeout=30,
    )
    version = tuple(int(x) for x in re.findall(r"\d+", done.stdout)[:2])
    if done.returncode != 0 or version < _MIN_VERSION:
        raise PostfixUnavailableError(
            f"Postfix {done.stdout.strip() or '?'} is too old or broken: "
            f"maillog_file needs 3.4 or later ({done.stderr.strip()})"
        )
    return Path(found)


def free_port() -> int:
    """A port of 127.0.0.1 nobody listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the log says happened to one queued message: its queue ID and, per
    recipient, the ``status=`` word and the text in parentheses, in log order."""

    queue_id: str
    results: tuple[tuple[str, str, str], ...]

    def statuses(self, recipient: str) -> list[str]:
        return [status for rcpt, status, _ in self.results if rcpt == recipient]


@dataclass
class PostfixInstance:
    """One Postfix instance under ``root`` (an empty directory the caller removes)."""

    root: Path
    postfix: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    running: bool = False

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    # --- configuration -----------------------------------------------------------------

    def _table(self, name: str, rows: Mapping[str, str]) -> Path:
        path = self.etc / name
        path.write_text("".join(f"{k} {v}\n" for k, v in rows.items()), encoding="utf-8")
        return path

    def _mailbox_owner(self) -> tuple[int, int]:
        """The uid/gid ``virtual(8)`` delivers as: ``nobody``, else ``postfix``."""
        for name in ("nobody", "postfix"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return entry.pw_uid, entry.pw_gid
        raise PostfixUnavailableError("neither user 'nobody' nor 'postfix' exists")

    def write_config(self) -> None:
        """Write main.cf, master.cf and the tables; create the directories."""
        self.root.chmod(0o755)  # the postfix user must reach the queue
        for d in (self.etc, self.spool, self.mail):
            d.mkdir(mode=0o755, exist_ok=True)
        uid, gid = self._mailbox_owner()
        os.chown(self.mail, uid, gid)
        for port_name in ("plain", "noutf8", "tls"):
            self.ports.setdefault(port_name, free_port())
        vmailbox = self._table(
            "vmailbox", {f"{user}@{DOMAIN}": f"{DOMAIN}/{box}/" for user, box in MAILBOXES.items()}
        )
        valias = self._table(
            "valias", {f"{user}@{LOCAL_DOMAIN}": target for user, target in LOCAL_USERS.items()}
        )
        local_recipients = self._table(
            "local_recipients", {f"{user}@{LOCAL_DOMAIN}": "ok" for user in LOCAL_USERS}
        )
        recipient_access = self._table("recipient_access", RECIPIENT_ACCESS)
        sender_access = self._table("sender_access", SENDER_ACCESS)
        main = f"""\
# Generated by tests/postfix/instance.py: a throwaway instance, loopback only.
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.root / "data"}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $myhostname
mydestination = localhost, {LOCAL_DOMAIN}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP mailpolicy interop
smtpd_peername_lookup = no
biff = no
in_flow_delay = 0
alias_maps =
alias_database =
local_recipient_maps = texthash:{local_recipients}
local_transport = discard:local delivery is off in the interop instance
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{vmailbox}
virtual_alias_maps = texthash:{valias}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
relay_domains =
default_transport = error:no mail leaves the interop instance
relay_transport = error:no mail leaves the interop instance
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
    check_sender_access texthash:{sender_access},
    check_recipient_access texthash:{recipient_access},
    reject_unlisted_recipient,
    permit
smtputf8_enable = yes
smtpd_tls_security_level = none
smtp_tls_security_level = none
"""
        (self.etc / "main.cf").write_text(main, encoding="utf-8")
        tls = ""
        if self.tls_cert is not None and self.tls_key is not None:
            tls = (
                f" -o smtpd_tls_security_level=may -o smtpd_tls_cert_file={self.tls_cert}"
                f" -o smtpd_tls_key_file={self.tls_key} -o smtpd_tls_loglevel=1"
            )
        p = self.ports
        master = f"""\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{p["plain"]} inet n - n - - smtpd
127.0.0.1:{p["noutf8"]} inet n - n - - smtpd -o smtputf8_enable=no
127.0.0.1:{p["tls"]} inet n - n - - smtpd{tls}
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
        (self.etc / "master.cf").write_text(master, encoding="utf-8")

    # --- life cycle --------------------------------------------------------------------

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.postfix), "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
            env=_ENV,
            check=False,
            timeout=timeout,
        )

    def start(self, *, timeout: float = 30, tries: int = 3) -> None:
        """Write the configuration, ``postfix start`` and wait until every port greets.
        A port taken between :func:`free_port` and the master's bind is retried with
        fresh ports. On failure the instance is stopped again and
        :class:`PostfixUnavailableError` raised with Postfix's own words."""
        for attempt in range(1, tries + 1):
            offset = self.log_size()
            try:
                self._start_once(timeout)
            except PostfixUnavailableError:
                if attempt < tries and "Address already in use" in self.log_since(offset):
                    self.ports.clear()
                    continue
                raise
            return

    def _start_once(self, timeout: float) -> None:
        self.write_config()
        done = self._postfix("start")
        self.running = True
        try:
            if done.returncode != 0:
                raise PostfixUnavailableError(
                    f"`postfix -c {self.etc} start` failed ({done.returncode}): "
                    f"{(done.stdout + done.stderr).strip()}\n{self.log_tail()}"
                )
            deadline = time.monotonic() + timeout
            for name, port in self.ports.items():
                self._wait_for_greeting(name, port, deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_for_greeting(self, name: str, port: int, deadline: float) -> None:
        last: str = "no attempt"
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    greeting = s.recv(512)
                    if greeting.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
                    last = repr(greeting)
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)  # bounded polling: the master opens its sockets at once
        raise PostfixUnavailableError(
            f"the {name} smtpd on 127.0.0.1:{port} did not greet ({last})\n{self.log_tail()}"
        )

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_gone(self, pid: int | None, timeout: float) -> bool:
        if pid is None:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:  # pragma: no cover - pid reused by another user
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """``postfix stop``, then ``postfix abort`` if the master has not gone within
        10 s. Safe to call twice."""
        if not self.running:
            return
        self.running = False
        pid = self.master_pid()
        self._postfix("stop", timeout=30)
        if not self._wait_gone(pid, 10):
            self._postfix("abort", timeout=30)
            self._wait_gone(pid, 10)

    # --- what happened -----------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_since(0)

    def log_size(self) -> int:
        """The log's length now: pass it as ``since`` to look only at what follows."""
        try:
            return self.maillog.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.maillog.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, *, since: int = 0, timeout: float = 20) -> re.Match[str]:
        """The first match of ``pattern`` (a regex, multiline) in the log after byte
        ``since``, polling until it appears."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log_since(since))
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(f"no log line matched {pattern!r}:\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_for_count(
        self, pattern: str, count: int, *, since: int = 0, timeout: float = 20
    ) -> int:
        """How many lines after byte ``since`` match ``pattern``, once at least ``count``
        do (or the timeout passed)."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            n = len(regex.findall(self.log_since(since)))
            if n >= count or time.monotonic() >= deadline:
                return n
            time.sleep(0.05)

    def queue_id(self, message_id: str, *, timeout: float = 20) -> str:
        found = self.wait_for_log(
            rf"postfix/cleanup\[\d+\]: ({_QUEUE_ID}): message-id={re.escape(message_id)}",
            timeout=timeout,
        )
        return found.group(1)

    def logged_message_id(self, message_id: str) -> bool:
        return f"message-id={message_id}" in self.log_text()

    def wait_delivered(self, message_id: str, *, timeout: float = 20) -> Delivery:
        """Wait until qmgr removed the message with ``message_id`` from the queue (every
        recipient done) and return the log's per-recipient results."""
        qid = self.queue_id(message_id, timeout=timeout)
        self.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed", timeout=timeout)
        results = tuple(
            (m.group(1), m.group(2), m.group(3))
            for m in re.finditer(
                rf": {qid}: to=<([^>]*)>.*? status=(\w+) \((.*)\)$",
                self.log_text(),
                re.MULTILINE,
            )
        )
        return Delivery(queue_id=qid, results=results)

    def maildir(self, user: str) -> Path:
        return self.mail / DOMAIN / MAILBOXES[user]

    def messages(self, user: str) -> list[bytes]:
        """Every message in ``user``'s Maildir (new/ and cur/), oldest name first."""
        box = self.maildir(user)
        files = sorted(p for sub in ("new", "cur") if (box / sub).is_dir()
                       for p in (box / sub).iterdir())  # fmt: skip
        return [p.read_bytes() for p in files]

    def messages_with_id(self, user: str, message_id: str) -> list[bytes]:
        needle = f"\nMessage-ID: {message_id}\n".encode()
        return [m for m in self.messages(user) if needle in m]
