"""Flask integration: ``MailPolicy(app)`` / ``init_app(app)`` and a Flask-Mailman backend.

Reads Flask-Mail's settings (``MAIL_SERVER``, ``MAIL_PORT``, ``MAIL_USE_TLS``,
``MAIL_USE_SSL``, ``MAIL_USERNAME``, ``MAIL_PASSWORD``, ``MAIL_DEFAULT_SENDER``,
``MAIL_MAX_EMAILS``, ``MAIL_SUPPRESS_SEND``, ``MAIL_ASCII_ATTACHMENTS``), Flask-Mailman's
``MAIL_TIMEOUT`` and our own ``MAILPOLICY_*`` keys, validates them all in ``init_app``
(errors name the setting and what was expected), and sends through a
:class:`~mailpolicy.Sender`::

    from mailpolicy.flask import MailPolicy

    mail = MailPolicy(app)
    report = mail.send(message)      # email.message.EmailMessage or flask_mail.Message

With ``MAILPOLICY_STORE`` (a store URL or a store object) recipients still ``deferred``
or ``held`` after the in-request retries are saved before ``send()`` returns and the
worker delivers them (``flask mailpolicy worker``). Without one, such a message raises
:class:`DeliveryIncomplete` (an ``smtplib.SMTPException``; the same class as
:class:`mailpolicy.DeliveryIncomplete`) carrying the report, unless
``fail_silently=True``; ``bounced`` and ``invalid`` recipients are final outcomes in the
report and do not raise. With ``MAIL_SUPPRESS_SEND`` (default:
``TESTING``) messages are recorded, not sent. ``EmailBackend`` plugs the same sender into
Flask-Mailman: ``MAIL_BACKEND = "mailpolicy.flask.EmailBackend"``. See docs/flask.md.

Neither Flask-Mail nor Flask-Mailman is imported here: their messages are recognised
by type (Flask-Mail) or by shape (Flask-Mailman), so this module needs only Flask.
"""

from __future__ import annotations

import copy
import difflib
import email
import email.policy
import json
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self, cast

import click
from blinker import Namespace
from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup

from . import _appworker
from ._address import check_address
from ._errors import (
    ConfigurationError,
    DeliveryIncomplete,
    InvalidInputError,
    MessageError,
    PolicyError,
)
from ._events import RECIPIENT_STYLES, RecipientStyle
from ._message import prepare_message, split_addresses
from ._outcome import DeliveryReport, RecipientOutcome
from ._policy import Policy
from ._policy_load import load_policy
from ._sender import Sender, is_seconds, prevalidate
from ._session import Security
from ._store import Store, StoreError, open_store

__all__ = [
    "Connection",
    "DeliveryIncomplete",
    "EmailBackend",
    "MailPolicy",
    "MailSettings",
    "cli",
    "message_dispatched",
]

#: The key of the extension's state in ``app.extensions``.
EXTENSION: Final = "mailpolicy"

#: Every ``MAILPOLICY_*`` key this module reads, and what it expects. Any other key with
#: that prefix is an error (a typo must not silently lose a setting).
SETTINGS: Final[Mapping[str, str]] = {
    "MAILPOLICY_POLICY": (
        "a shipped policy name ('default', 'transactional', 'bulk'), a path to a .toml "
        "policy file, or a mailpolicy.Policy"
    ),
    "MAILPOLICY_STORE": (
        "the outbox: a store URL such as 'sqlite:////var/lib/app/mail.sqlite3', or a store "
        "object (mailpolicy.open_store(...))"
    ),
    "MAILPOLICY_ALLOW_INSECURE_AUTH": (
        "a bool: allow AUTH (MAIL_USERNAME/MAIL_PASSWORD) over a connection without TLS"
    ),
    "MAILPOLICY_SSL_CONTEXT": (
        "an ssl.SSLContext to verify the server with (default: ssl.create_default_context())"
    ),
    "MAILPOLICY_RECIPIENT_STYLE": "how events show recipients: 'mask', 'full' or 'hash'",
    "MAILPOLICY_LOCAL_HOSTNAME": "the name sent in EHLO, one word without spaces or control "
    "characters (default: this host's FQDN)",
}

#: ESMTP options our Sender adds by itself when a message needs them; any other option
#: (DSN's NOTIFY/RET, REQUIRETLS, ...) is not supported yet and refused, never dropped.
_AUTOMATIC_OPTIONS: Final = frozenset({"SMTPUTF8", "BODY=8BITMIME"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})

_signals = Namespace()
#: Sent after every ``send()`` that produced a report, also when ``MAIL_SUPPRESS_SEND``
#: only recorded the message and also when :class:`DeliveryIncomplete` follows:
#: ``message_dispatched.send(app, message=message, report=report)``. ``message`` is the
#: object as sent (an ``EmailMessage`` with ``From`` filled in, or the Flask-Mail /
#: Flask-Mailman message).
message_dispatched = _signals.signal("mailpolicy-message-dispatched")


#: How the integration names the store setting in ``DeliveryIncomplete``'s message.
STORE_SETTING: Final = "MAILPOLICY_STORE"


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MailSettings:
    """The validated mail settings of one Flask app (``app.extensions["mailpolicy"]``)."""

    host: str
    port: int
    security: Security
    username: str | None
    password: str | None = field(repr=False)
    timeout: float | None
    policy: Policy
    ssl_context: ssl.SSLContext | None
    allow_insecure_auth: bool
    recipient_style: RecipientStyle
    local_hostname: str | None
    default_sender: str | None
    suppress: bool
    max_emails: int | None
    ascii_attachments: bool
    #: The outbox (``MAILPOLICY_STORE``), opened once in ``init_app`` and kept open for
    #: the app's life; None without one.
    store: Store | None = field(default=None, repr=False)
    #: The URL ``store`` was opened from (None: a store object was given, or no store).
    store_url: str | None = None

    def sender(self) -> Sender:
        """A new :class:`~mailpolicy.Sender` with these settings (it connects on first
        need; close it, or use it as a context manager)."""
        return Sender(
            self.host,
            self.port,
            policy=self.policy,
            security=self.security,
            username=self.username,
            password=self.password,
            ssl_context=self.ssl_context,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
            allow_insecure_auth=self.allow_insecure_auth,
            recipient_style=self.recipient_style,
            store=self.store,
        )


class _SettingError(Exception):
    """A setting is wrong: caught by :func:`read_settings` and reported with its name.
    ``what`` is the whole explanation; :func:`_expected` builds the usual one."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(f"{key}: {what}")


def _expected(key: str, expected: str, value: object, *, show: bool = True) -> _SettingError:
    return _SettingError(
        key, f"expected {expected}, got {value!r}" if show else f"expected {expected}"
    )


def _bool(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _expected(key, "a bool (True or False)", value)


def _text(config: Mapping[str, Any], key: str, *, secret: bool = False) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _expected(key, "a str", value, show=not secret)
    return value


def _port(config: Mapping[str, Any]) -> int:
    value = config.get("MAIL_PORT", 25)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _expected("MAIL_PORT", "a port number from 1 to 65535", value)
    return value


def _timeout(config: Mapping[str, Any]) -> float | None:
    value = config.get("MAIL_TIMEOUT")
    if value is None:
        return None
    if not is_seconds(value):
        raise _expected("MAIL_TIMEOUT", "a finite number of seconds above 0, or None", value)
    return float(value)


def _max_emails(config: Mapping[str, Any]) -> int | None:
    value = config.get("MAIL_MAX_EMAILS")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _expected("MAIL_MAX_EMAILS", "a positive int, or None", value)
    return value


def _policy(config: Mapping[str, Any]) -> Policy:
    value = config.get("MAILPOLICY_POLICY", "default")
    if isinstance(value, Policy):
        return value
    if not isinstance(value, str | Path):
        raise _expected("MAILPOLICY_POLICY", SETTINGS["MAILPOLICY_POLICY"], value)
    try:
        return load_policy(value)
    except (PolicyError, InvalidInputError) as exc:
        raise _SettingError("MAILPOLICY_POLICY", f"cannot load {value!r}: {exc}") from exc


def _default_sender(config: Mapping[str, Any], policy: Policy) -> str | None:
    value = config.get("MAIL_DEFAULT_SENDER")
    expected = "an address ('Shop <shop@example.com>' or a (name, address) tuple), or None"
    if value is None or value == "":
        return None
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
    ):
        name, address = value
        # Not formataddr: it refuses a Unicode domain with UnicodeEncodeError (fuzz
        # review), which the string form of the same sender takes.
        try:
            value = str(Address(display_name=name, addr_spec=address)) if name else address
        except (ValueError, IndexError, TypeError, HeaderParseError) as exc:
            raise _expected("MAIL_DEFAULT_SENDER", f"{expected}: {exc}", value) from None
    if not isinstance(value, str):
        raise _expected("MAIL_DEFAULT_SENDER", expected, value)
    if any(c in value for c in "\r\n\x00"):
        # It becomes the From header of every message without one: refused here, at
        # start-up, not as a ValueError from each send (fuzz review).
        raise _expected("MAIL_DEFAULT_SENDER", f"{expected}, without CR, LF or NUL", value)
    found = split_addresses(value)
    if len(found) != 1:
        raise _expected("MAIL_DEFAULT_SENDER", f"exactly one address: {expected}", value)
    checked = check_address(found[0], mode=policy.address.mode)
    if not checked.ok:
        raise _expected("MAIL_DEFAULT_SENDER", f"a valid address ({checked.error})", value)
    return value


def _send_options(config: Mapping[str, Any]) -> None:
    value = config.get("MAIL_SEND_OPTIONS") or []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _expected("MAIL_SEND_OPTIONS", "a list of str", value)
    unsupported = [v for v in value if v.upper() not in _AUTOMATIC_OPTIONS]
    if unsupported:
        raise _SettingError(
            "MAIL_SEND_OPTIONS",
            f"{unsupported!r} are not supported yet (mailpolicy adds SMTPUTF8 and "
            "BODY=8BITMIME by itself when a message needs them); remove them",
        )


def _unknown_keys(config: Mapping[str, Any]) -> None:
    for key in config:
        if isinstance(key, str) and key.startswith("MAILPOLICY_") and key not in SETTINGS:
            close = difflib.get_close_matches(key, SETTINGS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise _SettingError(
                key, f"unknown setting; {hint}mailpolicy.flask reads {', '.join(SETTINGS)}"
            )


def _store_setting(config: Mapping[str, Any]) -> Store | str | None:
    value = config.get("MAILPOLICY_STORE")
    if value is None or value == "":
        return None
    if not isinstance(value, str | Store):
        raise _expected("MAILPOLICY_STORE", SETTINGS["MAILPOLICY_STORE"], value)
    return value


def _open(value: Store | str | None, reuse: Store | None) -> tuple[Store | None, str | None]:
    """The store for ``MAILPOLICY_STORE``: ``reuse`` when given (already open for this
    app), the object itself, or a new store opened from the URL."""
    if value is None:
        return None, None
    url = value if isinstance(value, str) else None
    if reuse is not None:
        return reuse, url
    try:
        return open_store(value), url
    except StoreError as exc:
        raise _SettingError("MAILPOLICY_STORE", f"cannot open {value!r}: {exc}") from exc


def _read(config: Mapping[str, Any], testing: bool, policy: Policy | None) -> MailSettings:
    _unknown_keys(config)
    _store_setting(config)
    for key in ("MAIL_SSL_KEYFILE", "MAIL_SSL_CERTFILE"):
        if config.get(key):
            raise _SettingError(
                key,
                "not supported: for a client certificate build an ssl.SSLContext, call "
                "load_cert_chain() on it and set MAILPOLICY_SSL_CONTEXT",
            )
    _send_options(config)
    host = config.get("MAIL_SERVER", "127.0.0.1")
    if not isinstance(host, str) or not host.strip():
        raise _expected("MAIL_SERVER", "a host name or address", host)
    use_tls = _bool(config, "MAIL_USE_TLS", False)
    use_ssl = _bool(config, "MAIL_USE_SSL", False)
    if use_tls and use_ssl:
        raise _SettingError(
            "MAIL_USE_TLS",
            "MAIL_USE_TLS (STARTTLS) and MAIL_USE_SSL (implicit TLS) are both set: set one",
        )
    security: Security = "ssl" if use_ssl else "starttls" if use_tls else "none"
    username = _text(config, "MAIL_USERNAME")
    password = _text(config, "MAIL_PASSWORD", secret=True)
    if username is not None and password is None:
        raise _SettingError("MAIL_PASSWORD", "not set, but MAIL_USERNAME is: give both or neither")
    if password is not None and username is None:
        raise _SettingError("MAIL_USERNAME", "not set, but MAIL_PASSWORD is: give both or neither")
    insecure = _bool(config, "MAILPOLICY_ALLOW_INSECURE_AUTH", False)
    if username is not None and security == "none" and not insecure:
        raise _SettingError(
            "MAILPOLICY_ALLOW_INSECURE_AUTH",
            "MAIL_USERNAME is set but neither MAIL_USE_TLS nor MAIL_USE_SSL: the password "
            "would cross the network in plain text. Turn on TLS, or set "
            "MAILPOLICY_ALLOW_INSECURE_AUTH = True for a trusted relay on this host",
        )
    context = config.get("MAILPOLICY_SSL_CONTEXT")
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise _expected("MAILPOLICY_SSL_CONTEXT", SETTINGS["MAILPOLICY_SSL_CONTEXT"], context)
    style = config.get("MAILPOLICY_RECIPIENT_STYLE", "mask")
    if style not in RECIPIENT_STYLES:
        raise _expected("MAILPOLICY_RECIPIENT_STYLE", SETTINGS["MAILPOLICY_RECIPIENT_STYLE"], style)
    local = config.get("MAILPOLICY_LOCAL_HOSTNAME")
    if local is not None and (
        not isinstance(local, str)
        or any(c.isspace() or not c.isprintable() for c in local)
        or not local
    ):
        raise _expected("MAILPOLICY_LOCAL_HOSTNAME", SETTINGS["MAILPOLICY_LOCAL_HOSTNAME"], local)
    resolved = policy if policy is not None else _policy(config)
    return MailSettings(
        host=host.strip(),
        port=_port(config),
        security=security,
        username=username,
        password=password,
        timeout=_timeout(config),
        policy=resolved,
        ssl_context=context,
        allow_insecure_auth=insecure,
        recipient_style=cast(RecipientStyle, style),
        local_hostname=local,
        default_sender=_default_sender(config, resolved),
        suppress=_bool(config, "MAIL_SUPPRESS_SEND", testing),
        max_emails=_max_emails(config),
        ascii_attachments=_bool(config, "MAIL_ASCII_ATTACHMENTS", False),
    )


def read_settings(
    config: Mapping[str, Any],
    *,
    testing: bool = False,
    app_name: str = "",
    policy: Policy | None = None,
    store: Store | None = None,
) -> MailSettings:
    """Validate a Flask config's mail settings. Raises :class:`~mailpolicy.ConfigurationError`
    naming the setting and what was expected; never connects to the relay. ``policy``
    skips loading ``MAILPOLICY_POLICY`` again, ``store`` opening ``MAILPOLICY_STORE``
    again (an open store for it). A store opened from a URL stays open: the caller
    closes it (``settings.store.close()``) when done with the settings."""
    where = f"mailpolicy.flask (app {app_name!r})" if app_name else "mailpolicy.flask"
    try:
        settings = _read(config, testing, policy)
        # The Sender checks the combination too (it connects on first need only).
        settings.sender().close()
        # Opened last, once everything else is known to be right.
        opened, url = _open(_store_setting(config), store)
        settings = replace(settings, store=opened, store_url=url)
    except _SettingError as problem:
        raise ConfigurationError(f"{where}: {problem}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    return settings


def _settings(app: Flask) -> MailSettings:
    state = app.extensions.get(EXTENSION)
    if state is None:
        raise RuntimeError(
            f"the Flask app {app.name!r} was not set up with mailpolicy.flask.MailPolicy "
            "(call MailPolicy(app) or mail.init_app(app))"
        )
    return cast(MailSettings, state)


@dataclass(slots=True)
class _FlaskMailState:
    """What ``flask_mail.Message`` reads from ``app.extensions["mail"]`` (the default
    sender and ``MAIL_ASCII_ATTACHMENTS``), for apps that use Flask-Mail's ``Message``
    with MailPolicy instead of Flask-Mail's ``Mail``."""

    default_sender: str | None
    ascii_attachments: bool


# --- messages ---------------------------------------------------------------------------


class _FlaskMailMessage(Protocol):
    """The parts of ``flask_mail.Message`` used here."""

    sender: str | tuple[str, str] | None
    recipients: list[str | tuple[str, str]]
    cc: list[str | tuple[str, str]]
    bcc: list[str | tuple[str, str]]
    mail_options: list[str]
    rcpt_options: list[str]

    def as_bytes(self) -> bytes: ...
    def has_bad_headers(self) -> bool: ...


class _MailmanMIME(Protocol):
    """What ``flask_mailman.EmailMessage.message()`` returns (its ``SafeMIME*`` types)."""

    def as_bytes(self, unixfrom: bool = False, linesep: str = "\n") -> bytes: ...


class _MailmanMessage(Protocol):
    """The parts of ``flask_mailman.EmailMessage`` used here."""

    from_email: str

    def message(self) -> _MailmanMIME: ...
    def recipients(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A message ready for the Sender, with its explicit envelope (or None)."""

    message: Message
    envelope_from: str | None
    recipients: Sequence[str] | None


def _addresses(value: str | tuple[str, str]) -> list[str]:
    """The addr-spec of one sender or recipient entry (a header-style string or a (name,
    address) tuple); an unparseable string stays as written, so pre-validation reports it
    as ``invalid``. An entry naming several addresses is a ``ValueError``, as Flask-Mail
    (which keeps only the first) and Django refuse to widen the envelope: "c@x,
    attacker@y" from a form field must not become two recipients."""
    if isinstance(value, tuple):
        return [value[1]]
    found = split_addresses(value)
    if len(found) > 1:
        raise ValueError(f"Invalid address; one entry names several addresses: {value!r}")
    return found or [value]


def _reparse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.default)


def _is_flask_mail_message(message: object) -> bool:
    flask_mail = sys.modules.get("flask_mail")  # a Flask-Mail Message implies it is loaded
    return flask_mail is not None and isinstance(message, flask_mail.Message)


def _check_options(options: Sequence[str], what: str) -> None:
    unsupported = [o for o in options if o.upper() not in _AUTOMATIC_OPTIONS]
    if unsupported:
        raise MessageError(
            f"{what} {unsupported!r} are not supported yet (mailpolicy adds SMTPUTF8 and "
            "BODY=8BITMIME by itself when the message needs them)"
        )


def _from_flask_mail(message: object, default_sender: str | None) -> _Outgoing:
    m = cast(_FlaskMailMessage, copy.copy(message))
    if not m.sender:
        if default_sender is None:
            raise MessageError("the message has no sender and MAIL_DEFAULT_SENDER is not set")
        m.sender = default_sender
    _check_options(m.mail_options, "mail_options")
    _check_options(m.rcpt_options, "rcpt_options")
    for name in ("recipients", "cc", "bcc"):
        if isinstance(getattr(m, name), str | bytes):
            # Flask-Mail iterates it: "b@example.org" became 13 one-character recipients
            # (fuzz review). Sender.send refuses the same mistake.
            raise MessageError(f"{name} must be a list of addresses, not one str")
    if m.has_bad_headers():
        raise MessageError("a header contains CR or LF (header injection refused)")
    try:
        data = m.as_bytes()
    except (KeyError, RuntimeError) as exc:  # no app context / app.extensions["mail"]
        raise MessageError(
            "a Flask-Mail Message is serialised inside an app context of an app set up "
            f"with MailPolicy (or Flask-Mail): {exc!r}"
        ) from exc
    recipients = [a for r in (*m.recipients, *m.cc, *m.bcc) for a in _addresses(r)]
    return _Outgoing(
        _reparse(data), _addresses(m.sender)[0], list(dict.fromkeys(recipients)) or None
    )


def _from_mailman(message: _MailmanMessage) -> _Outgoing:
    """The envelope, checked as Flask-Mailman's SMTP backend (and Django's) checks it:
    ``ValueError("Invalid address ...")`` for a malformed address or for a string holding
    more than one ("c@x, attacker@y" in one ``cc`` entry is never split into two
    recipients). The addresses themselves go to the Sender as written."""
    from flask_mailman.message import sanitize_address  # type: ignore[import-untyped]  # noqa: PLC0415

    encoding = getattr(message, "encoding", None) or "utf-8"

    def prepare(address: str | tuple[str, str]) -> str:
        # Flask-Mailman's own check (one address, parsed whole, no CR/LF) raises as its
        # backend does; its result is not used: it writes a non-ASCII local part as an
        # encoded-word and the domain with IDNA 2003 (straße.de -> strasse.de, another
        # domain). The Sender's pre-validation does SMTPUTF8 and IDNA 2008 instead.
        sanitize_address(address, encoding)
        return _addresses(address)[0]

    data = message.message().as_bytes(linesep="\r\n")
    recipients = [prepare(r) for r in message.recipients()]
    return _Outgoing(_reparse(data), prepare(message.from_email), recipients)


def _outgoing(
    message: object,
    settings: MailSettings,
    envelope_from: str | None,
    recipients: Sequence[str] | None,
) -> _Outgoing:
    if isinstance(message, Message):
        if message.get("From") is None and settings.default_sender is not None:
            message = copy.deepcopy(message)
            message["From"] = settings.default_sender
        return _Outgoing(message, envelope_from, recipients)
    if _is_flask_mail_message(message):
        out = _from_flask_mail(message, settings.default_sender)
        return replace(
            out,
            envelope_from=envelope_from or out.envelope_from,
            recipients=recipients if recipients is not None else out.recipients,
        )
    raise MessageError(
        "send() takes an email.message.EmailMessage or a flask_mail.Message, "
        f"not {type(message).__name__}"
    )


def _recorded(out: _Outgoing, settings: MailSettings) -> DeliveryReport:
    """MAIL_SUPPRESS_SEND: what a send would report, without connecting. The message is
    prepared and every address pre-validated as for a real send (so the same messages
    raise ``MessageError`` and the same addresses are ``invalid``); the others are
    ``delivered`` with ``action="record"``."""
    prepared = prepare_message(
        out.message, envelope_from=out.envelope_from, recipients=out.recipients
    )
    _, outcomes, valid = prevalidate(prepared, settings.policy)
    for recipient, _wire in valid:
        outcomes[recipient] = RecipientOutcome(
            recipient=recipient,
            state="delivered",
            reason="delivered",
            text="MAIL_SUPPRESS_SEND: recorded, not sent",
            rule="flask.suppress_send",
            action="record",
        )
    return DeliveryReport(
        message_id=prepared.message_id,
        envelope_from=prepared.envelope_from,
        relay="suppressed",
        policy=settings.policy.name,
        outcomes=tuple(outcomes[r] for r in prepared.recipients),
    )


# --- sending ----------------------------------------------------------------------------


def _accepted(report: DeliveryReport) -> bool:
    """Accepted for delivery: a recipient delivered, or saved in the store for the worker."""
    return bool(report.delivered) or any(o.persisted for o in report.pending)


def _unsaved(report: DeliveryReport) -> bool:
    """A recipient deferred or held that no store keeps: nothing will try it again."""
    return any(not o.persisted for o in report.pending)


class Connection:
    """One connection's worth of sends (``with mail.connect() as conn``): every
    ``send()`` goes through one :class:`~mailpolicy.Sender`, so the SMTP connection is
    opened on first need and reused; it is closed when the block ends. After
    ``MAIL_MAX_EMAILS`` messages it is closed and the next send opens a new one. Not
    thread-safe: use one per thread (``mail.send()`` makes its own)."""

    def __init__(self, app: Flask, settings: MailSettings) -> None:
        self.app = app
        self.settings = settings
        self._sender: Sender | None = None
        self._count = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """QUIT and close the SMTP connection, if one is open."""
        if self._sender is not None:
            sender, self._sender = self._sender, None
            sender.close()

    def send(
        self,
        message: object,
        *,
        envelope_from: str | None = None,
        recipients: Sequence[str] | None = None,
        fail_silently: bool = False,
    ) -> DeliveryReport:
        """Send ``message`` (an ``email.message.EmailMessage`` or a ``flask_mail.Message``;
        a missing From is filled from ``MAIL_DEFAULT_SENDER``) and return its report.

        Raises :class:`DeliveryIncomplete` when a recipient is left ``deferred`` or
        ``held`` and no store keeps it (nothing would retry it), unless
        ``fail_silently``; with ``MAILPOLICY_STORE`` they are saved for the worker
        (``persisted=True``) and nothing is raised for them (a store that cannot save
        raises :class:`~mailpolicy.StoreError`, even with ``fail_silently``); raises
        :class:`~mailpolicy.MessageError` for a message that cannot be sent as given
        (never silenced, as Django never silences a bad address)."""
        out = _outgoing(message, self.settings, envelope_from, recipients)
        report = self._deliver(out)
        sent = out.message if isinstance(message, Message) else message
        self.dispatched(sent, report)
        if not fail_silently and _unsaved(report):
            raise DeliveryIncomplete(
                [(sent, report)],
                sent=1 if _accepted(report) else 0,
                recipient_style=self.settings.recipient_style,
                store_setting=STORE_SETTING,
            )
        return report

    def _deliver(self, out: _Outgoing) -> DeliveryReport:
        if self.settings.suppress:
            return _recorded(out, self.settings)
        if self._sender is None:
            self._sender = self.settings.sender()
        report = self._sender.send(
            out.message, envelope_from=out.envelope_from, recipients=out.recipients
        )
        self._count += 1
        if self.settings.max_emails is not None and self._count >= self.settings.max_emails:
            self._count = 0
            self.close()
        return report

    def send_mailman(self, message: _MailmanMessage) -> DeliveryReport:
        """Send a Flask-Mailman ``EmailMessage`` (its envelope: ``from_email`` and
        ``recipients()``, Bcc included). Raises nothing for delivery outcomes: the
        caller (:class:`EmailBackend`) decides."""
        report = self._deliver(_from_mailman(message))
        self.dispatched(message, report)
        return report

    def dispatched(self, message: object, report: DeliveryReport) -> None:
        message_dispatched.send(self.app, message=message, report=report)
        if _is_flask_mail_message(message):
            # Flask-Mail's own signal, so its record_messages() and listeners keep working.
            sys.modules["flask_mail"].email_dispatched.send(self.app, message=message)


class MailPolicy:
    """The Flask extension: ``MailPolicy(app)`` or ``mail = MailPolicy()`` then
    ``mail.init_app(app)`` (app factories: it then works with ``current_app``).

    ``init_app`` validates every setting and raises
    :class:`~mailpolicy.ConfigurationError` naming the one at fault; it connects to
    nothing. It stores :class:`MailSettings` in ``app.extensions["mailpolicy"]`` and,
    unless Flask-Mail's ``Mail`` already did, what ``flask_mail.Message`` needs in
    ``app.extensions["mail"]`` (so Flask-Mail messages keep working without Flask-Mail's
    ``Mail``)."""

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> MailSettings:
        """Validate the app's settings, open its store (``MAILPOLICY_STORE``; kept open
        for the app's life, reused if ``init_app`` runs again with the same URL) and add
        the ``flask mailpolicy`` commands to ``app.cli``."""
        previous = app.extensions.get(EXTENSION)
        reuse = None
        if (
            isinstance(previous, MailSettings)
            and previous.store_url is not None
            and previous.store_url == app.config.get("MAILPOLICY_STORE")
        ):
            reuse = previous.store
        settings = read_settings(app.config, testing=app.testing, app_name=app.name, store=reuse)
        app.extensions[EXTENSION] = settings
        app.extensions.setdefault(
            "mail",
            _FlaskMailState(settings.default_sender, settings.ascii_attachments),
        )
        app.cli.add_command(cli)
        return settings

    def _app(self) -> Flask:
        if self.app is not None:
            return self.app
        return cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]

    @property
    def settings(self) -> MailSettings:
        """This app's validated settings (``current_app``'s when not bound to one)."""
        return _settings(self._app())

    @property
    def store(self) -> Store | None:
        """This app's outbox (``MAILPOLICY_STORE``), or None: its counts, its
        suppression list (``store.suppressed(address, now=time.time())``)."""
        return self.settings.store

    def connect(self) -> Connection:
        """A :class:`Connection` reusing one SMTP connection for several sends."""
        app = self._app()
        return Connection(app, _settings(app))

    def send(
        self,
        message: object,
        *,
        envelope_from: str | None = None,
        recipients: Sequence[str] | None = None,
        fail_silently: bool = False,
    ) -> DeliveryReport:
        """Send one message on its own connection; see :meth:`Connection.send`."""
        with self.connect() as connection:
            return connection.send(
                message,
                envelope_from=envelope_from,
                recipients=recipients,
                fail_silently=fail_silently,
            )

    @contextmanager
    def record_messages(self) -> Iterator[list[object]]:
        """Collect every message this app dispatches in the block (as Flask-Mail's
        ``record_messages()``; with ``MAIL_SUPPRESS_SEND`` nothing reaches a server)::

            with mail.record_messages() as outbox:
                client.post("/order")
            assert outbox[0]["Subject"] == "Your order"
        """
        outbox: list[object] = []

        def record(sender: Flask, *, message: object, report: DeliveryReport) -> None:
            outbox.append(message)

        if self.app is None and not has_app_context():
            # The factory pattern (init_app) in a test with no app context: every app's
            # dispatches are this block's, as in Flask-Mail.
            with message_dispatched.connected_to(record):
                yield outbox
            return
        with message_dispatched.connected_to(record, sender=self._app()):
            yield outbox


# --- Flask-Mailman ----------------------------------------------------------------------


class EmailBackend:
    """A Flask-Mailman backend: ``MAIL_BACKEND = "mailpolicy.flask.EmailBackend"``.

    Flask-Mailman builds it per ``get_connection()`` with ``mailman=``,
    ``fail_silently=`` and optional overrides (``host``, ``port``, ``username``,
    ``password``, ``use_tls``, ``use_ssl``, ``timeout``); everything else comes from the
    app's config as for :class:`MailPolicy` (validated here if ``MailPolicy`` did not
    already). ``send_messages()`` returns how many messages were accepted for delivery
    (a recipient delivered, or saved in ``MAILPOLICY_STORE``) and sets
    ``message.mailpolicy_report`` on each; after trying them all it raises
    :class:`DeliveryIncomplete` for those left with a ``deferred`` or ``held`` recipient
    that no store keeps, unless ``fail_silently``. Thread-safe, as Django's backend.
    """

    def __init__(
        self,
        mailman: object = None,
        fail_silently: bool = False,
        *,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        **kwargs: object,
    ) -> None:
        if kwargs:
            raise ConfigurationError(
                f"mailpolicy.flask.EmailBackend: unknown option(s) {sorted(kwargs)!r}"
            )
        self.mailman = mailman
        self.fail_silently = fail_silently
        app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        self.app = app
        settings = app.extensions.get(EXTENSION)
        if settings is None:
            settings = MailPolicy().init_app(app)
        overrides = {
            key: value
            for key, value in (
                ("MAIL_SERVER", host),
                ("MAIL_PORT", port),
                ("MAIL_USERNAME", username),
                ("MAIL_PASSWORD", password),
                ("MAIL_USE_TLS", use_tls),
                ("MAIL_USE_SSL", use_ssl),
                ("MAIL_TIMEOUT", timeout),
                ("MAIL_SSL_KEYFILE", ssl_keyfile),
                ("MAIL_SSL_CERTFILE", ssl_certfile),
            )
            if value is not None
        }
        if overrides:
            settings = read_settings(
                {**app.config, **overrides},
                testing=app.testing,
                app_name=app.name,
                policy=settings.policy,
                store=settings.store,
            )
        self.settings: MailSettings = settings
        self.connection: Connection | None = None
        self._lock = threading.RLock()

    def open(self) -> bool:
        """Start reusing one connection (opened on first need). True when this call
        started it, False when it was already started."""
        if self.connection is not None:
            return False
        self.connection = Connection(self.app, self.settings)
        return True

    def close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send_messages(self, email_messages: Iterable[object]) -> int:
        if not email_messages:
            return 0
        sent = 0
        incomplete: list[tuple[object, DeliveryReport]] = []
        with self._lock:
            created = self.open()
            connection = cast(Connection, self.connection)
            try:
                for message in email_messages:
                    mailman = cast(_MailmanMessage, message)
                    if not mailman.recipients():
                        continue
                    report = connection.send_mailman(mailman)
                    message.mailpolicy_report = report  # type: ignore[attr-defined]
                    if _accepted(report):
                        sent += 1
                    if _unsaved(report):
                        incomplete.append((message, report))
            finally:
                if created:
                    self.close()
        if incomplete and not self.fail_silently:
            raise DeliveryIncomplete(
                incomplete,
                sent=sent,
                recipient_style=self.settings.recipient_style,
                store_setting=STORE_SETTING,
            )
        return sent


# --- the Flask CLI: flask mailpolicy ... -----------------------------------------------


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return _appworker.duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


#: ``flask mailpolicy ...``: added to ``app.cli`` by :meth:`MailPolicy.init_app`.
cli = AppGroup("mailpolicy", help="mailpolicy's outbox (MAILPOLICY_STORE): worker, status.")


def _cli_settings() -> MailSettings:
    app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    try:
        return _settings(app)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


def _cli_store(settings: MailSettings, command: str) -> Store:
    if settings.store is None:
        raise click.ClickException(
            f"mailpolicy {command}: no store configured: set MAILPOLICY_STORE (e.g. "
            "'sqlite:////var/lib/app/mail.sqlite3'), the outbox this command works on"
        )
    return settings.store


@cli.command("worker")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option(
    "--lease",
    default="15m",
    callback=_duration,
    show_default=True,
    help="How long a claimed message stays this worker's.",
)
@click.option(
    "--poll",
    default="5s",
    callback=_duration,
    show_default=True,
    help="Idle wait between scans of the outbox.",
)
def _worker_command(once: bool, lease: float, poll: float) -> None:
    """Deliver due messages from the outbox through MAIL_SERVER and keep going (SIGTERM
    or SIGINT: finish the message in hand, release the rest, exit 0)."""
    settings = _cli_settings()
    store = _cli_store(settings, "worker")
    if settings.suppress:
        raise click.ClickException(
            "mailpolicy worker: MAIL_SUPPRESS_SEND is on (it defaults to TESTING): this "
            "app records mail instead of sending it, so the worker would not either"
        )
    worker = _appworker.AppWorker(
        store,
        settings.host,
        settings.port,
        policies=[settings.policy],
        security=settings.security,
        username=settings.username,
        password=settings.password,
        allow_insecure_auth=settings.allow_insecure_auth,
        lease=lease,
        sender_options={
            "ssl_context": settings.ssl_context,
            "timeout": settings.timeout,
            "local_hostname": settings.local_hostname,
            "recipient_style": settings.recipient_style,
        },
    )
    stats = _appworker.run(worker, once=once, poll=poll)
    click.echo(_appworker.summary(worker, stats))


@cli.command("outbox-status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def _outbox_status_command(as_json: bool) -> None:
    """Recipients in the outbox by state, what is due, the suppression list's size."""
    counts = _cli_store(_cli_settings(), "outbox-status").counts(now=time.time())
    if as_json:
        click.echo(json.dumps(counts))
    else:
        for key, value in counts.items():
            click.echo(f"{key:<16} {value}")
