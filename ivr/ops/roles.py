"""Who may open which console page or take which action: every route's rule, in one table.

A route missing from RULES is refused to everyone (403), and tests/test_ops_roles.py
enumerates the URL map so that no route is left out. See docs/ops-console.md#roles.
"""

from __future__ import annotations

from ivr.statuses import UserRole

ADMIN, AGENT, VIEWER = UserRole.ADMIN, UserRole.AGENT, UserRole.VIEWER
# Access levels: sets of roles.
ANYONE = frozenset(UserRole)  # signed in, whatever the role
READ = frozenset({ADMIN, VIEWER})  # the console's history and reports, read only
TAKE_PAYMENTS = frozenset({ADMIN, AGENT})  # calls in progress, verifying, taking payments
CHANGE = frozenset({ADMIN})  # prompts, retries, settings

# Reached without signing in (the sign-in page, the stylesheet and the agent page's script).
PUBLIC = frozenset({"ops.login", "ops.static"})

RULES: dict[str, frozenset[UserRole]] = {
    "ops.logout": ANYONE,
    "ops.home": ANYONE,
    "ops.calls": READ,
    "ops.call": READ,
    "ops.payments": READ,
    "ops.payment": READ,
    "ops.arrangements": READ,
    "ops.reconcile": READ,
    "ops.files": READ,
    "ops.sync_run": READ,
    "ops.import_run": READ,
    "ops.security": READ,
    "ops.prompts": READ,
    "ops.prompt": READ,
    "ops.prompt_history": READ,
    "ops.preview_audio": READ,
    "ops.audit": READ,
    "ops.returns": READ,
    "ops.prompt_save": CHANGE,
    "ops.prompt_preview": CHANGE,
    "ops.prompt_revert": CHANGE,
    "ops.outbox_retry": CHANGE,
    "ops.reverse_payment": CHANGE,
    "ops.agent_calls": TAKE_PAYMENTS,
    "ops.agent_call": TAKE_PAYMENTS,
    "ops.agent_verify": TAKE_PAYMENTS,
    "ops.agent_prepare": TAKE_PAYMENTS,
    "ops.agent_start": TAKE_PAYMENTS,
    "ops.agent_capture": TAKE_PAYMENTS,
    "ops.agent_complete": TAKE_PAYMENTS,
    "ops.agent_cancel": TAKE_PAYMENTS,
    "ops.agent_receipt": TAKE_PAYMENTS,
    "ops.agent_progress": TAKE_PAYMENTS,
}


def role_of(raw: str | None) -> UserRole | None:
    """The role stored for a user, or None when the word is not a role (then: no access)."""
    try:
        return UserRole(raw or "")
    except ValueError:
        return None


def may(role: UserRole | None, endpoint: str | None) -> bool:
    """Whether ``role`` may use ``endpoint`` (an unknown endpoint: nobody may)."""
    if endpoint in PUBLIC:
        return True
    allowed = RULES.get(endpoint or "")
    return role is not None and allowed is not None and role in allowed
