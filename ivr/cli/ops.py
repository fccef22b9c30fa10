"""`ivr ops`: ops console users."""

from __future__ import annotations

import sys

import click

from ivr.cli.base import load_app
from ivr.statuses import UserRole
from ivr.web.app import get_database


@click.group()
def ops() -> None:
    """Ops console users (see docs/ops-console.md)."""


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        # One line: the password, without its line ending (scripts: printf '%s\n' "$pw" | ...).
        return sys.stdin.readline().rstrip("\r\n")
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@ops.command("add-user")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--reset", is_flag=True,
              help="Set a new password for an existing user and enable them again.")
@click.option("--role", type=click.Choice([role.value for role in UserRole]), default=None,
              help="What the user may do (docs/ops-console.md#roles); a new user: admin.")
def ops_add_user(username: str, password_stdin: bool, reset: bool, role: str | None) -> None:
    """Create a console user; the password is asked twice (or read with --password-stdin)."""
    from ivr.models import utcnow
    from ivr.ops.auth import UserError, add_user

    app = load_app()
    password = _new_password(password_stdin)
    try:
        with get_database(app).session() as session:
            user = add_user(session, username, password, utcnow(), reset=reset, role=role)
            name, role = user.username, user.role
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'password set for' if reset else 'created'} ops user {name!r} ({role})")


@ops.command("disable-user")
@click.argument("username")
def ops_disable_user(username: str) -> None:
    """Stop a user from signing in (their open sessions end at their next click)."""
    from ivr.ops.auth import disable_user

    app = load_app()
    with get_database(app).session() as session:
        if not disable_user(session, username):
            raise click.ClickException(f"no ops user {username!r}")
    click.echo(f"disabled ops user {username!r}")
