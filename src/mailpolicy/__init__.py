"""mailpolicy: dependable outbound e-mail for Python applications.

Every SMTP reply is classified into a :class:`Verdict` (success, transient or permanent,
with a reason from a fixed taxonomy and the default policy's decision to retry or to
suppress the address); a :class:`Policy` loaded from TOML decides retries and bounces;
a :class:`Sender` delivers messages with per-recipient outcomes. See the README.
"""

from ._address import ADDRESS_MODES, AddressMode, CheckedAddress, check_address
from ._classify import Verdict, classify, classify_error
from ._dsn import (
    DeliveryStatusReport,
    DsnError,
    DsnRecipient,
    DsnVerdict,
    intake_dsn,
    judge_dsn,
    parse_dsn,
)
from ._errors import (
    ConfigurationError,
    DeliveryIncomplete,
    InvalidInputError,
    MailPolicyError,
    MessageError,
    PolicyError,
)
from ._outcome import STATES, DeliveryReport, RecipientOutcome, State
from ._policy import ACTIONS, Action, Decision, Policy
from ._policy_load import load_policy
from ._sender import Sender
from ._session import StageError
from ._store import Store, StoreBusyError, StoreError, open_store
from ._vocab import KINDS, REASONS, SCOPES, STAGES, Kind, Reason, Scope, Stage
from ._worker import Worker, WorkerStats

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
    "DeliveryIncomplete",
    "DeliveryReport",
    "DeliveryStatusReport",
    "DsnError",
    "DsnRecipient",
    "DsnVerdict",
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
    "StageError",
    "State",
    "Store",
    "StoreBusyError",
    "StoreError",
    "Verdict",
    "Worker",
    "WorkerStats",
    "__version__",
    "check_address",
    "classify",
    "classify_error",
    "intake_dsn",
    "judge_dsn",
    "load_policy",
    "open_store",
    "parse_dsn",
]
