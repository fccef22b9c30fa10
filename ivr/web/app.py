"""Pay-by-phone line for billers: a Flask app driven by Twilio webhooks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy.engine import make_url

from ivr.config import AppConfig, ConfigError, load_config
from ivr.db import Database, WebTimeouts
from ivr.instance import default_database_url, instance_pin_key, instance_secret_key
from ivr.prompts.catalog import PromptStore
from ivr.prompts.ids import PROMPT_PARAMS
from ivr.web.deadline import DEFAULT_SLOTS, Deadlines, work_slots

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: configuration, database, prompt catalog and routes.

    ``config`` overrides ``IVR_*`` variables by field name (e.g. ``{"database_url": ...}``).
    """
    from ivr import logs

    app = Flask(__name__, instance_relative_config=True)
    settings = load_config(config)
    defaults: dict[str, Any] = {}
    if not settings.database_url:
        defaults["database_url"] = default_database_url(app.instance_path)
    if not settings.pin_key:
        defaults["pin_key"] = instance_pin_key(Path(app.instance_path))
    if not settings.secret_key:
        defaults["secret_key"] = instance_secret_key(Path(app.instance_path))
    if defaults:
        settings = load_config({**(config or {}), **defaults})
    # Which keys this machine made for itself: fine on one machine, wrong for several
    # (see shared_keys_refusal).
    app.extensions["ivr.generated_keys"] = tuple(
        var for name, var in (("pin_key", "IVR_PIN_KEY"), ("secret_key", "IVR_SECRET_KEY"))
        if name in defaults)
    logs.configure(settings.log_level)
    app.extensions["ivr.config"] = settings
    app.extensions["ivr.signing_keys"] = settings.signing_keys
    threads = settings.serve_threads
    web = WebTimeouts.within(settings.webhook_deadline_ms, threads) if threads else None
    app.extensions["ivr.db"] = Database(settings.database_url, web=web)
    app.extensions["ivr.deadlines"] = Deadlines(settings.webhook_deadline_ms,
                                                work_slots(threads) if threads else DEFAULT_SLOTS)
    from ivr.prompts.snapshots import PromptSnapshots

    app.extensions["ivr.prompts.catalog"] = PromptStore(
        settings.prompts_dir, PROMPT_PARAMS, min_interval=0.2,
        snapshots=PromptSnapshots(app.extensions["ivr.db"]))
    if settings.allow_unsigned:
        log.warning("IVR_ALLOW_UNSIGNED=1: webhooks are accepted WITHOUT Twilio signatures. "
                    "Use this only for local demos, never on a public address.")

    from ivr.web.health import bp as web_bp
    from ivr.web.voice import bp as voice_bp

    if settings.accounting != "none":
        from connectors.accounting.registry import build_connector
        from ivr.money.accounting import Accounting
        from ivr.money.connector_state import DatabaseStateStore

        try:
            connector = build_connector(
                settings.accounting, settings.accounting_settings,
                DatabaseStateStore(app.extensions["ivr.db"], settings.accounting))
        except ValueError as exc:
            raise ConfigError(f"IVR_ACCOUNTING={settings.accounting}: {exc}") from None
        if connector is not None:
            app.extensions["ivr.money.accounting"] = Accounting(connector, app.extensions["ivr.db"],
                                                          settings)
    app.register_blueprint(voice_bp)
    app.register_blueprint(web_bp)
    from ivr.ops import init_ops

    init_ops(app, settings)
    return app


def shared_keys_refusal(app: Flask, needed: tuple[str, ...] | None = None) -> str:
    """Why this app must not serve or post ('' when it may): on a server database several
    machines share the accounts and the console, so a key one machine made for itself
    would fail every PIN hashed elsewhere and every console session signed elsewhere.
    ``needed`` limits the check to the keys a command uses (an import: the PIN key)."""
    generated: tuple[str, ...] = tuple(
        key for key in app.extensions.get("ivr.generated_keys", ())
        if needed is None or key in needed)
    if not generated or make_url(get_config(app).database_url).get_backend_name() == "sqlite":
        return ""
    return (f"{' and '.join(generated)} must be set on a server database (IVR_DATABASE_URL): "
            "every machine serving the line or posting payments needs the same keys, or PINs "
            "and console sign-ins made on one fail on another. Generate each once (e.g. "
            "`python3 -c 'import secrets; print(secrets.token_hex(32))'`) and give both "
            "IVR_PIN_KEY and IVR_SECRET_KEY to every machine; see docs/deployment.md.")


def get_config(app: Flask) -> AppConfig:
    """The app's validated configuration."""
    config: AppConfig = app.extensions["ivr.config"]
    return config


def get_database(app: Flask) -> Database:
    """The app's database."""
    db: Database = app.extensions["ivr.db"]
    return db


def get_deadlines(app: Flask) -> Deadlines:
    """Runs a request's database work within the webhook deadline."""
    deadlines: Deadlines = app.extensions["ivr.deadlines"]
    return deadlines
