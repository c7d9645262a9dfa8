"""``settings.MAILPOLICY`` and the backend's own options, read and checked once, when
the backend is built: an unknown key, a policy that does not load or a store that cannot
be opened fail there with :class:`ImproperlyConfiguredError`, never at the first send.

A store given as a URL is opened once per process and URL and shared by every backend
(Django builds a backend per ``send_mail()``, and Django 6.1 per mailer lookup): see
:func:`shared_store`. A store object is used as given; its owner closes it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, cast

from django.conf import settings

from .._errors import MailPolicyError
from .._events import RECIPIENT_STYLES, RecipientStyle
from .._policy import Policy
from .._policy_load import load_policy
from .._store import Store, StoreError, open_store
from .errors import ImproperlyConfiguredError

#: ``MAILPOLICY`` key → the backend keyword argument (``MAILERS`` option) it defaults.
KEYS: Final[dict[str, str]] = {
    "POLICY": "policy",
    "POLICIES": "policies",
    "STORE": "store",
    "ALLOW_INSECURE_AUTH": "allow_insecure_auth",
    "RECIPIENT_STYLE": "recipient_style",
}


@dataclass(frozen=True, slots=True)
class Options:
    """The backend's mailpolicy options, resolved."""

    policy: Policy
    policies: Mapping[str, Policy] = field(default_factory=lambda: MappingProxyType({}))
    allow_insecure_auth: bool = False
    recipient_style: RecipientStyle = "mask"
    store: Store | None = None

    def policy_named(self, name: object) -> Policy:
        """The policy a message asks for with ``message.mailpolicy_policy``: a
        :class:`~mailpolicy.Policy`, a name from ``MAILPOLICY["POLICIES"]``, a shipped
        policy's name or a path. Raises :class:`~mailpolicy.ConfigurationError`."""
        if isinstance(name, Policy):
            return name
        if isinstance(name, str) and name in self.policies:
            return self.policies[name]
        if not isinstance(name, str | os.PathLike):
            raise ImproperlyConfiguredError(
                "message.mailpolicy_policy must be a policy name, a path or a Policy, "
                f"not {type(name).__name__}"
            )
        try:
            return load_policy(cast("str | os.PathLike[str]", name))
        except MailPolicyError as exc:
            known = ", ".join(repr(n) for n in self.policies) or "none"
            raise ImproperlyConfiguredError(
                f"message.mailpolicy_policy = {name!r}: not a name from "
                f"MAILPOLICY['POLICIES'] ({known}), a shipped policy or a policy file: {exc}"
            ) from exc


_STORES: dict[tuple[int, str], Store] = {}
_STORES_LOCK = threading.Lock()


def shared_store(url: str) -> Store:
    """The store for ``url``, opened on first use and kept open for the life of the
    process (one per URL; SQLite store objects are safe to share between threads). A
    process forked after the store was opened opens its own (a SQLite connection must
    not cross a ``fork()``). Raises :class:`~mailpolicy.StoreError`."""
    key = (os.getpid(), url)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = open_store(url)
        return store


def close_stores() -> None:
    """Close every store :func:`shared_store` opened in this process and forget them (the
    next backend opens them again). For tests and orderly shutdown."""
    pid = os.getpid()
    with _STORES_LOCK:
        for key in [k for k in _STORES if k[0] == pid]:
            _STORES.pop(key).close()


def _store(value: object, where: str) -> Store | None:
    if value is None:
        return None
    if isinstance(value, Store):
        return value
    if not isinstance(value, str):
        raise ImproperlyConfiguredError(
            f"{where} must be a store URL such as 'sqlite:////var/lib/app/mail.sqlite3' or "
            f"a store object (mailpolicy.open_store(...)), not {type(value).__name__}"
        )
    try:
        return shared_store(value)
    except StoreError as exc:
        raise ImproperlyConfiguredError(f"{where} = {value!r}: {exc}") from exc


def _where(key: str, given: bool, alias: str | None) -> str:
    """How to name the setting a value came from, in an error message."""
    option = KEYS[key]
    if not given:
        return f"MAILPOLICY[{key!r}]"
    if alias is not None:
        return f"MAILERS[{alias!r}]['OPTIONS'][{option!r}]"
    return f"EmailBackend({option}=...)"


def _load(value: object, where: str) -> Policy:
    if isinstance(value, Policy):
        return value
    if not isinstance(value, str | os.PathLike):
        raise ImproperlyConfiguredError(
            f"{where} must be a shipped policy's name (default, transactional, bulk), "
            f"a path to a policy file or a mailpolicy.Policy, not {type(value).__name__}"
        )
    try:
        return load_policy(cast("str | os.PathLike[str]", value))
    except MailPolicyError as exc:
        raise ImproperlyConfiguredError(
            f"{where} = {value!r}: expected a shipped policy's name (default, "
            f"transactional, bulk) or a readable policy file: {exc}"
        ) from exc


def read_options(alias: str | None = None, **given: Any) -> Options:
    """Merge ``settings.MAILPOLICY`` with the backend's keyword arguments (which win;
    ``None`` means not given) and check every value."""
    raw = getattr(settings, "MAILPOLICY", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfiguredError(
            f"MAILPOLICY must be a dict with the keys {', '.join(KEYS)}, not {type(raw).__name__}"
        )
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise ImproperlyConfiguredError(
            f"MAILPOLICY has unknown keys {', '.join(repr(k) for k in unknown)}; "
            f"expected some of {', '.join(KEYS)}"
        )

    def value(key: str) -> tuple[object, str]:
        option = given.get(KEYS[key])
        if option is not None:
            return option, _where(key, True, alias)
        return raw.get(key), _where(key, False, alias)

    policy_value, where = value("POLICY")
    policy = _load("default" if policy_value is None else policy_value, where)

    policies_value, where = value("POLICIES")
    policies: dict[str, Policy] = {}
    if policies_value is not None:
        if not isinstance(policies_value, Mapping):
            raise ImproperlyConfiguredError(
                f"{where} must map names to policies (a shipped name, a path or a Policy), "
                f"not {type(policies_value).__name__}"
            )
        for name, entry in policies_value.items():
            if not isinstance(name, str) or not name:
                raise ImproperlyConfiguredError(
                    f"{where}: names must be non-empty strings, not {name!r}"
                )
            policies[name] = _load(entry, f"{where}[{name!r}]")

    allow, where = value("ALLOW_INSECURE_AUTH")
    if allow is None:
        allow = False
    if not isinstance(allow, bool):
        raise ImproperlyConfiguredError(f"{where} must be True or False, not {allow!r}")

    style, where = value("RECIPIENT_STYLE")
    if style is None:
        style = "mask"
    if style not in RECIPIENT_STYLES:
        raise ImproperlyConfiguredError(
            f"{where} must be one of {', '.join(map(repr, RECIPIENT_STYLES))}, not {style!r}"
        )
    store_value, where = value("STORE")  # last: every other setting checked first
    return Options(
        policy=policy,
        policies=MappingProxyType(policies),
        allow_insecure_auth=allow,
        recipient_style=style,
        store=_store(store_value, where),
    )
