"""Database tables: the account cache, per-call state, payments and their outbox.

Money is integer cents (BigInteger); every timestamp is stored as timezone-aware UTC. One
module per part of the product; import the tables from here.
"""

from ivr.models.accounts import (
    Account,
    AccountFields,
    AccountPhone,
    AccountPhoneStaging,
    AccountStaging,
    ImportRun,
    IngestedFile,
    SyncRun,
)
from ivr.models.base import Base, EnumText, UTCDateTime, utcnow
from ivr.models.calls import CallEvent, CallSession, GuardEvent, VerificationFailure
from ivr.models.money import (
    AchAuthorization,
    Arrangement,
    ArrangementInstalment,
    OutboxEntry,
    Payment,
    PostingAttempt,
)
from ivr.models.ops import (
    ConnectorState,
    JobLock,
    OpsLoginAttempt,
    OpsUser,
    PromptSnapshot,
    PromptVersion,
)
from ivr.models.returns import ChangeNotice, ReturnsFile, Reversal

__all__ = [
    "Account",
    "AccountFields",
    "AccountPhone",
    "AccountPhoneStaging",
    "AccountStaging",
    "AchAuthorization",
    "Arrangement",
    "ArrangementInstalment",
    "Base",
    "CallEvent",
    "CallSession",
    "ChangeNotice",
    "ConnectorState",
    "EnumText",
    "GuardEvent",
    "ImportRun",
    "IngestedFile",
    "JobLock",
    "OpsLoginAttempt",
    "OpsUser",
    "OutboxEntry",
    "Payment",
    "PostingAttempt",
    "PromptSnapshot",
    "PromptVersion",
    "ReturnsFile",
    "Reversal",
    "SyncRun",
    "UTCDateTime",
    "VerificationFailure",
    "utcnow",
]
