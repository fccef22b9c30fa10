"""The states of a call (docs/call-flow.md), one module per step, and the one list of them.

``STATES`` is the registry: the machine routes keys with it, and metrics, the console, the
prompt check and the generated table in docs/call-flow.md read it. A new state is declared in
its step's module (see ``ivr.calls.menu``) and listed here, in the order a paying caller
meets it.
"""

from __future__ import annotations

from ivr.calls.menu import ENDED, PAYING, State
from ivr.calls.states.after_pay import PAY_FAILED, RECEIPT
from ivr.calls.states.amount import AMOUNT_CONFIRM, AMOUNT_ENTRY, AMOUNT_MENU, start_payment
from ivr.calls.states.arrange import (
    ARRANGE_CONFIRM,
    ARRANGE_DONE,
    ARRANGE_MENU,
    DOWN_PAYMENT_FAILED,
)
from ivr.calls.states.checkout import (
    ACH_AUTHORIZE,
    BANK_TYPE,
    FEE_ACCEPT,
    FINAL_CONFIRM,
    METHOD,
    pay_limited,
    refuse_payment,
)
from ivr.calls.states.identify import (
    ACCOUNT_ENTRY,
    CONFIRM_ACCOUNT,
    LANGUAGE,
    identify,
    language_on_file,
)
from ivr.calls.states.main_menu import MAIN_MENU
from ivr.calls.states.paid_today import PAID_TODAY
from ivr.calls.states.pick_account import PICK_ACCOUNT
from ivr.calls.states.verify import VERIFY, locked

__all__ = [
    "ENDED",
    "PAYING",
    "STATES",
    "State",
    "identify",
    "language_on_file",
    "locked",
    "pay_limited",
    "refuse_payment",
    "start_payment",
]

STATES: dict[str, State] = {
    s.name: s
    for s in (
        LANGUAGE, CONFIRM_ACCOUNT,
        PICK_ACCOUNT,  # several accounts on the calling number
        ACCOUNT_ENTRY, VERIFY, MAIN_MENU,
        PAID_TODAY,
        AMOUNT_MENU, AMOUNT_ENTRY,
        AMOUNT_CONFIRM, METHOD, BANK_TYPE, FEE_ACCEPT, ACH_AUTHORIZE, FINAL_CONFIRM, RECEIPT,
        PAY_FAILED,
        # More time to pay (main menu 4): the offers, the terms, the numbers.
        ARRANGE_MENU, ARRANGE_CONFIRM, ARRANGE_DONE, DOWN_PAYMENT_FAILED,
    )
}
