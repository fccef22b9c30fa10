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


@prompts.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def prompts_export(directory: Path) -> None:
    """Write the current prompts (the database's version every node speaks) to DIRECTORY."""
    from ivr.cli.base import load_app
    from ivr.ops.prompt_edit import write_atomic
    from ivr.prompts.catalog import CatalogError, PromptStore

    store: PromptStore = load_app().extensions["ivr.prompts.catalog"]
    try:
        catalog = store.refresh()
    except CatalogError as exc:
        raise click.ClickException(f"no prompts to export: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(catalog.sources.items()):
        write_atomic(directory / name, text)
    click.echo(f"prompts version {catalog.version} written to {directory} "
               f"({len(catalog.sources)} files; audio stays in each node's prompts folder)")


@prompts.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def prompts_import(directory: Path) -> None:
    """Make the prompts in DIRECTORY the current version on every node, if they pass
    `ivr prompts check`; a refused set changes nothing."""
    from ivr.cli.base import load_app
    from ivr.prompts import snapshots
    from ivr.prompts.catalog import check_catalog, load_catalog
    from ivr.prompts.ids import PROMPT_PARAMS
    from ivr.web.app import get_database

    problems = check_catalog(directory, PROMPT_PARAMS)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {directory}: nothing "
                                   "imported, the line keeps its current prompts")
    catalog = load_catalog(directory)
    database = get_database(load_app())
    with database.session() as db:
        snapshots.lock_prompts(db)
        kept = snapshots.current(db)
        if kept is not None and kept.version == catalog.version:
            click.echo(f"prompts version {catalog.version} is already current")
            return
        snapshots.publish(db, catalog.version, catalog.sources)
    click.echo(f"prompts version {catalog.version} imported: every node speaks it from "
               "its next call")
