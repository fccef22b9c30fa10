"""The ops console: server-rendered pages under /ops to tune prompts, follow calls and
payments, and see file runs. See docs/ops-console.md."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from ivr.config import AppConfig


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, for the console's pages only; the Secure flag is
    dropped only in testing."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) and not app.testing

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # The cookie is sent only under its path, so elsewhere (every Twilio webhook)
        # there is nothing to open: Flask's null session, rather than a signing serializer
        # built and a cookie looked for on each webhook (4% of a webhook's own time).
        path = str(app.config["SESSION_COOKIE_PATH"]).rstrip("/")
        if request.path != path and not request.path.startswith(path + "/"):
            return None
        return super().open_session(app, request)


def init_ops(app: Flask, settings: AppConfig) -> None:
    """Session and CSRF settings, the client address from trusted proxies, and the /ops
    routes."""
    # The view modules add their routes to the blueprint as they are imported.
    import ivr.ops.views_agent
    import ivr.ops.views_arrangements
    import ivr.ops.views_auth
    import ivr.ops.views_calls
    import ivr.ops.views_money
    import ivr.ops.views_prompts
    import ivr.ops.views_returns
    import ivr.ops.views_security  # noqa: F401
    from ivr.ops.base import SESSION_HOURS, RowIdConverter, bp, csrf

    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="ivr_ops",
        SESSION_COOKIE_PATH="/ops",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Plain http only when the public base URL says so (a local trial); see the guide.
        SESSION_COOKIE_SECURE=not settings.public_base_url.startswith("http://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        # CSRF is checked by the ops blueprint itself: Twilio's webhooks are signed instead
        # and must never meet a CSRF check.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
    )
    app.session_interface = _SessionInterface()
    if settings.trusted_proxies:
        # Only then is X-Forwarded-For believed, and only the entries those proxies added:
        # anyone can send the header, and the sign-in limit counts per client address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    csrf.init_app(app)
    app.url_map.converters["row_id"] = RowIdConverter  # before the routes that use it
    app.register_blueprint(bp)
