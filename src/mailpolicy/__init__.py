"""mailpolicy: dependable outbound e-mail for Python applications.

Every SMTP reply is classified into a :class:`Verdict` (success, transient or permanent,
with a reason from a fixed taxonomy and the default policy's decision to retry or to
suppress the address). See DESIGN.md and the README.
"""

from ._classify import Verdict, classify, classify_error
from ._errors import InvalidInputError, MailPolicyError, MessageError, PolicyError
from ._vocab import KINDS, REASONS, SCOPES, STAGES, Kind, Reason, Scope, Stage

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "REASONS",
    "SCOPES",
    "STAGES",
    "InvalidInputError",
    "Kind",
    "MailPolicyError",
    "MessageError",
    "PolicyError",
    "Reason",
    "Scope",
    "Stage",
    "Verdict",
    "__version__",
    "classify",
    "classify_error",
]
