"""The exception family of mailpolicy.

::

    MailPolicyError                      every error this library raises on purpose
    ├── ConfigurationError (ValueError)  a Sender or integration set up wrongly (names the
    │                                    option: e.g. AUTH over plaintext without
    │                                    allow_insecure_auth)
    ├── InvalidInputError (TypeError)    a value of the wrong type handed to a public function
    ├── MessageError (ValueError)        a message that cannot be sent as given (no
    │                                    recipients, header injection, unserialisable)
    ├── PolicyError (ValueError)         a policy or rule file is unreadable or invalid
    ├── DsnError (ValueError)            a bounce message that is not an RFC 3464 DSN
    │                                    (defined in _dsn)
    └── StoreError (RuntimeError)        the outbox store cannot be opened, read or
                                         written (defined in _store)

Each names what was wrong and where (file, dotted key path).
"""

from __future__ import annotations


class MailPolicyError(Exception):
    """Base class of every error raised on purpose by mailpolicy."""


class ConfigurationError(MailPolicyError, ValueError):
    """A Sender or integration was set up wrongly; the message names the option."""


class InvalidInputError(MailPolicyError, TypeError):
    """A public function was handed a value of a type it does not take."""


class MessageError(MailPolicyError, ValueError):
    """A message cannot be sent as given: no sender or recipients, CR/LF/NUL in a header
    value, or it cannot be serialised. A programming error, not a delivery outcome."""


class PolicyError(MailPolicyError, ValueError):
    """A policy or rule file is unreadable or invalid.

    ``source`` is the file (or ``"<builtin>"``), ``path`` the dotted key path inside it
    (``rules[2].when.enhanced``), empty when the error concerns the whole file.
    """

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {problem}")
