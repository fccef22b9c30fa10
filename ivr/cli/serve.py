"""`ivr serve`: the webhook app under gunicorn, after the checks that keep a broken line off."""

from __future__ import annotations

import click

from ivr.cli.base import load_app, require_current_schema, require_shared_keys
from ivr.web.app import get_config


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Request threads per worker.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the webhook app with gunicorn."""
    from ivr.web.server import run_gunicorn

    # With the served app's database timeouts: a database that does not answer must not
    # hang the start either.
    app = load_app(serve_threads=threads)
    config = get_config(app)
    require_shared_keys(app)
    if not config.signing_keys.configured and not config.allow_unsigned:
        raise click.ClickException(
            "IVR_TWILIO_AUTH_TOKEN (or IVR_TWILIO_WEBHOOK_KEYS) is required to serve calls "
            "(or IVR_ALLOW_UNSIGNED=1 for a local demo only)")
    if config.allow_unsigned:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise click.ClickException(
                f"IVR_ALLOW_UNSIGNED=1 accepts forged webhooks: serve it on 127.0.0.1 only, "
                f"not {host}")
        click.secho("WARNING: IVR_ALLOW_UNSIGNED=1 -- webhooks are NOT authenticated. "
                    "Local demos only.", fg="red", bold=True, err=True)
    if not config.public_base_url.startswith("https://"):
        # <Pay> needs absolute https action URLs, and Twilio signs the public URL.
        click.secho("WARNING: IVR_PUBLIC_BASE_URL is not an https:// URL: <Pay> will not work "
                    "with real calls, and signatures behind a proxy will not validate.",
                    fg="yellow", err=True)
    require_current_schema(app)  # after the settings' own checks
    from ivr.prompts.catalog import CatalogError, PromptStore

    store: PromptStore = app.extensions["ivr.prompts.catalog"]
    try:
        catalog = store.get()  # fail now, not on the first caller
    except CatalogError as exc:
        raise click.ClickException(f"prompts in {config.prompts_dir}: {exc}") from None
    store.wait_until_kept(timeout=5)  # the first good version is shared before serving
    if store.problems:
        click.secho(f"WARNING: prompts in {config.prompts_dir} are broken; serving the last good "
                    f"version {catalog.version} until they are fixed (ivr prompts check):\n  "
                    + "\n  ".join(store.problems), fg="red", bold=True, err=True)
    run_gunicorn(host, port, workers, threads, config.access_log)
