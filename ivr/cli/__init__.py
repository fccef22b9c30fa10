"""The `ivr` command: database, accounts, payments, prompts, serving and simulated calls.

One module per concern; each defines its commands, and ``COMMANDS`` below is the one list
that puts them on ``ivr``.
"""

from __future__ import annotations

import click

from ivr.cli import (
    accounts,
    arrangements,
    calls,
    database,
    money,
    ops,
    prompts,
    returns,
    serve,
    sync,
)


@click.group()
def main() -> None:
    """Pay-by-phone line for billers."""


COMMANDS: tuple[click.Command, ...] = (
    database.db,
    accounts.accounts,
    money.payments,
    arrangements.arrangements,
    prompts.prompts,
    serve.serve,
    calls.call,
    calls.demo,
    money.worker,
    money.outbox,
    money.reconcile,
    returns.returns,
    sync.sync,
    ops.ops,
)
for _command in COMMANDS:
    main.add_command(_command)
