"""mailpolicy: dependable outbound e-mail for Python applications.

Every SMTP reply is classified into a :class:`Verdict` (success, transient or permanent,
with a reason from a fixed taxonomy and the default policy's decision to retry or to
suppress the address); a :class:`Policy` loaded from TOML decides retries and bounces;
a :class:`Sender` delivers messages with per-recipient outcomes. See the README.
"""

from ._address import ADDRESS_MODES, AddressMode, CheckedAddress, check_address
from ._classify import Verdict, classify, classify_error
from ._errors import (
    ConfigurationError,
    InvalidInputError,
    MailPolicyError,
    MessageError,
    PolicyError,
)
from ._outcome import STATES, DeliveryReport, RecipientOutcome, State
from ._policy import ACTIONS, Action, Decision, Policy
from ._policy_load import load_policy
from ._sender import Sender
from ._vocab import KINDS, REASONS, SCOPES, STAGES, Kind, Reason, Scope, Stage

__version__ = "0.1.0"

__all__ = [
    "ACTIONS",
    "ADDRESS_MODES",
    "KINDS",
    "REASONS",
    "SCOPES",
    "STAGES",
    "STATES",
    "Action",
    "AddressMode",
    "CheckedAddress",
    "ConfigurationError",
    "Decision",
    "DeliveryReport",
    "InvalidInputError",
    "Kind",
    "MailPolicyError",
    "MessageError",
    "Policy",
    "PolicyError",
    "Reason",
    "RecipientOutcome",
    "Scope",
    "Sender",
    "Stage",
    "State",
    "Verdict",
    "__version__",
    "check_address",
    "classify",
    "classify_error",
    "load_policy",
]
