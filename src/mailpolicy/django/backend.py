"""``EMAIL_BACKEND = "mailpolicy.django.EmailBackend"``: Django's SMTP backend, with
mailpolicy's per-recipient delivery underneath.

It is a subclass of ``django.core.mail.backends.smtp.EmailBackend`` and keeps its
contract (settings, constructor keywords, ``MAILERS`` options on Django 6.1, ``open()``,
``close()``, ``connection``, ``fail_silently``, the errors Django's own tests pin), and
adds, per message: pre-validation, classification of every reply, retries within the
policy's in-request budget, one :class:`~mailpolicy.RecipientOutcome` per recipient in
``message.mailpolicy_report``, a signal and a ``mail.delivery`` event per recipient.
With a store (``MAILPOLICY["STORE"]``), recipients still deferred or held are saved for
the worker (``python manage.py mailpolicy_worker``) before ``send_messages()`` returns,
and dead addresses are suppressed before any SMTP traffic. ``open()`` connects the way
Django does (once, no retries) and hands the smtplib object to a
:class:`~mailpolicy.Sender`; the retries happen inside ``send_messages()``.
"""

from __future__ import annotations

import email.header
import email.headerregistry
import email.policy
import email.utils
import smtplib
import ssl
from collections.abc import Iterable
from contextlib import suppress
from email.message import Message
from typing import TYPE_CHECKING, Any, Final

import django
import idna
from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends import smtp
from django.core.mail.message import sanitize_address
from django.core.mail.utils import DNS_NAME
from django.utils.encoding import punycode
from django.utils.functional import cached_property

from .. import _events as events
from .._address import a_label
from .._classify import classify_error
from .._errors import ConfigurationError
from .._message import split_addresses
from .._outcome import DeliveryReport
from .._policy import Policy
from .._sender import Sender
from .._session import _AUTH_IN_CLEAR, _AUTH_OVER_TLS, Security, bounded_smtp_class
from .._store import Store
from . import signals
from ._settings import Options, read_options
from .errors import STORE_SETTING, DeliveryIncomplete, ImproperlyConfiguredError

#: Django 6.1 serialises with ``message(policy=email.policy.SMTP)`` and prepares
#: envelope addresses with ``prep_address()``; 5.2 uses ``sanitize_address()``.
_MODERN: Final = django.VERSION >= (6, 1)


def _addr_spec(address: object) -> str:
    """The addr-spec of an entry that passed ``sanitize_address()`` (one mailbox, a
    header-style string or a (name, address) tuple), as the user wrote it; anything
    else (an ``email.headerregistry.Address``, a lazy string) as Django reads it, by
    ``str()``."""
    if isinstance(address, tuple):
        return str(address[1])
    address = str(address)
    found = split_addresses(address)
    return found[0] if len(found) == 1 else address


#: The address headers Django writes from an EmailMessage's fields (or their
#: ``extra_headers`` overrides, looked up by these exact names, as Django does).
_FIELD_HEADERS: Final = (("To", "to"), ("Cc", "cc"), ("Reply-To", "reply_to"))
#: Other address headers an application may give in ``extra_headers``, which Django
#: (5.2's ``ADDRESS_HEADERS``, 6.1's address header classes) converts the same way.
_OTHER_ADDRESS_HEADERS: Final = frozenset(
    {"sender", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc"}
)


def _as_header_text(value: object) -> str:
    """A header value as Django's message() gives it: a list joined with ", ", anything
    else (a str, a lazy string, an ``email.headerregistry.Address``) as ``str()``."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _address_header_values(email_message: EmailMessage) -> list[tuple[str, str]]:
    """Each address header Django wrote, with the value it wrote it from."""
    extra = email_message.extra_headers
    values = [("From", _as_header_text(extra.get("From", email_message.from_email)))]
    for header, attribute in _FIELD_HEADERS:
        given = extra[header] if header in extra else getattr(email_message, attribute)
        values.append((header, _as_header_text(given)))
    values.extend(
        (name, _as_header_text(value))
        for name, value in extra.items()
        if isinstance(name, str) and name.lower() in _OTHER_ADDRESS_HEADERS
    )
    return values


def _idna2008_address_headers(email_message: EmailMessage, built: Message) -> None:
    """Django (5.2 and 6.1) writes a Unicode domain in the address headers with IDNA 2003,
    as in the envelope (``To: ann@fass.example`` for ``ann@faß.example``: a reply would
    go to another domain). A header holding such an address is written again from the
    message's own value, as Django writes it but with each Unicode domain as IDNA 2008
    A-labels (the Sender's envelope form): on 6.1 with the email package's parse Django
    itself used, on 5.2 with ``getaddresses`` and ``sanitize_address`` as Django's
    SafeMIME headers do; in the header's place. Headers without a Unicode domain are
    left exactly as Django wrote them; one that cannot be written so keeps Django's
    (anything going wrong here never fails a send)."""
    encoding = email_message.encoding or settings.DEFAULT_CHARSET
    try:
        values = _address_header_values(email_message)
    except Exception:  # a value whose str() raises: Django's headers stand
        return
    for header, value in values:
        if not value or value.isascii() or header not in built:
            continue
        with suppress(Exception):  # anything the email package refuses: keep Django's
            if _MODERN:
                _rewrite_modern(built, header, value)
                continue
            rendered = _rendered_with_a_labels(value, encoding)
            if rendered is not None:
                # Message's own replace_header: in place, and not through Django's
                # SafeMIME __setitem__, which would convert it again.
                Message.replace_header(built, header, rendered)


def _wire_domain(domain: str) -> str:
    """A domain as IDNA 2008 A-labels; Django's IDNA 2003 form (``punycode``) for one
    IDNA 2008 refuses (Django has already written it so: its message was built)."""
    try:
        return a_label(domain)
    except idna.IDNAError:
        return punycode(domain)


def _rewrite_modern(built: Message, header: str, value: str) -> None:
    """Django 6.1's ``_idna_encode_address_header_domains`` with IDNA 2008: the value
    parsed as Django's ``msg[header] = value`` parsed it (the SMTP policy's header
    factory), and replaced, like Django, by its addresses with the domains converted
    (display names, order and position as Django leaves them)."""
    parsed = email.policy.SMTP.header_factory(header, value)
    addresses = getattr(parsed, "addresses", ())
    if not addresses or all(a.domain.isascii() for a in addresses):
        return
    converted = [
        email.headerregistry.Address(
            display_name=a.display_name, username=a.username, domain=_wire_domain(a.domain)
        )
        for a in addresses
    ]
    built.replace_header(header, converted)  # type: ignore[arg-type]  # the policy parses it


def _rendered_with_a_labels(value: str, encoding: str) -> str | None:
    """Django 5.2: an address header's value as Django renders it (``getaddresses``,
    then ``sanitize_address`` per address, with the message's charset), each Unicode
    domain given to it as IDNA 2008 A-labels; None when no address has one that
    converts, or when an entry cannot be read or rendered (Django's own header is then
    kept whole: better its IDNA 2003 than no mail)."""
    rendered, converted = [], False
    for name, addr in email.utils.getaddresses([value]):
        if not addr:
            return None  # an entry getaddresses could not read (Django 5.2 raises on one)
        local, at, domain = addr.rpartition("@")
        wire = addr
        if at and local and not domain.isascii():
            with suppress(idna.IDNAError):
                wire, converted = f"{local}@{a_label(domain)}", True
        try:
            rendered.append(sanitize_address((name, wire), encoding))
        except Exception:  # a domain not even IDNA 2003 writes, a name or address the
            return None  # header classes refuse (any error): keep Django's header
    return ", ".join(rendered) if converted else None


def _with_crlf_as_bytes(message: Message) -> Message:
    """Django 5.2's ``SafeMIME*`` messages take ``as_bytes(unixfrom, linesep)``, not the
    stdlib's ``policy=`` keyword the Sender serialises with: give this instance the
    stdlib's signature, producing exactly the bytes Django's SMTP backend sends
    (``as_bytes(linesep="\\r\\n")``)."""
    django_as_bytes = message.as_bytes

    def as_bytes(unixfrom: bool = False, policy: object = None) -> bytes:
        return django_as_bytes(unixfrom, linesep="\r\n")  # type: ignore[call-arg]

    message.as_bytes = as_bytes  # type: ignore[method-assign]
    return message


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP ``EmailBackend`` with mailpolicy's delivery underneath.

    Every keyword of Django's SMTP backend (and every ``EMAIL_*`` setting it reads) works
    as there. mailpolicy's own options come from ``settings.MAILPOLICY`` (``POLICY``,
    ``POLICIES``, ``STORE``, ``ALLOW_INSECURE_AUTH``, ``RECIPIENT_STYLE``) or, winning
    over it, from the keywords ``policy``, ``policies``, ``store``,
    ``allow_insecure_auth`` and ``recipient_style`` (``MAILERS[...]["OPTIONS"]`` on
    Django 6.1). ``timeout=None`` (the default) means the policy's timeouts apply.
    """

    if TYPE_CHECKING:  # Django's attributes that django-stubs does not declare
        _partial_connection: smtplib.SMTP | None

        def _close_connection(self, connection: smtplib.SMTP) -> None: ...

    def __init__(  # noqa: PLR0917 - Django's positional order, kept for drop-in use
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        policy: Policy | str | None = None,
        policies: dict[str, Policy | str] | None = None,
        store: str | Store | None = None,
        allow_insecure_auth: bool | None = None,
        recipient_style: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            host=host,
            port=port,
            username=username,
            password=password,
            use_tls=use_tls,
            fail_silently=fail_silently,
            use_ssl=use_ssl,
            timeout=timeout,
            ssl_keyfile=ssl_keyfile,
            ssl_certfile=ssl_certfile,
            **kwargs,
        )
        self.options: Options = read_options(
            getattr(self, "alias", None),
            policy=policy,
            policies=policies,
            store=store,
            allow_insecure_auth=allow_insecure_auth,
            recipient_style=recipient_style,
        )
        if isinstance(self.port, str) and self.port.strip().isdigit():
            # EMAIL_PORT = os.environ["EMAIL_PORT"]: Django's own backend takes it.
            self.port = int(self.port)
        self._open_error: BaseException | None = None
        # open()'s retryable failure, to be the first attempt of the next message's send.
        self._open_failure: BaseException | None = None
        self._check_connection_settings()

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        """Django's class, but reading replies as the Sender's own connections do
        (bounded in lines, bytes and time): the greeting, EHLO, STARTTLS and AUTH are
        read here, before the connection is the Sender's, and a server could otherwise
        flood them or feed them a line at a time (eleventh review: 2.25 GB in 12 s; 50 s
        with timeout=2). A patched smtplib class (a test's mock) is used as given."""
        given = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
        bounded: type[smtplib.SMTP] = bounded_smtp_class(given)
        return bounded

    def _check_connection_settings(self) -> None:
        """Let the Sender check host, port and timeout now, not at the first send. (The
        AUTH-over-plaintext rule is checked when the connection opens: see open().)"""
        try:
            Sender(
                self.host,
                self.port,
                policy=self.options.policy,
                security=self.security,
                timeout=self.timeout,
                allow_insecure_auth=True,
            )
        except ConfigurationError as exc:
            raise ImproperlyConfiguredError(
                f"EMAIL_HOST/EMAIL_PORT/EMAIL_TIMEOUT (or the backend's host, port, timeout): {exc}"
            ) from exc
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise ImproperlyConfiguredError(
                f"EMAIL_PORT (or the backend's port) must be an int, not {self.port!r}"
            )

    # --- connection ----------------------------------------------------------------------

    @property
    def security(self) -> Security:
        """The Sender's ``security`` for ``use_ssl``/``use_tls``: implicit TLS, STARTTLS
        (both verified), or plaintext (Django's default, for local relays)."""
        if self.use_ssl:
            return "ssl"
        return "starttls" if self.use_tls else "none"

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """Verifying TLS (certificate and host name). With ``ssl_certfile``/``ssl_keyfile``
        the client certificate is added to a context that still trusts the system's CA
        roots (Django's own context would trust none)."""
        if self.ssl_certfile or self.ssl_keyfile:
            context = ssl.SSLContext(protocol=ssl.PROTOCOL_TLS_CLIENT)
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)  # type: ignore[arg-type]
            return context
        return ssl.create_default_context()

    def _attempt_timeout(self) -> float:
        return float(
            self.timeout if self.timeout is not None else self.options.policy.inline.attempt_timeout
        )

    def _refused_plaintext_auth(self) -> bool:
        return bool(
            self.username
            and self.password
            and self.security == "none"
            and not self.options.allow_insecure_auth
        )

    def open(self) -> bool | None:
        """Connect as Django does (once, no retries): returns True when it connected,
        False when a connection was open already, None when it failed silently.

        The policy's ``attempt_timeout`` applies when ``timeout`` is None. With a
        username over a plaintext connection: a server offering no AUTH gets smtplib's
        own ``SMTPNotSupportedError``; one offering AUTH is refused with
        :class:`ImproperlyConfiguredError` naming ``MAILPOLICY["ALLOW_INSECURE_AUTH"]``,
        before any credentials are sent (never silenced by ``fail_silently``).
        """
        if self.connection:
            return False
        partial = self._partial_connection
        if partial is not None:
            self._close_connection(partial)
            self._partial_connection = None
        self._open_error = None
        params: dict[str, Any] = {
            "local_hostname": DNS_NAME.get_fqdn(),
            "timeout": self._attempt_timeout(),
        }
        if self.use_ssl:
            params["context"] = self.ssl_context
        try:
            connection = self.connection_class(self.host, self.port, **params)
            self._partial_connection = connection
            if not self.use_ssl and self.use_tls:
                connection.starttls(context=self.ssl_context)
            connection.ehlo_or_helo_if_needed()
            if self.username and self.password:
                self._check_auth_allowed(connection)
                failure = self._login(connection)
                if failure is not None:
                    raise failure
            self.connection = connection
            self._partial_connection = None
        except OSError as exc:
            self._open_error = exc
            if not self.fail_silently:
                raise
            return None
        return True

    def _login(self, connection: smtplib.SMTP) -> Exception | None:
        """``connection.login()`` as Django calls it, with what the Sender's AUTH does
        (security review): one mechanism, not each the server offers (smtplib's login
        tries the next after a 535: two or three failed AUTHs per wrong password); the
        credentials not kept on the connection afterwards; and a failure returned as a
        fresh copy, to be raised with no traceback through smtplib's login frames, whose
        locals hold the password and its base64 form (error trackers record them)."""
        connection.ehlo_or_helo_if_needed()
        advertised = connection.esmtp_features.get("auth", "").upper().split()
        order = _AUTH_OVER_TLS if isinstance(connection.sock, ssl.SSLSocket) else _AUTH_IN_CLEAR
        chosen = next((m for m in order if m in advertised), None)
        if chosen is not None:  # login() tries what the server advertised: this one
            connection.esmtp_features["auth"] = chosen
        failure: Exception | None = None
        try:
            connection.login(self.username or "", self.password or "")
        except UnicodeEncodeError:  # its text quotes a character of the password
            # The same type as Django's backend raises (not an OSError: fail_silently
            # does not hide it), without the character (eleventh review).
            failure = UnicodeEncodeError(
                "ascii",
                "\ufffd",
                0,
                1,
                "the SMTP username or password has non-ASCII characters, which smtplib cannot send",
            )
        except Exception as exc:  # every kind: login()'s frames hold the password
            # SMTPException, or what a malformed challenge makes smtplib raise
            # (binascii.Error from "334 a": ninth review): the same type, as Django's
            # backend would raise it, without the traceback.
            try:
                failure = type(exc)(*exc.args)
            except Exception:  # an exception class with another signature
                failure = smtplib.SMTPException(str(exc))
        finally:
            connection.user = connection.password = None  # type: ignore[assignment]
        return failure

    def _check_auth_allowed(self, connection: smtplib.SMTP) -> None:
        offered = connection.has_extn("auth")
        tls = isinstance(connection.sock, ssl.SSLSocket)
        if offered and not tls and not self.options.allow_insecure_auth:
            self._partial_connection = None
            self._close_connection(connection)
            raise ImproperlyConfiguredError(
                f"{self.host}:{self.port} offers AUTH over a plaintext connection: "
                "refusing to send the password in clear. Set EMAIL_USE_TLS or "
                "EMAIL_USE_SSL, or MAILPOLICY['ALLOW_INSECURE_AUTH'] = True for a "
                "trusted local relay."
            )
        # Not offered: login() raises smtplib's own "SMTP AUTH extension not supported
        # by server." as with Django's backend.

    # --- sending -----------------------------------------------------------------------

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        """Send the messages; return how many were accepted for delivery (at least one
        recipient delivered, or saved in the store for the worker). Each message gets
        ``mailpolicy_report``.

        Raises :class:`DeliveryIncomplete` (an ``smtplib.SMTPException``) after the batch
        when a message has a recipient left ``deferred`` or ``held`` that no store keeps,
        unless ``fail_silently``. With a store nothing is raised for them; a deferral the
        store cannot save raises :class:`~mailpolicy.StoreError` at once, even with
        ``fail_silently`` (nothing is lost silently). Invalid addresses raise
        ``ValueError`` as with Django.
        """
        if not email_messages:
            return 0
        with self._lock:
            self._open_failure = None
            try:
                new_conn_created = self.open()
            except OSError as exc:
                if not self._connect_retryable(exc):
                    raise
                # The Sender connects again, with retries; this failure is their first
                # attempt (counted, logged, judged), not an extra one before them.
                self._open_failure = exc
                new_conn_created = True
            else:
                if new_conn_created is None:
                    if not self._connect_retryable(self._open_error):
                        return 0  # failed silently, as Django does
                    self._open_failure = self._open_error
                    new_conn_created = True
                elif not self.connection:
                    return 0
            num_sent = 0
            incomplete: list[tuple[EmailMessage, DeliveryReport]] = []
            try:
                for message in email_messages:
                    report = self._send_one(message)
                    if report is None:
                        continue
                    if report.delivered or any(o.persisted for o in report.pending):
                        num_sent += 1
                    if any(not o.persisted for o in report.pending):
                        incomplete.append((message, report))
            finally:
                if new_conn_created:
                    self.close()
        if incomplete and not self.fail_silently:
            raise DeliveryIncomplete(
                incomplete,
                sent=num_sent,
                recipient_style=self.options.recipient_style,
                store_setting=STORE_SETTING,
            )
        return num_sent

    def _connect_retryable(self, exc: BaseException | None) -> bool:
        """Whether a failed ``open()`` inside ``send_messages()`` is left to the Sender's
        retries: a transient failure (refused, 421, timeout, drop), unless the settings
        forbid any connection (AUTH over plaintext refused)."""
        if exc is None or self._refused_plaintext_auth():
            return False
        # Judged with the policy's own classification rules, as the Sender judges it.
        rules = self.options.policy.classifier
        return classify_error(exc, stage="connect", rules=rules).kind == "transient"

    def _send_one(self, email_message: EmailMessage) -> DeliveryReport | None:
        if not email_message.recipients():
            return None
        envelope_from, recipients = self._envelope(email_message)
        policy = self.options.policy
        chosen = getattr(email_message, "mailpolicy_policy", None)
        if chosen is not None:
            policy = self.options.policy_named(chosen)
        message = self._serialisable(email_message)
        sender = self._sender(policy)
        if self._open_failure is not None:
            sender._session.failed_open(self._open_failure)
            self._open_failure = None
        try:
            report = sender.send(message, envelope_from=envelope_from, recipients=recipients)
            # A message that never connected (every recipient invalid or suppressed)
            # leaves open()'s failure to the next one, whose first attempt it is.
            self._open_failure = sender._session.unused_failed_open()
        finally:
            # The Sender reconnects after a 421 or a drop: keep Django's attribute on the
            # connection actually in use (None when the Sender had to close it).
            self.connection = sender.connection
        email_message.mailpolicy_report = report  # type: ignore[attr-defined]
        self._signal(email_message, report)
        return report

    def _envelope(self, email_message: EmailMessage) -> tuple[str, list[str]]:
        """Django's own envelope checks: ``ValueError("Invalid address ...")`` for
        malformed or injection-like addresses and for an entry naming several addresses,
        and on 6.1 for a non-ASCII local part, as Django's SMTP backend raises.

        Their result is not what goes on the wire: Django converts a Unicode domain with
        IDNA 2003 (``punycode()``), which maps ``faß.example`` to ``fass.example``,
        another domain (UTS 46 deviations), and 5.2 writes a non-ASCII local part as an
        encoded-word, an address nobody has. The addr-specs go to the Sender as written;
        its pre-validation puts IDNA 2008 A-labels on the wire and sends a Unicode local
        part only with SMTPUTF8 (as the Flask-Mailman backend does)."""
        prep = getattr(self, "prep_address", None)
        if prep is not None:  # Django >= 6.1

            def prepare(address: str) -> str:
                prep(address)  # Django's check, with its ValueError
                addr_spec: str = prep(address, force_ascii=False)
                return addr_spec

        else:
            encoding = email_message.encoding or settings.DEFAULT_CHARSET

            def prepare(address: str) -> str:
                sanitize_address(address, encoding)  # Django's check, with its ValueError
                return _addr_spec(address)

        return prepare(email_message.from_email), [prepare(a) for a in email_message.recipients()]

    def _serialisable(self, email_message: EmailMessage) -> Message:
        if _MODERN:
            built: Message = email_message.message(policy=email.policy.SMTP)  # type: ignore[call-arg, unused-ignore]  # 6.1 only; stubs are 5.2's
            _idna2008_address_headers(email_message, built)
            return built
        built = email_message.message()
        _idna2008_address_headers(email_message, built)
        return _with_crlf_as_bytes(built)

    def _sender(self, policy: Policy) -> Sender:
        if self._refused_plaintext_auth():
            # Only reachable with a connection set by the caller: open() refuses first.
            raise ImproperlyConfiguredError(
                "a username is set without EMAIL_USE_TLS/EMAIL_USE_SSL: refusing AUTH over "
                "plaintext; set MAILPOLICY['ALLOW_INSECURE_AUTH'] = True for a trusted "
                "local relay"
            )
        login = bool(self.username and self.password)
        security = self.security
        return Sender(
            self.host,
            self.port,
            policy=policy,
            security=security,
            username=self.username if login else None,
            password=self.password if login else None,
            ssl_context=self.ssl_context if security != "none" else None,
            timeout=self.timeout,
            local_hostname=DNS_NAME.get_fqdn(),
            allow_insecure_auth=self.options.allow_insecure_auth,
            connection=self.connection,
            recipient_style=self.options.recipient_style,
            store=self.options.store,
        )

    def _signal(self, email_message: EmailMessage, report: DeliveryReport) -> None:
        for outcome in report.outcomes:
            signal = signals.BY_STATE.get(outcome.state)
            if signal is None:  # pragma: no cover - every state has a signal
                continue
            results = signal.send_robust(
                sender=EmailBackend,
                message=email_message,
                outcome=outcome,
                report=report,
                backend=self,
            )
            for receiver, result in results:
                if isinstance(result, Exception):
                    events.signal_error(
                        signal=outcome.state,
                        receiver=getattr(receiver, "__qualname__", repr(receiver)),
                        message_id=report.message_id,
                        error=f"{type(result).__name__}: {result}",
                    )


__all__ = ["EmailBackend"]
