"""`ivr prompts`: the prompt catalog."""

from __future__ import annotations

from pathlib import Path

import click

from ivr.config import ConfigError


@click.group()
def prompts() -> None:
    """The prompt catalog."""


@prompts.command("check")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Prompts directory (default: IVR_PROMPTS_DIR or the repo's prompts/).")
def prompts_check(directory: Path | None) -> None:
    """Validate wording and settings: ids, placeholders, keys, SSML, audio files.

    Settings worth a second look (a card fee unlike the bank fee) are warnings: printed, and
    the check still passes."""
    from ivr.config import load_config
    from ivr.prompts.catalog import check_catalog, load_catalog
    from ivr.prompts.ids import PROMPT_PARAMS
    from ivr.prompts.warnings import settings_warnings

    try:
        target = directory or load_config().prompts_dir
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    problems = check_catalog(target, PROMPT_PARAMS)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {target}")
    for warning in settings_warnings(load_catalog(target).settings):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"prompts OK: {target}")
